"""A local fake OpenAI-compatible server for tests and benchmarks (loopback only).

It can be told to be slow, answer 429 (with Retry-After) or 500, drop connections, or return empty or truncated
content, either as a scripted sequence of faults or at random with a seed. Its `/models` can misbehave as real
servers do (`models_status`: "500" or "html"; `listed_models`: names other than those it serves), and a large
`latency_s` makes it a hung server. Replies are deterministic functions of
the request, so caching and transcripts can be checked exactly.

Like a real provider it can also enforce requests-per-second and tokens-per-second limits (429 with Retry-After and
OpenAI's x-ratelimit-* headers, which successes carry too), as token buckets or, with `rate_window_s`, counted over
a rolling window as providers state them (`RollingWindowLimits`), and it serves the files + batches endpoints of the
Batch API: an uploaded JSONL of chat requests goes validating -> in_progress -> completed (some lines failed, in
the error file) or expired, and the counters say how many batches and duplicate lines were submitted.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .ratelimit import estimate_tokens, format_duration

FAULTS = ("429", "500", "503", "drop", "empty", "truncated", "slow", "html", "401",
          "400echo", "500echo", "echo")  # *echo: the reply (an error body, or content) repeats the Authorization header
BATCH_OUTCOMES = ("completed", "expired", "failed")


class ServerLimits:
    """A provider's rate limits: one bucket of requests and one of tokens, each holding one second's worth.

    A request is charged its prompt words plus `max_tokens` on arrival (providers count before they run it) and
    refunded what it did not generate; a request that does not fit is refused with 429. Limits are per second
    here (that is how providers enforce their per-minute figures); headers announce them per minute like OpenAI.
    """

    def __init__(self, requests_per_s: float = 0.0, tokens_per_s: float = 0.0) -> None:
        now = time.monotonic()
        self.rates = {"requests": requests_per_s, "tokens": tokens_per_s}
        self.levels = {k: v for k, v in self.rates.items()}
        self.stamp = now
        self.refused = 0

    @property
    def active(self) -> bool:
        return any(self.rates.values())

    def _refill(self) -> None:
        now = time.monotonic()
        for k, rate in self.rates.items():
            if rate:
                self.levels[k] = min(rate, self.levels[k] + (now - self.stamp) * rate)
        self.stamp = now

    def admit(self, tokens: int) -> float | None:
        """Charge one request of `tokens`; None when admitted, else the seconds until it would fit."""
        self._refill()
        need = {"requests": 1.0, "tokens": float(tokens)}
        waits = [(need[k] - self.levels[k]) / rate for k, rate in self.rates.items()
                 if rate and self.levels[k] < min(need[k], rate)]
        if waits:
            self.refused += 1
            return max(waits)
        for k, rate in self.rates.items():
            if rate:
                self.levels[k] -= need[k]
        return None

    def refund(self, tokens: int) -> None:
        if self.rates["tokens"]:
            self.levels["tokens"] = min(self.rates["tokens"], self.levels["tokens"] + tokens)

    def headers(self) -> dict[str, str]:
        self._refill()
        out: dict[str, str] = {}
        for k, rate in self.rates.items():
            if rate:
                level = max(0.0, self.levels[k])
                out[f"x-ratelimit-limit-{k}"] = str(int(rate * 60))
                out[f"x-ratelimit-remaining-{k}"] = str(int(level))
                out[f"x-ratelimit-reset-{k}"] = format_duration((rate - level) / rate)
        return out


class RollingWindowLimits:
    """A provider's limits counted over a rolling window, as providers state them: at most `requests_per_s x
    window_s` requests and `tokens_per_s x window_s` tokens arrive within any `window_s` seconds (1: a per-minute
    limit enforced per second, which OpenAI calls quantized; 60: per minute). Beyond, the answer is 429 with
    Retry-After (when the request would fit) and x-ratelimit-* headers, which successes carry too.

    Tokens are counted as OpenAI documents it: at arrival, the request's estimate (characters / 4 of the prompt) plus
    its `max_tokens` (DEFAULT_OUTPUT_TOKENS when it sets none), never corrected afterwards by what was generated.
    A refused request still counts against the request limit (OpenAI: "unsuccessful requests contribute to your
    per-minute limit"; with `count_refused=False` it does not); its tokens do not. `admitted` keeps (arrival time,
    tokens) of every admitted request, so a test can check the window itself."""

    def __init__(self, requests_per_s: float = 0.0, tokens_per_s: float = 0.0, window_s: float = 1.0,
                 count_refused: bool = True) -> None:
        self.window_s, self.count_refused = window_s, count_refused
        self.limits = {"requests": requests_per_s * window_s, "tokens": tokens_per_s * window_s}
        self.per_minute = {"requests": requests_per_s * 60, "tokens": tokens_per_s * 60}
        self._log: dict[str, deque[tuple[float, float]]] = {"requests": deque(), "tokens": deque()}
        self._used = {"requests": 0.0, "tokens": 0.0}
        self.admitted: list[tuple[float, int]] = []
        self.refused = 0

    @property
    def active(self) -> bool:
        return any(self.limits.values())

    @staticmethod
    def charge(body: dict[str, Any]) -> int:
        """The tokens one request counts for on arrival."""
        return estimate_tokens(body.get("messages") or [], body)

    def _expire(self, now: float) -> None:
        for k, log in self._log.items():
            while log and log[0][0] <= now - self.window_s:
                self._used[k] -= log.popleft()[1]

    def _free_at(self, kind: str, need: float, now: float) -> float:
        """When `need` more of `kind` fit in the window (now, if they fit already)."""
        limit, used = self.limits[kind], self._used[kind]
        for stamp, amount in self._log[kind]:
            if used + need <= limit:
                break
            used -= amount
            now = stamp + self.window_s
        return now

    def admit(self, tokens: int) -> float | None:
        now = time.monotonic()
        self._expire(now)
        need = {"requests": 1.0, "tokens": float(tokens)}
        waits = [self._free_at(k, need[k], now) - now for k, limit in self.limits.items()
                 if limit and self._used[k] + need[k] > limit]
        if waits:
            self.refused += 1
            if self.limits["requests"] and self.count_refused:
                self._log["requests"].append((now, 1.0))
                self._used["requests"] += 1.0
            return max(max(waits), 0.001)
        if self.limits["requests"]:
            self._log["requests"].append((now, 1.0))
            self._used["requests"] += 1.0
        if self.limits["tokens"]:
            self._log["tokens"].append((now, float(tokens)))
            self._used["tokens"] += tokens
        self.admitted.append((now, tokens))
        return None

    def refund(self, tokens: int) -> None:
        """Nothing: what was counted at arrival stays counted."""

    def headers(self) -> dict[str, str]:
        now = time.monotonic()
        self._expire(now)
        out: dict[str, str] = {}
        for k, limit in self.limits.items():
            if limit:
                log = self._log[k]
                out[f"x-ratelimit-limit-{k}"] = str(int(self.per_minute[k]))
                out[f"x-ratelimit-remaining-{k}"] = str(int(max(0.0, limit - self._used[k])))
                # until the window is empty again ("resets to its initial state")
                out[f"x-ratelimit-reset-{k}"] = format_duration(log[-1][0] + self.window_s - now if log else 0.0)
        return out


def max_in_window(stamps: list[float], window_s: float, weights: list[float] | None = None) -> float:
    """The most (count, or sum of `weights`) that arrived within any `window_s` seconds."""
    weights = weights if weights is not None else [1.0] * len(stamps)
    best = total = 0.0
    start = 0
    for end, stamp in enumerate(stamps):
        total += weights[end]
        while stamps[start] <= stamp - window_s:
            total -= weights[start]
            start += 1
        best = max(best, total)
    return best


def default_reply(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    last = messages[-1]["content"] if messages else ""
    turn = sum(1 for m in messages if m["role"] == "user")
    return f"[{body.get('model')}] turn {turn}: reply to '{last[:60]}'"


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len((m.get("content") or "").split()) for m in messages)


def _body_key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass
class FakeOpenAIServer:
    models: tuple[str, ...] = ("fake-model",)
    latency_s: float = 0.0
    slow_s: float = 5.0
    fault_rate: float = 0.0
    random_faults: tuple[str, ...] = ("429", "500", "drop")
    retry_after_s: float = 0.05
    api_key: str | None = None
    models_status: str = "ok"  # "ok" | "500" | "html"
    listed_models: tuple[str, ...] | None = None  # what /models lists; None = `models`
    reply_fn: Callable[[list[dict[str, str]], dict[str, Any]], str] = default_reply
    seed: int = 0
    host: str = "127.0.0.1"
    # a provider's rate limits (0 = none): token buckets (ServerLimits) or, with `rate_window_s`, counted over a
    # rolling window of that many seconds (RollingWindowLimits)
    requests_per_s: float = 0.0
    tokens_per_s: float = 0.0
    rate_window_s: float = 0.0
    # the Batch API: seconds each batch spends validating and in progress, and the share of lines that fail
    batch_step_s: float = 0.0
    batch_line_fail_rate: float = 0.0
    batch_api: bool = True  # False: answer 404 on the batch endpoints, like a server that has none
    # filled at run time
    port: int = 0
    requests: int = 0
    completions: int = 0
    faults_served: list[str] = field(default_factory=list)
    max_in_flight: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)  # of the last chat request
    _in_flight: int = 0
    rate_limited: int = 0  # requests refused by the rate limits
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches_created: int = 0
    batch_lines: int = 0
    duplicate_batch_lines: int = 0  # lines whose request was already completed or is still in a live batch
    _script: list[str | None] = field(default_factory=list)
    _batch_script: list[str] = field(default_factory=list)
    _batch_bodies: dict[str, str] = field(default_factory=dict)  # request hash -> "live" | "done"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, faults: list[str | None]) -> None:
        """The next len(faults) chat requests get these faults in order (None = answer normally)."""
        with self._lock:
            self._script.extend(faults)

    def script_batches(self, outcomes: list[str]) -> None:
        """The next len(outcomes) batches end this way ("completed", "expired" or "failed")."""
        assert all(o in BATCH_OUTCOMES for o in outcomes), outcomes
        with self._lock:
            self._batch_script.extend(outcomes)

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._script:
                return self._script.pop(0)
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.random_faults)
        return None

    # ------------------------------------------------------------------ handlers
    def _authorised(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        if self.models_status == "500":
            return web.json_response({"error": {"message": "cannot list models offline"}}, status=500)
        if self.models_status == "html":
            return web.Response(text="<!doctype html><html><body>Welcome</body></html>", content_type="text/html")
        listed = self.models if self.listed_models is None else self.listed_models
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in listed]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.requests += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return await self._chat_inner(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _chat_inner(self, request: web.Request) -> web.StreamResponse:
        self.last_headers = dict(request.headers)
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        if body.get("model") not in self.models:
            return web.json_response({"error": {"message": f"model {body.get('model')} not found"}}, status=404)
        charged = 0
        if self._limits.active:
            charged = (self._limits.charge(body) if isinstance(self._limits, RollingWindowLimits)
                       else _prompt_tokens(body.get("messages", [])) + int(body.get("max_tokens") or 0))
            with self._lock:
                wait = self._limits.admit(charged)
                if wait is not None:
                    self.rate_limited += 1
            if wait is not None:
                return web.json_response({"error": {"message": "rate limited", "type": "requests"}}, status=429,
                                         headers={"Retry-After": f"{wait:.3f}", "retry-after-ms": str(int(wait * 1000) + 1),
                                                  **self._limits.headers()})
        fault = self._next_fault()
        if fault:
            with self._lock:
                self.faults_served.append(fault)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "429":
            return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                     headers={"Retry-After": str(self.retry_after_s)})
        if fault in ("500", "503"):
            return web.json_response({"error": {"message": "server error"}}, status=int(fault))
        if fault == "drop":
            request.transport.abort()
            await asyncio.sleep(0.01)
            return web.Response(status=500)
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        if fault == "html":  # a proxy's or captive portal's page with status 200
            return web.Response(text="<html><body>Please sign in</body></html>", content_type="text/html")
        if fault == "401":  # the key was revoked while the run was going
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        if fault in ("400echo", "500echo"):  # a careless server that repeats the request's headers in its error
            echoed = f"invalid request; headers: Authorization: {request.headers.get('Authorization', '')}"
            return web.json_response({"error": {"message": echoed}}, status=int(fault[:3]))
        reply = self._completion(body, fault)
        if fault == "echo":
            reply["choices"][0]["message"]["content"] += f" (you sent {request.headers.get('Authorization', '')})"
        headers: dict[str, str] = {}
        if self._limits.active:
            used = reply["usage"]["total_tokens"]
            with self._lock:
                self._limits.refund(charged - used)
                headers = self._limits.headers()
        return web.json_response(reply, headers=headers)

    def _completion(self, body: dict[str, Any], fault: str | None = None) -> dict[str, Any]:
        """The chat-completions reply to one request body (live, or one line of a batch)."""
        messages = body.get("messages", [])
        text = self.reply_fn(messages, body)
        finish = "stop"
        if fault == "empty":
            text = ""
        elif fault == "truncated":
            text, finish = text[: max(1, len(text) // 2)], "length"
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        if body.get("logprobs"):
            k = int(body.get("top_logprobs") or 1)
            first = text.split()[0] if text.split() else ""
            alts = [{"token": first, "logprob": -0.1, "bytes": None}] + [
                {"token": f"alt{i}", "logprob": -3.0 - i, "bytes": None} for i in range(k - 1)
            ]
            choice["logprobs"] = {"content": [{"token": first, "logprob": -0.1, "bytes": None, "top_logprobs": alts}]}
        prompt_tokens = _prompt_tokens(messages)
        with self._lock:
            self.completions += 1
        return {
            "id": f"chatcmpl-{self.completions}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_tokens + len(text.split())},
        }

    # ------------------------------------------------------------------ the Batch API (files + batches)
    async def _upload(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        form = await request.post()
        upload = form.get("file")
        if upload is None or not hasattr(upload, "file"):
            return web.json_response({"error": {"message": "no file"}}, status=400)
        data = upload.file.read()
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = data
        return web.json_response(self._file_object(file_id, getattr(upload, "filename", "upload.jsonl"),
                                                   str(form.get("purpose", "batch"))))

    def _file_object(self, file_id: str, filename: str, purpose: str) -> dict[str, Any]:
        return {"id": file_id, "object": "file", "bytes": len(self.files[file_id]), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}

    async def _file_content(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        data = self.files.get(body.get("input_file_id", ""))
        if data is None:
            return web.json_response({"error": {"message": "input file not found"}}, status=404)
        if body.get("endpoint") != "/v1/chat/completions":
            return web.json_response({"error": {"message": f"unsupported endpoint {body.get('endpoint')}"}}, status=400)
        lines = [json.loads(line) for line in data.decode("utf-8").split("\n") if line.strip()]
        with self._lock:
            self.batches_created += 1
            batch_id = f"batch_{self.batches_created}"
            outcome = self._batch_script.pop(0) if self._batch_script else "completed"
            for line in lines:
                key = _body_key(line.get("body", {}))
                self.duplicate_batch_lines += key in self._batch_bodies
                self._batch_bodies[key] = "live"
            self.batch_lines += len(lines)
            now = time.time()
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": int(now),
                "in_progress_at": None, "expires_at": int(now) + 86400, "finalizing_at": None, "completed_at": None,
                "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "metadata": body.get("metadata"), "_lines": lines, "_outcome": outcome, "_t0": time.monotonic(),
            }
        return web.json_response(self._batch_view(batch_id))

    async def _retrieve_batch(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        batch_id = request.match_info["batch_id"]
        if batch_id not in self.batches:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        return web.json_response(self._batch_view(batch_id))

    async def _list_batches(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        if not self.batch_api:
            return web.json_response({"error": {"message": "not found"}}, status=404)
        data = [self._batch_view(b) for b in reversed(list(self.batches))]
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    def _batch_view(self, batch_id: str) -> dict[str, Any]:
        """The batch as the API shows it, moving it along its life first."""
        batch = self.batches[batch_id]  # handlers run one at a time on the server's loop: no race here
        age = time.monotonic() - batch["_t0"]
        if batch["status"] == "validating" and age >= self.batch_step_s:
            batch["status"], batch["in_progress_at"] = "in_progress", int(time.time())
        if batch["status"] == "in_progress" and age >= 2 * self.batch_step_s:
            self._finish_batch(batch)
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _finish_batch(self, batch: dict[str, Any]) -> None:
        """Run the lines: outputs, failed lines, expiry."""
        outcome, lines, now = batch["_outcome"], batch["_lines"], int(time.time())
        if outcome == "failed":  # the whole input was rejected, nothing ran
            batch.update(status="failed", failed_at=now, errors={"object": "list", "data": [
                {"code": "invalid_request", "message": "the input file was rejected", "param": None, "line": None}]})
            for line in lines:
                self._batch_bodies.pop(_body_key(line.get("body", {})), None)
            return
        outputs, errors = [], []
        ran = lines if outcome == "completed" else lines[: len(lines) // 2]  # an expired batch ran only some
        for n, line in enumerate(lines):
            body, key = line.get("body", {}), _body_key(line.get("body", {}))
            base = {"id": f"batch_req_{batch['id']}_{n}", "custom_id": line.get("custom_id")}
            if n >= len(ran):
                errors.append({**base, "response": None, "error": {
                    "code": "batch_expired", "message": "not executed before the completion window expired"}})
                self._batch_bodies.pop(key, None)
            elif body.get("model") not in self.models:
                errors.append({**base, "error": None, "response": {"status_code": 404, "request_id": base["id"], "body": {
                    "error": {"message": f"model {body.get('model')} not found", "type": "invalid_request_error"}}}})
                self._batch_bodies.pop(key, None)
            elif self.batch_line_fail_rate and self._rng.random() < self.batch_line_fail_rate:
                errors.append({**base, "error": None, "response": {"status_code": 500, "request_id": base["id"], "body": {
                    "error": {"message": "server error", "type": "server_error"}}}})
                self._batch_bodies.pop(key, None)
            else:
                reply = self._completion(body)
                outputs.append({**base, "error": None, "response": {"status_code": 200, "request_id": base["id"],
                                                                     "body": reply}})
                self._batch_bodies[key] = "done"
        for name, rows in (("output_file_id", outputs), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{len(self.files) + 1}"
                # UTF-8 as providers write it: U+2028 and friends arrive unescaped inside the JSON strings
                self.files[file_id] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
                batch[name] = file_id
        batch["request_counts"] = {"total": len(lines), "completed": len(outputs), "failed": len(errors)}
        if outcome == "expired":
            batch.update(status="expired", expired_at=now)
        else:
            batch.update(status="completed", finalizing_at=now, completed_at=now)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeOpenAIServer":
        self._rng = random.Random(self.seed)
        self._limits: ServerLimits | RollingWindowLimits = (
            RollingWindowLimits(self.requests_per_s, self.tokens_per_s, self.rate_window_s) if self.rate_window_s
            else ServerLimits(self.requests_per_s, self.tokens_per_s))
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_get("/v1/models", self._models)
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/v1/files", self._upload)
            app.router.add_get("/v1/files/{file_id}/content", self._file_content)
            app.router.add_post("/v1/batches", self._create_batch)
            app.router.add_get("/v1/batches", self._list_batches)
            app.router.add_get("/v1/batches/{batch_id}", self._retrieve_batch)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    """`python -m helpers.llm.fake_openai --port 8001 --latency 0.1`: a server to point notebooks at for a demo."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--requests-per-s", type=float, default=0.0, help="a provider's request limit (0 = none)")
    ap.add_argument("--tokens-per-s", type=float, default=0.0, help="a provider's token limit (0 = none)")
    ap.add_argument("--rate-window", type=float, default=0.0,
                    help="count the limits over a rolling window of this many seconds (0 = token buckets)")
    ap.add_argument("--batch-step", type=float, default=0.0, help="seconds a batch spends validating, then running")
    args = ap.parse_args()
    server = FakeOpenAIServer(models=tuple(args.model or ["fake-model"]), latency_s=args.latency, port=args.port,
                              requests_per_s=args.requests_per_s, tokens_per_s=args.tokens_per_s,
                              rate_window_s=args.rate_window, batch_step_s=args.batch_step).start()
    print(json.dumps({"base_url": server.base_url, "models": server.models}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
