"""Stage 2 end to end against the fake OpenAI server with a fixed latency per call: how close to the ideal rate?

Runs the function notebook 02 calls (`helpers.generate.run_generation`: plan, converse, progress files, call cache,
filters, saved outputs) for N examples of the default three-turn prompt version against the fake server started in
its own process (so it does not share our GIL), with the call cache on (a fresh, empty one). The ideal rate is
concurrency / (turns x latency) examples per second. Prints JSON: the conversation phase alone and the whole stage
(which adds filtering and writing the JSONL / official JSON / `datasets` outputs).

    python benchmarks/bench_stage2.py [--latency 0.1 --concurrency 64 --examples 1000] [--profile out.prof]

On a shared machine the figures are noisy: run it twice before trusting a difference of a few percent.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import json
import os
import random
import tempfile
import time
from pathlib import Path

from bench_llm import bench_async, start_server  # the bare client's measurement, run here on the same server and load

TURNS = 3  # the default prompt version: generate, critique, refine

_SYLLABLES = "ka lo mi ne ru ta be so di fa gu he ji ko lu ma".split()
_VOCAB = [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in ("n", "r", "s")]  # 768 made-up words


def parseable_reply(messages: list[dict[str, str]], body: dict) -> str:
    """A teacher that follows the format: a pair on turns 1 and 3, a critique on turn 2; instructions differ per
    conversation (seeded by its first prompt) so the near-duplicate filter does realistic work."""
    turn = sum(1 for m in messages if m["role"] == "user")
    rng = random.Random(hashlib.sha256(messages[0]["content"].encode()).hexdigest())
    topic = " ".join(rng.sample(_VOCAB, 12))
    if turn == 2:
        return f"Weaknesses: the answer about {topic} lacks concrete examples. Strengths: it is clear."
    return (f"### Instruction:\nPlease explain how to plan a {topic} project for a small team.\n\n"
            f"### Response:\nStart with the {topic} goals, then list steps, owners and dates (draft {turn}).")


def _write_stage1_lists(run_dir: Path) -> None:
    from helpers import layout
    from helpers.jsonl import write_jsonl

    skills = [{"skill": f"{a}_{b}"} for a in _VOCAB[:40] for b in _VOCAB[40:60]]
    write_jsonl(run_dir / layout.SKILLS_JSONL, skills)
    write_jsonl(run_dir / layout.QUERY_TYPES_JSONL, [
        {"name": f"Type-{i}", "definition": f"query type {i}", "examples": [f"example {i}"]} for i in range(16)])


def run_once(base_url: str, args: argparse.Namespace, profile: str | None) -> dict:
    from helpers.generate import GenerateConfig, run_generation
    from helpers.generate.stage import generate_splits, make_plans, load_stage1_inputs
    from helpers.generate.prompt_versions import get_version

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        os.environ["ISM_CACHE_DIR"] = str(Path(tmp) / "cache")  # cache on, but empty: every call goes out
        _write_stage1_lists(run_dir)
        params = {"RUN_DIR": str(run_dir), "TEACHER_MODEL": "fake-model", "TEACHER_BASE_URL": base_url,
                  "MAX_CONCURRENCY": args.concurrency, "NUM_EXAMPLES": args.examples, "NUM_HELDOUT": 0,
                  "TEMPERATURE": 0.7}
        cfg = GenerateConfig.from_params(params)
        client = cfg.connect(cfg.teacher(), "generate")
        client.show_progress = args.progress_bar  # the notebook shows one (here written to /dev/null)
        prof = cProfile.Profile() if profile else None
        start, cpu0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            outcome = run_generation(cfg, client)
        if prof:
            prof.disable()
            prof.dump_stats(profile)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu0
        conversations = client.usage.wall_s
        # A second client on the same (now full) cache and a fresh data folder: the cost of a fully cached re-run.
        version = get_version(cfg.prompt_version)
        train, _ = make_plans(cfg, *load_stage1_inputs(cfg))
        start = time.perf_counter()
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            generate_splits(client, {"train": (train, run_dir / "rerun" / "progress.jsonl")}, version, cfg)
        cached = time.perf_counter() - start
        summary = outcome.summary()
    return {"total_s": total, "cpu_s": cpu, "conversations_s": conversations, "cached_rerun_s": cached,
            "examples": summary["num_examples"], "failed": summary["num_failed"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--no-progress-bar", dest="progress_bar", action="store_false",
                    help="run without the progress bar the notebook shows")
    ap.add_argument("--profile", default="", help="write a cProfile of the stage run to this file")
    args = ap.parse_args()

    proc, base_url = start_server(args.latency, parseable_reply)
    try:
        res = run_once(base_url, args, args.profile or None)
        # The bare client in the same run and on the same machine load: the rate stage 2 should approach.
        client_rate, client_cpu_ms = bench_async(base_url, args.concurrency, TURNS, args.examples)
    finally:
        proc.terminate()
    ideal = args.concurrency / (TURNS * args.latency)
    stage_rate = args.examples / res["total_s"]
    print(json.dumps({
        "latency_s": args.latency, "concurrency": args.concurrency, "examples": args.examples, "turns": TURNS,
        "ideal_examples_per_s": round(ideal, 2),
        "conversations_examples_per_s": round(args.examples / res["conversations_s"], 2),
        "conversations_fraction_of_ideal": round(args.examples / res["conversations_s"] / ideal, 3),
        "stage_examples_per_s": round(stage_rate, 2),
        "stage_fraction_of_ideal": round(stage_rate / ideal, 3),
        "stage_cpu_ms_per_call": round(1000 * res["cpu_s"] / (TURNS * args.examples), 3),
        "bare_client_examples_per_s": round(client_rate, 2),
        "bare_client_fraction_of_ideal": round(client_rate / ideal, 3),
        "bare_client_cpu_ms_per_call": round(client_cpu_ms, 3),
        "stage_vs_bare_client": round(stage_rate / client_rate, 3),
        "stage_s": round(res["total_s"], 2), "conversations_s": round(res["conversations_s"], 2),
        "cached_rerun_s": round(res["cached_rerun_s"], 2),
        "examples_kept": res["examples"], "examples_failed": res["failed"],
        "note": "shared machine: noisy, compare runs made back to back",
    }, indent=2))


if __name__ == "__main__":
    main()
