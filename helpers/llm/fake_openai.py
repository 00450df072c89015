"""A local fake OpenAI-compatible server for tests and benchmarks (loopback only).

It can be told to be slow, answer 429 (with Retry-After) or 500, drop connections, or return empty or truncated
content, either as a scripted sequence of faults or at random with a seed. Replies are deterministic functions of
the request, so caching and transcripts can be checked exactly.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FAULTS = ("429", "500", "503", "drop", "empty", "truncated", "slow")


def default_reply(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    last = messages[-1]["content"] if messages else ""
    turn = sum(1 for m in messages if m["role"] == "user")
    return f"[{body.get('model')}] turn {turn}: reply to '{last[:60]}'"


@dataclass
class FakeOpenAIServer:
    models: tuple[str, ...] = ("fake-model",)
    latency_s: float = 0.0
    slow_s: float = 5.0
    fault_rate: float = 0.0
    random_faults: tuple[str, ...] = ("429", "500", "drop")
    retry_after_s: float = 0.05
    api_key: str | None = None
    reply_fn: Callable[[list[dict[str, str]], dict[str, Any]], str] = default_reply
    seed: int = 0
    host: str = "127.0.0.1"
    # filled at run time
    port: int = 0
    requests: int = 0
    completions: int = 0
    faults_served: list[str] = field(default_factory=list)
    max_in_flight: int = 0
    _in_flight: int = 0
    _script: list[str | None] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, faults: list[str | None]) -> None:
        """The next len(faults) chat requests get these faults in order (None = answer normally)."""
        with self._lock:
            self._script.extend(faults)

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
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

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
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        if body.get("model") not in self.models:
            return web.json_response({"error": {"message": f"model {body.get('model')} not found"}}, status=404)
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
        prompt_tokens = sum(len(m.get("content", "").split()) for m in messages)
        with self._lock:
            self.completions += 1
        return web.json_response({
            "id": f"chatcmpl-{self.completions}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                      "total_tokens": prompt_tokens + len(text.split())},
        })

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeOpenAIServer":
        self._rng = random.Random(self.seed)
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_get("/v1/models", self._models)
            app.router.add_post("/v1/chat/completions", self._chat)
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
    args = ap.parse_args()
    server = FakeOpenAIServer(models=tuple(args.model or ["fake-model"]), latency_s=args.latency, port=args.port).start()
    print(json.dumps({"base_url": server.base_url, "models": server.models}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
