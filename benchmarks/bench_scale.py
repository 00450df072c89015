"""Paper-scale access against the fake provider: rate-limited live calls and the Batch API route. Prints JSON.

Rate limits: a server that allows R requests within any rolling second (`--window-s 1`, as providers enforce a
per-minute limit; a refused request counts against the window too, as OpenAI says it does, unless
`--refused-not-counted`; `--window-s 0`: a token bucket of one second's worth) with 100 ms per call, and the kit with
MAX_CONCURRENCY=64 running 5-turn conversations, once with the limit set to the server's
(`max_requests_per_minute = 60 R`) and once without; for each, the achieved rate of answered requests as a share of
R, the share of requests the server refused (429), and the most requests it admitted within one second.
Batch route: N conversations of T turns go out as batches; the number of rounds against the expected T, then a run
killed after its first submission and started again, counting lines the server received twice.

    python benchmarks/bench_scale.py [--rates 50 200 --seconds 10 --window-s 1 --batch-conversations 1000]
    python benchmarks/bench_scale.py --rates 50 --seconds 12 --no-unlimited --no-batch   # the limited run alone
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _serve(rate: float, latency: float, window_s: float, count_refused: bool, conn) -> None:
    """The limited server in its own process (so it does not share the client's GIL); answers 'stats' requests."""
    from helpers.llm.fake_openai import FakeOpenAIServer, max_in_window

    srv = FakeOpenAIServer(requests_per_s=rate, latency_s=latency, rate_window_s=window_s).start()
    if window_s:
        srv._limits.count_refused = count_refused
    conn.send(srv.port)
    while True:
        if conn.recv() == "stats":
            admitted = [t for t, _ in getattr(srv._limits, "admitted", [])]
            conn.send({"requests": srv.requests, "rate_limited": srv.rate_limited, "completions": srv.completions,
                       "most_in_a_second": max_in_window(admitted, 1.0) if admitted else None})


def rate_limited_run(rate: float, latency: float, seconds: float, concurrency: int, turns: int,
                     limited: bool, window_s: float = 1.0, count_refused: bool = True) -> dict:
    from helpers.llm.client import connect

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(rate, latency, window_s, count_refused, child), daemon=True)
    proc.start()
    try:
        base_url = f"http://127.0.0.1:{parent.recv()}/v1"
        n_conv = max(concurrency, int(rate * seconds / turns))
        with tempfile.TemporaryDirectory() as tmp:
            client = connect("fake-model", base_url, "", max_concurrency=concurrency, stage="bench", use_cache=False,
                             cache_path=Path(tmp) / "c.sqlite", show_progress=False, max_attempts=100,  # the most REQUEST_ATTEMPTS allows
                             max_requests_per_minute=rate * 60 if limited else None)
            client.backoff_base_s = 0.05
            convs = [[f"conversation {i} turn {t}" for t in range(turns)] for i in range(n_conv)]
            start, cpu0 = time.perf_counter(), time.process_time()
            out = client.converse_many(convs, temperature=0.7)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        parent.send("stats")
        stats = parent.recv()
    finally:
        proc.terminate()
    answered = sum(len(c.results) for c in out if c.ok)
    return {
        "limit_set": limited, "server_requests_per_s": rate, "server_window_s": window_s or "token bucket",
        "refused_requests_count": count_refused if window_s else None,
        "conversations": n_conv, "answered_requests": answered,
        "failed_conversations": sum(not c.ok for c in out), "elapsed_s": round(elapsed, 2),
        "achieved_per_s": round(answered / elapsed, 2), "achieved_over_R": round(answered / elapsed / rate, 3),
        "requests_sent": stats["requests"], "answered_429": stats["rate_limited"],
        "share_429": round(stats["rate_limited"] / max(1, stats["requests"]), 4),
        "most_admitted_in_one_second": stats["most_in_a_second"],
        "client_cpu_ms_per_request_sent": round(1000 * cpu / max(1, stats["requests"]), 3),
    }


_CHILD = """
import sys
from helpers.llm.client import connect
n, turns = int(sys.argv[4]), int(sys.argv[5])
c = connect("fake-model", sys.argv[1], "", stage="bench", cache_path=sys.argv[2], show_progress=False,
            batch=True, batch_dir=sys.argv[3], batch_poll_s=0.05)
c.converse_many([[f"conversation {i} turn {t}" for t in range(turns)] for i in range(n)])
"""


def batch_runs(n_conv: int, turns: int, fail_rate: float) -> dict:
    from helpers.llm.client import connect
    from helpers.llm.fake_openai import FakeOpenAIServer

    convs = [[f"conversation {i} turn {t}" for t in range(turns)] for i in range(n_conv)]
    out: dict = {"conversations": n_conv, "turns": turns, "requests": n_conv * turns}
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(batch_step_s=0.05) as srv:
        client = connect("fake-model", srv.base_url, "", stage="bench", cache_path=Path(tmp) / "a.sqlite",
                         show_progress=False, batch=True, batch_dir=Path(tmp) / "a", batch_poll_s=0.05)
        start = time.perf_counter()
        res = client.converse_many(convs)
        out["clean"] = {"all_answered": all(c.ok for c in res), "expected_rounds": turns,
                        "rounds": client.backend.rounds, "batches_submitted": srv.batches_created,
                        "lines_submitted": srv.batch_lines, "duplicate_lines": srv.duplicate_batch_lines,
                        "elapsed_s": round(time.perf_counter() - start, 2)}
    with tempfile.TemporaryDirectory() as tmp, \
            FakeOpenAIServer(batch_step_s=0.05, batch_line_fail_rate=fail_rate, seed=1) as srv:
        client = connect("fake-model", srv.base_url, "", stage="bench", cache_path=Path(tmp) / "b.sqlite",
                         show_progress=False, batch=True, batch_dir=Path(tmp) / "b", batch_poll_s=0.05)
        res = client.converse_many(convs)
        out["with_failed_lines"] = {
            "line_fail_rate": fail_rate, "all_answered": all(c.ok for c in res), "rounds": client.backend.rounds,
            "batches_submitted": srv.batches_created, "lines_submitted": srv.batch_lines,
            "retried_lines": client.usage.retries, "duplicate_lines_of_answered_requests": srv.duplicate_batch_lines}
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(batch_step_s=1.0) as srv:
        cache, run = Path(tmp) / "c.sqlite", Path(tmp) / "run"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, srv.base_url, str(cache), str(run), str(n_conv),
                                  str(turns)], env=env)
        journal = run / "batches.jsonl"
        while not (journal.exists() and "submitted" in journal.read_text()):
            time.sleep(0.02)
        child.kill()
        child.wait()
        before = srv.batches_created
        client = connect("fake-model", srv.base_url, "", stage="bench", cache_path=cache, show_progress=False,
                         batch=True, batch_dir=run, batch_poll_s=0.05)
        res = client.converse_many(convs)
        out["kill_and_resume"] = {
            "batches_before_kill": before, "all_answered": all(c.ok for c in res),
            "batches_adopted_on_resume": client.backend.adopted, "batches_submitted_on_resume": client.backend.submitted,
            "batches_total": srv.batches_created, "expected_batches_total": turns,
            "duplicate_lines": srv.duplicate_batch_lines}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[50.0, 200.0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--seconds", type=float, default=10.0, help="about how long each limited run lasts")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--window-s", type=float, default=1.0,
                    help="the server counts requests over a rolling window this long (0: a token bucket)")
    ap.add_argument("--refused-not-counted", dest="count_refused", action="store_false",
                    help="a refused request does not count against the server's window")
    ap.add_argument("--no-unlimited", dest="unlimited", action="store_false",
                    help="skip the run without the limit set")
    ap.add_argument("--no-batch", dest="batch", action="store_false", help="skip the Batch API runs")
    ap.add_argument("--batch-conversations", type=int, default=1000)
    ap.add_argument("--batch-turns", type=int, default=3)
    ap.add_argument("--batch-fail-rate", type=float, default=0.02)
    args = ap.parse_args()
    rate_limits = [rate_limited_run(r, args.latency, args.seconds, args.concurrency, args.turns, limited,
                                    args.window_s, args.count_refused)
                   for r in args.rates for limited in ((True, False) if args.unlimited else (True,))]
    batch = batch_runs(args.batch_conversations, args.batch_turns, args.batch_fail_rate) if args.batch else None
    print(json.dumps({"latency_s": args.latency, "concurrency": args.concurrency, "turns": args.turns,
                      "rate_limits": rate_limits, "batch": batch}, indent=2))


if __name__ == "__main__":
    main()
