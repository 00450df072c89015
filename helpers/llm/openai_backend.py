"""Backend for any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...).

Uses the official `openai` client with its own retries switched off: `ChatClient` owns retries so that every
backend behaves the same and failures are counted once.
"""
from __future__ import annotations

import asyncio
import email.utils
import time
import weakref
from typing import Any

import openai

from .errors import PermanentError, TransientError, api_key_from_env
from .types import ChatResult, Message
from ..params import ParameterError, redact_url


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or from the `retry-after-ms` variant."""
    headers = getattr(exc.response, "headers", None) or {}
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _http_client(timeout_s: float):
    """The SDK's aiohttp transport: several times less CPU per request than its default httpx transport, which
    matters when hundreds of requests per second are in flight from one process."""
    try:
        return openai.DefaultAioHttpClient(timeout=timeout_s)
    except RuntimeError:  # the aiohttp extra is missing: fall back to the default transport
        return None


class OpenAIBackend:
    kind = "openai"

    def __init__(self, model: str, base_url: str, api_key_env: str, role: str = "TEACHER",
                 timeout_s: float = 600.0) -> None:
        self.model, self.base_url, self.api_key_env, self.role = model, base_url.rstrip("/"), api_key_env, role
        self.timeout_s = timeout_s
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": redact_url(self.base_url),
                "api_key_env": self.api_key_env}

    def _client(self) -> openai.AsyncOpenAI:
        """One SDK client per event loop (its connection pool is bound to the loop that created it)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            key = api_key_from_env(self.api_key_env, self.role)
            client = openai.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.timeout_s,
                                        http_client=_http_client(self.timeout_s))
            self._clients[loop] = client
        return client

    async def release_loop(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def check(self) -> None:
        """Reach the endpoint and confirm it serves the model, before any work is queued."""
        key = api_key_from_env(self.api_key_env, self.role)
        client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=1, timeout=15)
        try:
            served = [m.id for m in client.models.list()]
        except openai.AuthenticationError as exc:
            raise ParameterError(f"{self.role}_API_KEY_ENV", f"the endpoint rejected the key in ${self.api_key_env} ({exc.status_code})",
                                 "export a valid key in that variable") from None
        except openai.NotFoundError:
            return  # some servers do not list models; the first call will tell
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ParameterError(f"{self.role}_BASE_URL", f"cannot reach {self.base_url} ({exc.__class__.__name__})",
                                 "start the server or correct the URL (it usually ends in /v1)") from None
        except openai.APIStatusError as exc:
            raise ParameterError(f"{self.role}_BASE_URL", f"{self.base_url}/models answered HTTP {exc.status_code}",
                                 "check that this is an OpenAI-compatible endpoint (it usually ends in /v1)") from None
        finally:
            client.close()
        if served and self.model not in served:
            shown = ", ".join(sorted(served)[:15]) + (" ..." if len(served) > 15 else "")
            raise ParameterError(f"{self.role}_MODEL", f"{self.model!r} is not served by {self.base_url}",
                                 f"use one of: {shown} (prefer a dated snapshot id)")

    async def complete(self, messages: list[Message], sampling: dict[str, Any]) -> ChatResult:
        kwargs: dict[str, Any] = {k: v for k, v in sampling.items() if k in ("temperature", "top_p", "max_tokens", "stop", "seed")}
        if sampling.get("top_logprobs"):
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = int(sampling["top_logprobs"])
        try:
            # `post` with a plain-JSON result skips the SDK's recursive request transformation and typed response
            # construction, which otherwise cost more CPU than the HTTP round trip when hundreds of requests per
            # second are in flight; the wire format is the same chat-completions JSON.
            resp = await self._client().post(
                "/chat/completions", body={"model": self.model, "messages": messages, **kwargs}, cast_to=object,
            )
        except openai.RateLimitError as exc:
            raise TransientError("HTTP 429 rate limited", retry_after=_retry_after(exc)) from None
        except openai.InternalServerError as exc:
            raise TransientError(f"HTTP {exc.status_code} server error", retry_after=_retry_after(exc)) from None
        except openai.APITimeoutError:
            raise TransientError("request timed out") from None
        except openai.APIConnectionError as exc:
            raise TransientError(f"connection failed: {exc.__class__.__name__}") from None
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409, 425):
                raise TransientError(f"HTTP {exc.status_code}", retry_after=_retry_after(exc)) from None
            raise PermanentError(f"HTTP {exc.status_code}: {str(exc)[:300]}") from None
        if not isinstance(resp, dict) or not resp.get("choices"):
            raise TransientError("reply had no choices")
        choice = resp["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        if not text.strip():
            raise TransientError("empty reply")
        top = None
        content_logprobs = (choice.get("logprobs") or {}).get("content") or []
        if sampling.get("top_logprobs") and content_logprobs:
            top = [{alt["token"]: alt["logprob"] for alt in tok.get("top_logprobs", [])} for tok in content_logprobs[:5]]
        usage = resp.get("usage") or {}
        return ChatResult(
            text=text, finish_reason=choice.get("finish_reason"),
            input_tokens=int(usage.get("prompt_tokens") or 0), output_tokens=int(usage.get("completion_tokens") or 0),
            model=resp.get("model") or self.model, top_logprobs=top,
        )
