"""Backend for any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ...).

Chat completions are plain JSON POSTs on one aiohttp session per event loop: the official `openai` client spends
about 0.4 ms of CPU per request building its request objects (3.5x the POST itself), which becomes the bottleneck
when hundreds of requests per second are in flight from one process. The official client is still what checks the
endpoint before a run (`check`) and what the Batch API route uses (files and batches). Retries are not done here:
`ChatClient` owns them so that every backend behaves the same and failures are counted once.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
import urllib.parse
import urllib.request
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import openai

from .errors import PermanentError, TransientError, api_key_from_env, key_values, redact_secrets
from .generation import row_seed
from .types import ChatResult, Message
from ..params import ParameterError, redact_url


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or from the `retry-after-ms` variant."""
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


def _shown(served: list[str]) -> str:
    return ", ".join(sorted(served)[:15]) + (" ..." if len(served) > 15 else "")


def _http_client(timeout_s: float):
    """The SDK's aiohttp transport (for the Batch API's files and batches calls); None = its default one."""
    try:
        return openai.DefaultAioHttpClient(timeout=timeout_s)
    except RuntimeError:  # the aiohttp extra is missing: fall back to the default transport
        return None


def env_proxy(url: str) -> str | None:
    """The proxy that HTTPS_PROXY / HTTP_PROXY name for `url`, unless NO_PROXY exempts its host, as the official
    client honours them. Looked up once per backend: aiohttp's `trust_env` looks it up (and ~/.netrc) in a thread
    for every request, which costs more than the request itself at hundreds per second."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("instruct-skillmix-kit")
    except Exception:
        return "0"


class OpenAIBackend:
    kind = "openai"

    def __init__(self, model: str, base_url: str, api_key_env: str, role: str = "TEACHER",
                 timeout_s: float = 600.0) -> None:
        self.model, self.base_url, self.api_key_env, self.role = model, base_url.rstrip("/"), api_key_env, role
        self.timeout_s = timeout_s
        # Called with the headers of every reply (a rate limiter reads x-ratelimit-*); None = not read.
        self.header_observer: Callable[[Mapping[str, str]], None] | None = None
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
            weakref.WeakKeyDictionary()
        )
        self._proxy = env_proxy(self.base_url)
        self.send_seed = True  # False once the endpoint refused a `seed` (see complete)

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

    def _session(self) -> aiohttp.ClientSession:
        """One HTTP session per event loop for chat completions; the key is read once, when it is made, and lives
        only in the session's default headers (never in a log, a cache key or the manifest)."""
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            key = api_key_from_env(self.api_key_env, self.role)
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                       "User-Agent": f"instruct-skillmix/{_version()}"}
            for variable, header in (("OPENAI_ORG_ID", "OpenAI-Organization"), ("OPENAI_PROJECT_ID", "OpenAI-Project")):
                if os.environ.get(variable):  # as the official client sends them, for keys used across projects
                    headers[header] = os.environ[variable]
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # ChatClient's semaphore bounds the requests in flight
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers=headers,
            )
            self._sessions[loop] = session
        return session

    async def release_loop(self) -> None:
        loop = asyncio.get_running_loop()
        client, session = self._clients.pop(loop, None), self._sessions.pop(loop, None)
        if client is not None:
            await client.close()
        if session is not None:
            await session.close()

    def check(self) -> None:
        """Reach the endpoint and confirm it serves the model, before any work is queued.

        `/models` is asked first. Real servers do not always answer it well (a 500 when they try to list a hub
        offline, an HTML page, a list without the model's name as requested), so when it fails or does not list the
        model, one chat completion of one token decides: if it works the run goes on (with a warning when the model
        is not listed); if not, its error names the parameter to fix.
        """
        key = api_key_from_env(self.api_key_env, self.role)
        client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=1, timeout=15)
        try:
            served, problem = self._listed_models(client)
            if problem is None and (not served or self.model in served):
                return
            self._probe(client, served)
            if problem:
                warnings.warn(f"{self.base_url}/models {problem}; a one-token chat completion with {self.model!r} "
                              "worked, so the run goes on", stacklevel=3)
            else:
                warnings.warn(f"{self.model!r} is not in the list of {self.base_url}/models ({_shown(served)}), but a "
                              "one-token chat completion with it worked, so the run goes on", stacklevel=3)
        finally:
            client.close()

    def _listed_models(self, client: openai.OpenAI) -> tuple[list[str], str | None]:
        """The ids `/models` lists, or why it could not tell; errors no probe can fix are raised here."""
        try:
            return [m.id for m in client.models.list()], None
        except openai.AuthenticationError as exc:
            raise self._auth_error(exc.status_code) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ParameterError(f"{self.role}_BASE_URL", f"cannot reach {self.base_url} ({exc.__class__.__name__})",
                                 "start the server or correct the URL (it usually ends in /v1)") from None
        except openai.APIStatusError as exc:
            return [], f"answered HTTP {exc.status_code}"
        except Exception as exc:  # HTML or other non-JSON pages make the SDK fail in many ways (AttributeError, ...)
            return [], f"did not answer a model list ({exc.__class__.__name__})"

    def _probe(self, client: openai.OpenAI, served: list[str]) -> None:
        try:
            reply = client.with_options(timeout=self.timeout_s).chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "Say OK."}], max_tokens=1)
            if not getattr(reply, "choices", None):  # a page the SDK hands back as text (HTML with status 200)
                raise TypeError(f"the reply was {type(reply).__name__}, not a chat completion")
        except openai.AuthenticationError as exc:
            raise self._auth_error(exc.status_code) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise ParameterError(f"{self.role}_BASE_URL", f"cannot reach {self.base_url}/chat/completions "
                                 f"({exc.__class__.__name__})", "start the server or correct the URL") from None
        except openai.NotFoundError:
            listed = f"use one of: {_shown(served)} (prefer a dated snapshot id)" if served else \
                "use the model id the server was started with"
            raise ParameterError(f"{self.role}_MODEL", f"{self.model!r} is not served by {self.base_url}",
                                 listed) from None
        except openai.APIStatusError as exc:
            raise ParameterError(f"{self.role}_BASE_URL", f"a one-token chat completion at {self.base_url} answered "
                                 f"HTTP {exc.status_code}", "check that this is an OpenAI-compatible endpoint "
                                 f"(it usually ends in /v1) and that it serves {self.model!r}") from None
        except Exception as exc:  # a reply the SDK cannot read (HTML, ...): not an OpenAI-compatible endpoint
            raise ParameterError(f"{self.role}_BASE_URL", f"{self.base_url} did not answer a chat completion "
                                 f"({exc.__class__.__name__})", "check that this is an OpenAI-compatible endpoint "
                                 "(it usually ends in /v1)") from None

    def _auth_error(self, status: int) -> ParameterError:
        if not self.api_key_env:
            return ParameterError(f"{self.role}_API_KEY_ENV", f"{self.base_url} asks for a key (HTTP {status})",
                                  f"export the key in a variable and set {self.role}_API_KEY_ENV to its name")
        return ParameterError(f"{self.role}_API_KEY_ENV", f"{self.base_url} rejected the key in "
                              f"${self.api_key_env} (HTTP {status})", "export a valid key in that variable")

    def request_body(self, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> dict[str, Any]:
        """The chat-completions JSON body for one request (also what a Batch API line carries). It carries the
        request's own seed (`request_seed`: the messages, SEED's sampling seed and the salt of a repeat or retry),
        so a server that honours seeds (vLLM, OpenAI on a best-effort basis) gives the same sample for the same
        request on every run, and a new one for each retry."""
        kwargs: dict[str, Any] = {k: v for k, v in sampling.items() if k in ("temperature", "top_p", "max_tokens", "stop")}
        if self.send_seed:
            kwargs["seed"] = request_seed(messages, sampling.get("seed"), salt)
        if sampling.get("top_logprobs"):
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = int(sampling["top_logprobs"])
        return {"model": self.model, "messages": messages, **kwargs}

    async def complete(self, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> ChatResult:
        while True:
            seeded = self.send_seed
            body = json.dumps(self.request_body(messages, sampling, salt), ensure_ascii=False).encode("utf-8")
            status, headers, payload = await self._post(body)
            if not (status == 400 and seeded and b"seed" in payload.lower()):
                break
            self.send_seed = False  # an endpoint that rejects the parameter: asked again without it, once
            warnings.warn(f"{self.base_url} refused the request's `seed` ({_error_text(payload)[:120]}); requests "
                          "go without it, so its samples are not reproducible across runs", stacklevel=2)
        if self.header_observer is not None:
            self.header_observer(headers)  # success or 429 alike: the limiter adapts to x-ratelimit-*
        if status >= 400:
            raise self._status_error(status, headers, payload)
        try:
            resp = json.loads(payload)
        except ValueError:
            shown = self.redact(payload.decode("utf-8", "replace"))[:80]  # redacted before it is cut
            raise TransientError(f"reply was not JSON ({shown!r})") from None
        return result_from_reply(resp, sampling, self.model)

    async def _post(self, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        try:
            async with self._session().post(f"{self.base_url}/chat/completions", data=body,
                                            proxy=self._proxy) as reply:
                return reply.status, reply.headers, await reply.read()
        except asyncio.TimeoutError:
            raise TransientError("request timed out") from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"connection failed: {exc.__class__.__name__}") from None

    def _status_error(self, status: int, headers: Mapping[str, str], payload: bytes) -> Exception:
        """The kit's error for an HTTP error status: which are worth retrying, and which stop the run."""
        if status in (401, 403):
            return self._auth_error(status)  # not a bad reply: no retry, no "failed to parse"
        if status == 429:
            return TransientError("HTTP 429 rate limited", retry_after=_retry_after(headers))
        if status >= 500:
            return TransientError(f"HTTP {status} server error", retry_after=_retry_after(headers))
        if status in (408, 409, 425):
            return TransientError(f"HTTP {status}", retry_after=_retry_after(headers))
        return PermanentError(f"HTTP {status}: {self.redact(_error_text(payload))[:300]}")

    def redact(self, text: str) -> str:
        """`text` without this backend's key or a Bearer token, before it is cut short (a cut key would no longer
        be recognised) and before it reaches an error message."""
        return redact_secrets(text, key_values(self.api_key_env))


def request_seed(messages: list[Message], seed: int | None, salt: str) -> int:
    """The seed sent with one request: a function of the request alone, as the in-process sampler's row seed, in
    the 31 bits every server accepts."""
    return row_seed(json.dumps(messages, sort_keys=True, ensure_ascii=False), seed, salt) % (1 << 31)


def _error_text(payload: bytes) -> str:
    """The `error.message` of an OpenAI-style error body, or the body itself."""
    text = payload.decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return text


def result_from_reply(resp: Any, sampling: dict[str, Any], model: str) -> ChatResult:
    """A chat-completions reply (live, or one line of a batch's output file) as a ChatResult."""
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
        model=resp.get("model") or model, top_logprobs=top,
    )
