"""The benchmark scripts of `make bench` still run against the kit as it is now (tiny sizes; no figure is checked
here, only that each script runs and prints what its paragraph in docs/benchmarks.md quotes)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=BENCHMARKS.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout[done.stdout.index("{"):])


def test_llm_layer_benchmark_runs():
    out = _run("bench_llm.py", "--latency", "0.01", "--concurrency", "4", "8", "--turns", "2", "--waves", "2",
               "--baseline-conversations", "2")
    assert [level["concurrency"] for level in out["by_concurrency"]] == [4, 8]
    for level in out["by_concurrency"]:
        assert level["async_conversations_per_s"] > 0 and level["client_cpu_ms_per_call"] > 0
        assert level["bare_aiohttp_fraction_of_ideal"] > 0


def test_stage2_benchmark_runs():
    out = _run("bench_stage2.py", "--latency", "0.01", "--concurrency", "4", "--examples", "12")
    assert out["examples_kept"] + out["examples_failed"] == 12 and out["examples_failed"] == 0
    assert out["stage_fraction_of_ideal"] > 0 and out["bare_client_fraction_of_ideal"] > 0


def test_rate_limit_and_batch_benchmark_runs():
    out = _run("bench_scale.py", "--rates", "40", "--seconds", "1", "--concurrency", "4", "--turns", "2",
               "--batch-conversations", "10", "--batch-turns", "2")
    limited = [r for r in out["rate_limits"] if r["limit_set"]]
    assert limited and all(r["failed_conversations"] == 0 for r in limited)
    assert out["batch"]["kill_and_resume"]["duplicate_lines"] == 0 and out["batch"]["clean"]["all_answered"]


def test_precision_benchmark_runs():
    out = _run("bench_dtype.py", "--batch", "2", "--prompt-tokens", "8", "--new-tokens", "3", "--threads", "1")
    assert set(out["models"]) == {"smollm2-135m-instruct", "gemma-3-270m"} and isinstance(out["native_bf16"], bool)
    for figures in out["models"].values():
        for dtype in ("float32", "bfloat16"):
            run = figures[dtype]["runs"][0]
            assert run["decode_tokens_per_s"] > 0 and run["prefill_s"] > 0
        assert figures["bf16_decode_speedup"] > 0 and figures["bf16_prefill_speedup"] > 0
