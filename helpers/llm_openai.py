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
from openai.types.chat import ChatCompletion

from .llm import PermanentError, TransientError, api_key_from_env
from .llm_types import ChatResult, Message
from .params import ParameterError


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


class OpenAIBackend:
    kind = "openai"

    def __init__(self, model: str, base_url: str, api_key_env: str, role: str = "TEACHER",
                 timeout_s: float = 600.0, pool_shards: int = 4) -> None:
        self.model, self.base_url, self.api_key_env, self.role = model, base_url.rstrip("/"), api_key_env, role
        self.timeout_s = timeout_s
        self.pool_shards = pool_shards
        self._turn = 0
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[openai.AsyncOpenAI]] = (
            weakref.WeakKeyDictionary()
        )

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": self.base_url, "api_key_env": self.api_key_env}

    def _client(self) -> openai.AsyncOpenAI:
        """One of a few clients per event loop, used round-robin.

        httpcore scans its whole connection pool for every request, so one pool of 64+ busy connections spends more
        CPU on bookkeeping than on the calls; several smaller pools keep that cost flat as concurrency grows.
        """
        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None:
            key = api_key_from_env(self.api_key_env, self.role)
            clients = [openai.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.timeout_s)
                       for _ in range(self.pool_shards)]
            self._clients[loop] = clients
        self._turn = (self._turn + 1) % len(clients)
        return clients[self._turn]

    async def release_loop(self) -> None:
        loop = asyncio.get_running_loop()
        for client in self._clients.pop(loop, None) or []:
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
            # `post` with the typed response skips the SDK's recursive request transformation, which otherwise
            # costs more CPU than the HTTP round trip when many long conversations are in flight.
            resp = await self._client().post(
                "/chat/completions", body={"model": self.model, "messages": messages, **kwargs},
                cast_to=ChatCompletion,
            )
        except openai.RateLimitError as exc:
            raise TransientError(f"HTTP 429 rate limited", retry_after=_retry_after(exc)) from None
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
        if not resp.choices:
            raise TransientError("reply had no choices")
        choice = resp.choices[0]
        text = choice.message.content or ""
        if not text.strip():
            raise TransientError("empty reply")
        top = None
        if sampling.get("top_logprobs") and choice.logprobs and choice.logprobs.content:
            top = [{alt.token: alt.logprob for alt in tok.top_logprobs} for tok in choice.logprobs.content[:5]]
        usage = resp.usage
        return ChatResult(
            text=text, finish_reason=choice.finish_reason,
            input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            output_tokens=getattr(usage, "completion_tokens", 0) or 0,
            model=resp.model or self.model, top_logprobs=top,
        )
