"""Throughput of the LLM layer against the fake OpenAI server with a fixed latency per call.

Compares, in one run, (a) the kit's async client with many multi-turn conversations in flight against the ideal
rate concurrency / (turns x latency) and against the same conversations sent with bare aiohttp (what this server
and machine allow at all), and (b) the original implementation's model: a few worker threads, each
running its conversations one call after another with the blocking client. Prints JSON.

    python benchmarks/bench_llm.py [--latency 0.1 --concurrency 64 256 --turns 5 --waves 8]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import openai


def _serve(latency: float, port_q, reply_fn=None) -> None:  # its own process: the server must not share our GIL
    from helpers.llm.fake_openai import FakeOpenAIServer

    srv = FakeOpenAIServer(latency_s=latency, **({"reply_fn": reply_fn} if reply_fn else {})).start()
    port_q.put(srv.port)
    while True:
        time.sleep(3600)


def start_server(latency: float, reply_fn=None) -> tuple[multiprocessing.process.BaseProcess, str]:
    """The fake server in a child process (terminate it when done) and its base URL. `reply_fn` must be a
    module-level function (it is pickled into the child)."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(latency, q, reply_fn), daemon=True)
    proc.start()
    return proc, f"http://127.0.0.1:{q.get(timeout=30)}/v1"


def bench_async(base_url: str, concurrency: int, turns: int, n_conv: int) -> tuple[float, float]:
    from helpers.llm.client import connect

    with tempfile.TemporaryDirectory() as tmp:
        client = connect("fake-model", base_url, "", max_concurrency=concurrency, stage="bench",
                         cache_path=Path(tmp) / "c.sqlite", use_cache=False, show_progress=False)
        convs = [[f"conversation {i} turn {t}" for t in range(turns)] for i in range(n_conv)]
        start, cpu0 = time.perf_counter(), time.process_time()
        out = client.converse_many(convs, temperature=0.7)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    assert all(c.ok for c in out), "fake server calls failed"
    return n_conv / elapsed, 1000 * cpu / (n_conv * turns)


def bench_raw(base_url: str, concurrency: int, turns: int, n_conv: int) -> float:
    """The same conversations with nothing but aiohttp and json: what this server and machine allow at all (the
    ceiling the kit's client is compared with; a single-process server answers a burst of requests one by one)."""
    import asyncio

    import aiohttp

    async def run() -> float:
        sem = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def conversation(i: int) -> None:
                messages: list[dict[str, str]] = []
                for t in range(turns):
                    messages.append({"role": "user", "content": f"conversation {i} turn {t}"})
                    async with sem:
                        async with session.post(f"{base_url}/chat/completions", data=json.dumps(
                                {"model": "fake-model", "messages": messages, "temperature": 0.7}),
                                headers={"Content-Type": "application/json"}) as reply:
                            text = json.loads(await reply.read())["choices"][0]["message"]["content"]
                    messages.append({"role": "assistant", "content": text})

            start = time.perf_counter()
            await asyncio.gather(*(conversation(i) for i in range(n_conv)))
            return n_conv / (time.perf_counter() - start)

    return asyncio.run(run())


def bench_threads(base_url: str, workers: int, turns: int, n_conv: int) -> float:
    todo = list(range(n_conv))
    lock = threading.Lock()

    def worker() -> None:
        client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            messages = []
            for t in range(turns):
                messages.append({"role": "user", "content": f"conversation {i} turn {t}"})
                r = client.chat.completions.create(model="fake-model", messages=messages, temperature=0.7)
                messages.append({"role": "assistant", "content": r.choices[0].message.content})

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n_conv / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--waves", type=int, default=8,
                    help="conversations = waves x concurrency: enough that connection set-up and the last wave's "
                         "tail are a small part of the run")
    ap.add_argument("--baseline-workers", type=int, default=4)
    ap.add_argument("--baseline-conversations", type=int, default=32)
    args = ap.parse_args()

    proc, base_url = start_server(args.latency)
    levels = []
    try:
        for concurrency in args.concurrency:
            ideal = concurrency / (args.turns * args.latency)
            rate, cpu_ms = bench_async(base_url, concurrency, args.turns, args.waves * concurrency)
            raw = bench_raw(base_url, concurrency, args.turns, args.waves * concurrency)
            levels.append({"concurrency": concurrency, "conversations": args.waves * concurrency,
                           "ideal_conversations_per_s": round(ideal, 2), "async_conversations_per_s": round(rate, 2),
                           "fraction_of_ideal": round(rate / ideal, 3), "client_cpu_ms_per_call": round(cpu_ms, 3),
                           "bare_aiohttp_fraction_of_ideal": round(raw / ideal, 3),
                           "fraction_of_bare_aiohttp": round(rate / raw, 3)})
        baseline = bench_threads(base_url, args.baseline_workers, args.turns, args.baseline_conversations)
    finally:
        proc.terminate()
    first = levels[0]
    print(json.dumps({
        "latency_s": args.latency, "turns": args.turns, "by_concurrency": levels,
        "baseline_threads": args.baseline_workers,
        "baseline_conversations_per_s": round(baseline, 2),
        f"speedup_vs_baseline_at_{first['concurrency']}": round(first["async_conversations_per_s"] / baseline, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
