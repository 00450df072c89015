"""One way to talk to any chat model: an OpenAI-compatible endpoint, the embedded local model, or a test function.

Every stage (teacher, judge, student answers) goes through `ChatClient`, which adds what each backend lacks:
bounded async concurrency, retries with exponential backoff and jitter (honouring Retry-After), a persistent cache
keyed by content (a re-run costs nothing; failures are never cached), accounting, and multi-turn conversations.
Blocking helpers (`chat_many`, `converse_many`) also work inside Jupyter, whose own event loop is already running.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import random
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar


from ..params import (DEFAULT_REQUEST_ATTEMPTS, DEFAULT_REQUEST_TIMEOUT, ParameterError, check_base_url,
                      check_env_var_name, check_int, check_request_limits)
from .accounting import Usage
from .cache import CallCache, cache_key
from .loopgc import frozen_heap
from .ratelimit import RateLimiter, estimate_tokens
from ..progress import progress_bar, refresh_interval_s
from .errors import PermanentError, TransientError, api_key_from_env, key_values, redact_secrets  # noqa: F401
from .device import best_device, resolve_dtype
from .local_backend import LocalBackend
from .models import EMBEDDED_TEACHER
from .openai_backend import OpenAIBackend
from .types import ChatResult, Conversation, Message, Turn, normalise_sampling
from .vllm_backend import VLLMBackend
from .vllm_engine import resolve_engine

T = TypeVar("T")


class Backend(Protocol):
    kind: str
    model: str

    async def complete(self, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> ChatResult:
        """One reply. `salt` marks a deliberate re-sample (a retry): in-process models seed from it; endpoints
        ignore it (it only keeps the cache entries apart)."""
        ...

    def check(self) -> None: ...

    async def release_loop(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def run_sync(make_coro: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also when an event loop is already running (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()  # type: ignore[arg-type]


# Sampled replies shorter than this may repeat by chance (a one-token verdict): they say nothing about the endpoint.
MIN_SAMPLE_CHARS = 32


class ChatClient:
    """Concurrency, retries, caching and accounting around a backend. See the module docstring."""

    def __init__(
        self,
        backend: Backend,
        *,
        stage: str = "",
        role: str = "",
        max_concurrency: int = 8,
        cache: CallCache | None = None,
        use_cache: bool = True,
        max_attempts: int = 5,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        show_progress: bool = True,
        limiter: RateLimiter | None = None,
        cache_scope: str | None = None,
    ) -> None:
        self.backend = backend
        self.limiter = limiter if limiter is not None and limiter.active else None
        self.active_tasks = 0  # coroutines of `agather` not yet finished (a batching backend waits for all)
        self.stage, self.role = stage, role
        self.max_concurrency = max_concurrency
        self.cache = (cache if cache is not None else CallCache()) if use_cache else None
        self.max_attempts = max_attempts
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.show_progress = show_progress
        self.usage = Usage(model=backend.model, batch=bool(getattr(backend, "batch", False)))
        # Cache entries are keyed by the endpoint too; endpoints known to serve the same weights may share one scope.
        self.cache_scope = cache_scope if cache_scope is not None else str(backend.describe().get("base_url") or "")
        self.waiting = 0  # requests sent and not yet answered: shown in the progress bar
        self.retries = 0
        self.last_error = ""
        # Sampled requests sent again with another salt (a retry, a repeat): reply hashes per request, to notice an
        # endpoint that ignores temperature and seed (`transformers serve`) and gives the same text every time.
        self._samples: dict[str, dict[str, str]] = {}
        self.identical_samples = 0
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def model(self) -> str:
        return self.backend.model

    def describe(self) -> dict[str, Any]:
        info = {**self.backend.describe(), "max_concurrency": self.max_concurrency}
        if self.limiter is not None:
            info.update(self.limiter.describe())
        return info

    def _redact(self, text: str) -> str:
        """Error messages and replies are stored (cache, progress files, the executed notebook): never with the
        backend's key or a `Bearer` token in them, even when a server echoes the Authorization header."""
        return redact_secrets(text, key_values(getattr(self.backend, "api_key_env", "")))

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        return sem

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.backoff_max_s, max(0.0, retry_after)) + random.uniform(0, self.backoff_base_s * 0.1)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": spread retries, never hammer at once

    # ------------------------------------------------------------------ single calls
    async def achat(self, messages: Sequence[Message], salt: str = "", **sampling: Any) -> ChatResult:
        sampling = normalise_sampling(sampling)
        messages = [dict(m) for m in messages]
        identity = getattr(self.backend, "cache_identity", self.model)  # a local folder adds its fingerprint
        key = (cache_key(self.backend.kind, identity, messages, sampling, salt, self.cache_scope)
               if self.cache is not None else "")
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.usage.add_call(hit.input_tokens, hit.output_tokens, cached=True)
                self._check_sampled(identity, messages, sampling, salt, hit, key)
                return hit
        start = time.perf_counter()
        error = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            retry_after = None
            async with self._semaphore():
                self.waiting += 1
                try:
                    result = await self._send(messages, sampling, salt)
                except ParameterError:
                    raise  # e.g. the endpoint rejected the key: every other call would fail the same way
                except TransientError as exc:
                    error, retry_after = self._redact(f"{exc.__class__.__name__}: {exc}"), exc.retry_after
                    self.last_error = self._redact(str(exc))
                except PermanentError as exc:
                    error = self._redact(f"PermanentError: {exc}")
                    self.usage.add_failure(retries=attempt - 1)
                    return ChatResult(error=error, model=self.model, attempts=attempt,
                                      latency_s=time.perf_counter() - start)
                except Exception as exc:  # a backend bug or an unexpected reply: record, never crash the batch
                    error = self._redact(f"{exc.__class__.__name__}: {exc}")
                    self.usage.add_failure(retries=attempt - 1)
                    return ChatResult(error=error, model=self.model, attempts=attempt,
                                      latency_s=time.perf_counter() - start)
                else:
                    result.text = self._redact(result.text)
                    result.attempts, result.latency_s = attempt, time.perf_counter() - start
                    result.model = result.model or self.model
                    if self.cache is not None:
                        self.cache.put(key, result)
                    self.usage.add_call(result.input_tokens, result.output_tokens, cached=False, retries=attempt - 1)
                    self._check_sampled(identity, messages, sampling, salt, result, key)
                    return result
                finally:
                    self.waiting -= 1
            if attempt < self.max_attempts:
                self.retries += 1
                await asyncio.sleep(self._backoff(attempt, retry_after))
        self.usage.add_failure(retries=self.max_attempts - 1)
        return ChatResult(error=f"gave up after {self.max_attempts} attempts: {error}", model=self.model,
                          attempts=self.max_attempts, latency_s=time.perf_counter() - start)

    def _check_sampled(self, identity: str, messages: list[Message], sampling: dict[str, Any], salt: str,
                       result: ChatResult, key: str = "") -> None:
        """Warn (once per client) when a sampled request asked again with another salt comes back word for word
        as before: the endpoint ignores temperature and seed, so retries and repeats are no new samples. `key`: the
        call's cache key, which is the request's own when it has no salt."""
        temperature = float(sampling.get("temperature", 1.0) or 0.0)
        if temperature <= 0 or len(result.text) < MIN_SAMPLE_CHARS:
            return
        request = key if key and not salt else cache_key(self.backend.kind, identity, messages, sampling, "",
                                                         self.cache_scope)
        replies = self._samples.setdefault(request, {})
        digest = hashlib.sha256(result.text.encode("utf-8")).hexdigest()
        first_salt = replies.setdefault(digest, salt)
        if first_salt == salt:
            return
        self.identical_samples += 1
        if self.identical_samples == 1:
            warnings.warn(
                f"{self.role or 'model'} {self.model!r}: a request sampled at temperature {temperature:g} and sent "
                f"again as a new sample (salt {salt!r}) came back word for word as before: the endpoint seems to "
                "ignore temperature and seed (`transformers serve` does), so retries and repeats add no new samples. "
                "Serve the model with vLLM (which honours both), or run it in-process", stacklevel=2)

    async def _send(self, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> ChatResult:
        """One backend call, paced by the rate limiter when there is one."""
        if self.limiter is None:
            return await self.backend.complete(messages, sampling, salt)
        reserved = await self.limiter.acquire(estimate_tokens(messages, sampling))
        try:
            result = await self.backend.complete(messages, sampling, salt)
        except TransientError as exc:
            if exc.retry_after is not None:
                self.limiter.pause(exc.retry_after)
            raise
        self.limiter.settle(reserved, result.input_tokens + result.output_tokens)
        return result

    def _show_rate(self, bar: Any, state: dict[str, str]) -> None:
        """Append the current rate and the limit to whatever postfix the caller set."""
        if self.limiter is None or getattr(bar, "disable", False):
            return
        base = getattr(bar, "postfix", None) or ""
        if base == state.get("shown"):
            base = state.get("base", "")
        shown = f"{base}, {self.limiter.postfix()}" if base else self.limiter.postfix()
        state.update(base=base, shown=shown)
        bar.set_postfix_str(shown, refresh=False)

    async def aconverse(
        self, turns: Sequence[Turn], system: str | None = None, salt: str = "", **sampling: Any
    ) -> Conversation:
        """Send user turns one after another in ONE chat, each seeing all earlier replies."""
        conv = Conversation(messages=[{"role": "system", "content": system}] if system else [])
        for turn in turns:
            text = turn(conv.results) if callable(turn) else turn
            if text is None:
                continue
            conv.messages.append({"role": "user", "content": text})
            result = await self.achat(conv.messages, salt=salt, **sampling)
            conv.results.append(result)
            if not result.ok:
                break
            conv.messages.append({"role": "assistant", "content": result.text})
        return conv

    def progress_note(self, desc: str = "") -> str:
        """'desc · 3 waiting · 2 retries (last: request timed out)': what the progress bar says besides the count;
        for a model run in-process also the tokens it generated so far and their rate ('· 1,234 tokens, 24.3 tok/s'),
        which move while a long batch runs."""
        note = f"{desc} · {self.waiting} waiting"
        if self.retries:
            note += f" · {self.retries} retries (last: {self.last_error[:60]})"
        meter = getattr(self.backend, "meter", None)
        if meter is not None and (generated := meter.note()):
            note += f" · {generated}"
        return note

    # ------------------------------------------------------------------ many at once
    async def agather(self, coros: Sequence[Awaitable[T]], desc: str = "calls",
                      on_done: Callable[[int, T, Any], None] | None = None, initial: int = 0) -> list[T]:
        """Await many coroutines that use this client at once; results in input order.

        Shows one progress bar, adds the elapsed time to the accounting and frees per-loop resources at the end.
        `on_done(index, result, bar)` runs as each finishes (e.g. to save it, or to update the bar's postfix).
        """
        async def indexed(i: int, coro: Awaitable[T]) -> tuple[int, T]:
            return i, await coro

        def finished(_: asyncio.Future) -> None:
            self.active_tasks -= 1

        async def show_waiting() -> None:  # a hung server shows as calls waiting and retries, a slow model as
            while True:                     # tokens generated, neither as silence
                await asyncio.sleep(refresh_interval_s())
                bar.set_description_str(self.progress_note(desc), refresh=True)

        out: list[Any] = [None] * len(coros)
        tasks = [asyncio.ensure_future(indexed(i, c)) for i, c in enumerate(coros)]
        self.active_tasks += len(tasks)
        for t in tasks:
            t.add_done_callback(finished)
        rate_state: dict[str, str] = {}
        bar = progress_bar(total=initial + len(tasks), initial=initial, desc=desc,
                   disable=not self.show_progress or not tasks, leave=False)
        ticker = asyncio.ensure_future(show_waiting())
        start = time.perf_counter()
        # No full garbage collection walks the whole process while calls wait on this loop (see loopgc).
        with frozen_heap():
            try:
                for fut in asyncio.as_completed(tasks):
                    i, value = await fut
                    out[i] = value
                    if on_done is not None:
                        on_done(i, value, bar)
                    if self.limiter is not None:
                        self._show_rate(bar, rate_state)
                    bar.set_description_str(self.progress_note(desc), refresh=False)
                    bar.update(1)
            finally:
                ticker.cancel()
                bar.close()
                self.usage.add_wall(time.perf_counter() - start)
                for t in tasks:
                    t.cancel()
                await self.backend.release_loop()
        return out

    def gather(self, coros: Sequence[Awaitable[T]], desc: str = "calls",
               on_done: Callable[[int, T, Any], None] | None = None, initial: int = 0) -> list[T]:
        """Blocking `agather` (also inside Jupyter)."""
        return run_sync(lambda: self.agather(coros, desc=desc, on_done=on_done, initial=initial))

    async def achat_many(self, requests: Sequence[Sequence[Message]], desc: str = "chat",
                         salts: Sequence[str] | None = None, **sampling: Any) -> list[ChatResult]:
        salts = salts or [""] * len(requests)
        return await self.agather([self.achat(m, salt=s, **sampling) for m, s in zip(requests, salts)], desc)

    async def aconverse_many(self, conversations: Sequence[Sequence[Turn]], system: str | None = None,
                             desc: str = "conversations", salts: Sequence[str] | None = None,
                             **sampling: Any) -> list[Conversation]:
        salts = salts or [""] * len(conversations)
        return await self.agather(
            [self.aconverse(t, system=system, salt=s, **sampling) for t, s in zip(conversations, salts)], desc
        )

    def chat(self, messages: Sequence[Message], salt: str = "", **sampling: Any) -> ChatResult:
        return self.chat_many([messages], desc="chat", salts=[salt], **sampling)[0]

    def chat_many(self, requests: Sequence[Sequence[Message]], desc: str = "chat",
                  salts: Sequence[str] | None = None, **sampling: Any) -> list[ChatResult]:
        """Blocking; all requests in flight at once up to `max_concurrency`; results in request order."""
        return run_sync(lambda: self.achat_many(requests, desc=desc, salts=salts, **sampling))

    def converse_many(self, conversations: Sequence[Sequence[Turn]], system: str | None = None,
                      desc: str = "conversations", salts: Sequence[str] | None = None,
                      **sampling: Any) -> list[Conversation]:
        """Blocking; many multi-turn chats in flight at once; results in input order."""
        return run_sync(
            lambda: self.aconverse_many(conversations, system=system, desc=desc, salts=salts, **sampling)
        )


# ---------------------------------------------------------------------- construction


def connect(
    model: str = "",
    base_url: str = "",
    api_key_env: str = "",
    max_concurrency: int = 8,
    *,
    stage: str = "",
    role: str = "TEACHER",
    cache_path: str | Path | None = None,
    use_cache: bool = True,
    chat_template: str | None = None,
    check: bool = True,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT,
    max_attempts: int = DEFAULT_REQUEST_ATTEMPTS,
    show_progress: bool = True,
    max_requests_per_minute: float | int | str | None = None,
    max_tokens_per_minute: float | int | str | None = None,
    batch: bool = False,
    batch_dir: str | Path | None = None,
    batch_poll_s: float = 30.0,
    cache_scope: str | None = None,
    local_dtype: str = "auto",
    local_engine: str = "transformers",
) -> ChatClient:
    """Build a client from the notebook parameters `{role}_MODEL`, `{role}_BASE_URL`, `{role}_API_KEY_ENV`.

    Empty `base_url` runs the model in-process (embedded name, checkpoint folder or hub id); otherwise `model` is
    the id served by the OpenAI-compatible endpoint. With `check`, a wrong endpoint, unknown model or missing key
    raises `ParameterError` now, before any work is queued. An in-process model runs on the best device
    (`helpers.llm.device`) in `local_dtype` ('auto': bfloat16 on a GPU and on a CPU with native bf16, else float32), decoded by
    `local_engine` (LOCAL_ENGINE: 'transformers', 'vllm' or 'auto', see `vllm_engine`).

    `max_requests_per_minute` / `max_tokens_per_minute` (`{role}_MAX_REQUESTS_PER_MINUTE`, `..._TOKENS_...`; empty
    or None = no limit) pace requests below a provider's limits (see `ratelimit.py`). `batch` (`{role}_BATCH`) sends
    the requests through the provider's Batch API instead, at batch prices; the batch ids are written under
    `batch_dir` (the run folder) so a killed run resumes polling instead of paying again (see `batch.py`).
    `request_timeout_s` / `max_attempts` are the notebooks' REQUEST_TIMEOUT / REQUEST_ATTEMPTS: how long one HTTP
    request may take and how often a failed one is sent. Cached answers are keyed by the endpoint (its base URL
    without credentials); `cache_scope` replaces it by a name of your choice, so endpoints known to serve the same
    weights (replicas of one vLLM deployment) can share their cache entries.
    """
    request_timeout_s, max_attempts = check_request_limits(request_timeout_s, max_attempts)
    check_int("MAX_CONCURRENCY", max_concurrency, 1, 4096)
    check_env_var_name(f"{role}_API_KEY_ENV", api_key_env)
    check_base_url(f"{role}_BASE_URL", base_url)
    limiter = rate_limiter_from_params(role, max_requests_per_minute, max_tokens_per_minute)
    if batch and not base_url:
        raise ParameterError(f"{role}_BATCH", "is True but the model runs in-process (no endpoint)",
                             f"set {role}_BASE_URL to a server with the batch endpoints (e.g. https://api.openai.com/v1) "
                             f"or set {role}_BATCH=False")
    model = model or (EMBEDDED_TEACHER if not base_url else "")
    if base_url:
        if not model:
            raise ParameterError(f"{role}_MODEL", "is empty", f"set the model id the endpoint at {base_url} serves")
        backend: Backend = OpenAIBackend(model, base_url, api_key_env, role=role, timeout_s=request_timeout_s)
    else:
        if api_key_env:
            raise ParameterError(
                f"{role}_BASE_URL", "is empty (local model) but an API key variable was given",
                f"set {role}_BASE_URL to the endpoint (e.g. https://api.openai.com/v1) or clear {role}_API_KEY_ENV",
            )
        backend = local_backend(model, role, chat_template, local_dtype, local_engine)
        max_concurrency = max(max_concurrency, backend.min_concurrency)  # a GPU batch needs its rows in flight
    if check:
        backend.check()
    cache = CallCache(cache_path) if use_cache else None
    if batch:
        return batch_client(backend, batch_dir, stage=stage, role=role, cache=cache, use_cache=use_cache,
                            max_attempts=max_attempts, show_progress=show_progress, poll_s=batch_poll_s, check=check,
                            cache_scope=cache_scope)
    if limiter is not None and hasattr(backend, "header_observer"):
        backend.header_observer = limiter.observe
    return ChatClient(backend, stage=stage, role=role, max_concurrency=max_concurrency, cache=cache,
                      use_cache=use_cache, max_attempts=max_attempts, show_progress=show_progress, limiter=limiter,
                      cache_scope=cache_scope)


def local_backend(model: str, role: str, chat_template: str | None, dtype: str, engine: str) -> Backend:
    """The backend of an in-process model: batched transformers `generate` here, or a vLLM engine."""
    device = best_device()
    if resolve_engine(engine, device) == "vllm":
        return VLLMBackend(model, role=role, chat_template=chat_template, dtype=resolve_dtype(dtype, device),
                           device=device)
    return LocalBackend(model, role=role, chat_template=chat_template, dtype=dtype, device=device)


def rate_limiter_from_params(role: str, max_requests_per_minute: Any, max_tokens_per_minute: Any
                             ) -> RateLimiter | None:
    """The limiter for `{role}_MAX_REQUESTS_PER_MINUTE` / `{role}_MAX_TOKENS_PER_MINUTE`, or None when both are
    unset (empty, None or 0); a value that is not a positive number fails here, before any call."""
    for name, value in (("REQUESTS", max_requests_per_minute), ("TOKENS", max_tokens_per_minute)):
        if value in (None, ""):
            continue
        try:
            ok = float(value) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok or isinstance(value, bool):
            raise ParameterError(f"{role}_MAX_{name}_PER_MINUTE", f"is {value!r}, not a number of {name.lower()}",
                                 "give the provider's per-minute limit for your tier (e.g. 500), or leave it empty")
    limiter = RateLimiter(max_requests_per_minute, max_tokens_per_minute,
                          tokens_parameter=f"{role}_MAX_TOKENS_PER_MINUTE")
    return limiter if limiter.active else None


def batch_client(backend: Backend, batch_dir: str | Path | None, *, stage: str, role: str,
                 cache: CallCache | None, use_cache: bool, max_attempts: int, show_progress: bool,
                 poll_s: float, check: bool = True, cache_scope: str | None = None) -> ChatClient:
    """A client whose requests go out through the Batch API; same cache keys as live calls to `backend`."""
    from .batch import BATCH_MAX_REQUESTS, BatchBackend, default_batch_dir  # imports openai, like the backends

    client: ChatClient
    journal = Path(batch_dir) if batch_dir else default_batch_dir()
    router = BatchBackend(backend, journal, poll_s=poll_s, active=lambda: client.active_tasks,  # type: ignore[arg-type]
                          verbose=show_progress)
    if check:
        router.check_batch_api()
    # Every request of a round must be able to wait at once: the batch, not the semaphore, bounds the work.
    client = ChatClient(router, stage=stage, role=role, max_concurrency=BATCH_MAX_REQUESTS, cache=cache,
                        use_cache=use_cache, max_attempts=max_attempts, backoff_base_s=0.01,
                        show_progress=show_progress,
                        # the live endpoint's scope, so batch results answer later live calls and back
                        cache_scope=cache_scope if cache_scope is not None
                        else str(backend.describe().get("base_url") or ""))
    return client


class FunctionBackend:
    """Replies come from a Python function: for tests and for scripted demos."""

    kind = "function"

    def __init__(self, fn: Callable[[list[Message], dict[str, Any]], Any], model: str = "fake") -> None:
        self.fn, self.model = fn, model

    async def complete(self, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> ChatResult:
        reply = self.fn(messages, sampling)
        if asyncio.iscoroutine(reply):
            reply = await reply
        if isinstance(reply, ChatResult):
            return reply
        text = str(reply)
        words_in = sum(len(m["content"].split()) for m in messages)
        return ChatResult(text=text, finish_reason="stop", input_tokens=words_in, output_tokens=len(text.split()),
                          model=self.model)

    def check(self) -> None:
        return None

    async def release_loop(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": "", "api_key_env": ""}


def connect_function(fn: Callable[[list[Message], dict[str, Any]], Any], model: str = "fake", *,
                     stage: str = "", role: str = "TEACHER", cache_path: str | Path | None = None,
                     use_cache: bool = True, max_concurrency: int = 8, max_attempts: int = 3,
                     backoff_base_s: float = 0.01) -> ChatClient:
    """A client whose model is `fn(messages, sampling) -> str | ChatResult` (raise TransientError to test retries)."""
    cache = CallCache(cache_path) if use_cache else None
    return ChatClient(FunctionBackend(fn, model), stage=stage, role=role, max_concurrency=max_concurrency,
                      cache=cache, use_cache=use_cache, max_attempts=max_attempts, backoff_base_s=backoff_base_s,
                      show_progress=False)
