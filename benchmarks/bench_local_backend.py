"""The embedded teacher on a stage-2-like workload, with and without reusing cached prompt prefixes.

Eight three-turn conversations (the demo's stage 2: `paper_compact` prompts, GENERATE_MAX_TOKENS=160) go through the
local backend twice in one run: once computing every prompt in full (the reference path), once reusing the keys and
values of each conversation's earlier turns (the default). Greedy decoding, so the two paths should give the same
replies up to float rounding; the JSON reports the times, their ratio and how many replies are identical.

    python benchmarks/bench_local_backend.py [--conversations 8 --max-tokens 160 --threads 0]

Wall times on a shared machine are noisy (other processes take the cores): compare the ratio within one run, and
prefer the CPU-time ratio with --threads 1, which other load disturbs least.
"""
from __future__ import annotations

import argparse
import json
import time

from helpers.generate.files import read_query_types_file
from helpers.generate.prompt_versions import build_turns, get_version
from helpers.generate.sampling import draw_plan
from helpers.layout import SHIPPED_QUERY_TYPES
from helpers.llm.client import ChatClient
from helpers.llm.local_backend import LocalBackend
from helpers.llm.models import EMBEDDED_TEACHER

SKILLS = ["budget_planning", "persuasive_writing", "time_management", "data_interpretation", "recipe_adaptation",
          "conflict_resolution", "travel_planning", "basic_arithmetic", "email_etiquette", "gardening_knowledge",
          "summarization", "historical_context"]


def run_path(turns: list, reuse: bool, max_tokens: int, dtype: str = "float32") -> dict:
    backend = LocalBackend(EMBEDDED_TEACHER, reuse_prefixes=reuse, dtype=dtype)
    backend.check()  # loads the model once per process (both paths share it); not timed
    client = ChatClient(backend, use_cache=False, max_concurrency=len(turns), show_progress=False)
    start, cpu0 = time.perf_counter(), time.process_time()
    convs = client.converse_many(turns, temperature=0.0, max_tokens=max_tokens)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    assert all(c.ok for c in convs), [c.error for c in convs if not c.ok]
    return {"wall_s": wall, "cpu_s": cpu, "replies": [c.assistant_texts for c in convs],
            "prompt_tokens": client.usage.input_tokens, "output_tokens": client.usage.output_tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=8, help="the demo's 6 training + 2 held-out examples")
    ap.add_argument("--max-tokens", type=int, default=160, help="the demo's GENERATE_MAX_TOKENS")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--bf16", action="store_true", help="also time the opt-in bfloat16 path (replies differ)")
    args = ap.parse_args()

    import torch  # heavy: imported after argument parsing so --help stays quick

    if args.threads:
        torch.set_num_threads(args.threads)
    version = get_version("paper_compact")
    plans = draw_plan(SKILLS, read_query_types_file(SHIPPED_QUERY_TYPES), args.conversations, 2, 0, "train")
    turns = [build_turns(p, version) for p in plans]
    run_path(turns[:1], True, 8)  # warm-up: first-call costs (thread pools, lazy imports) hit neither path
    full = run_path(turns, False, args.max_tokens)
    reused = run_path(turns, True, args.max_tokens)
    pairs = [(a, b) for ca, cb in zip(full["replies"], reused["replies"]) for a, b in zip(ca, cb)]
    identical = sum(a == b for a, b in pairs)
    extra = {}
    if args.bf16:
        bf16 = run_path(turns, True, args.max_tokens, "bfloat16")
        same = [a == b for ca, cb in zip(full["replies"], bf16["replies"]) for a, b in zip(ca, cb)]
        extra = {"bf16_reused_wall_s": round(bf16["wall_s"], 2), "bf16_wall_ratio": round(bf16["wall_s"] / full["wall_s"], 3),
                 "bf16_cpu_ratio": round(bf16["cpu_s"] / full["cpu_s"], 3),
                 "bf16_match_rate": round(sum(same) / max(1, len(same)), 3)}
    print(json.dumps({
        "conversations": args.conversations, "turns": len(turns[0]), "max_tokens": args.max_tokens,
        "torch_threads": torch.get_num_threads(),
        "prompt_tokens": full["prompt_tokens"], "output_tokens": full["output_tokens"],
        "full_prompts_wall_s": round(full["wall_s"], 2), "reused_prefixes_wall_s": round(reused["wall_s"], 2),
        "wall_ratio": round(reused["wall_s"] / full["wall_s"], 3),
        "full_prompts_cpu_s": round(full["cpu_s"], 2), "reused_prefixes_cpu_s": round(reused["cpu_s"], 2),
        "cpu_ratio": round(reused["cpu_s"] / full["cpu_s"], 3),
        "replies": len(pairs), "identical_replies": identical, "match_rate": round(identical / max(1, len(pairs)), 3),
        **extra,
        "note": "greedy decoding; times on a shared machine are noisy, compare the ratios within one run",
    }, indent=2))


if __name__ == "__main__":
    main()
