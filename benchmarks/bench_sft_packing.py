"""Training throughput with padding vs TRL's best-fit-decreasing packing, on the same data, in one run.

Prints one JSON object: tokens/s (real tokens, no padding) for each mode and their ratio. The first optimizer step
of each mode is left out (it pays one-off warm-up costs). Data: `--data` (any training-data file), else a fixed set
of synthetic instruction/response pairs of varied length (varied lengths are what makes padding wasteful).

    python benchmarks/bench_sft_packing.py                      # embedded SmolLM2-135M, 6 steps per mode
    python benchmarks/bench_sft_packing.py --model gemma-3-270m --steps 4
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = ("skill data model answer question plan step reason example detail clear short long helpful review "
         "summary list code test result value idea context user request").split()


def synthetic_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    return [{"instruction": text(5, 40), "input": "", "output": text(10, 160)} for _ in range(n)]


def tokens_per_second(outcome) -> float:  # noqa: ANN001
    counts = [h["num_tokens"] for h in outcome.log_history if "num_tokens" in h and "loss" in h]
    steps = outcome.extra["step_seconds"]
    if len(counts) >= 2 and len(steps) >= 2:
        return (counts[-1] - counts[0]) / sum(steps[1:])
    return outcome.train_tokens_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded name, folder or hub id")
    parser.add_argument("--data", default="", help="training data file (JSONL, datasets folder, official JSON)")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    from datasets import Dataset

    from helpers.sft.config import SFTStageConfig
    from helpers.sft.train import prepare_model, train_sft

    if args.data:
        from helpers.sft.data import load_records

        records = load_records(args.data, "--data").select(range(args.examples))
    else:
        records = Dataset.from_list(synthetic_records(args.examples))
    results: dict[str, dict[str, float]] = {}
    for mode in ("padding", "packing"):
        cfg = SFTStageConfig(profile="demo", base_model=args.model, max_steps=args.steps, per_device_batch_size=args.batch,
                             max_length=args.max_length, packing=mode == "packing", use_lora=False,
                             learning_rate=1e-5, logging_steps=1).validate()
        prepared = prepare_model(cfg)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            outcome = train_sft(cfg, records, None, out, model_tokenizer=prepared, evaluate_first=False,
                                save_strategy="no", eval_strategy="no", disable_tqdm=True)
            wall = time.perf_counter() - start
        results[mode] = {"tokens_per_s": round(tokens_per_second(outcome), 1),
                         "tokens": outcome.train_tokens, "steps": outcome.extra["global_step"],
                         "wall_s": round(wall, 1), "peak_rss_gb": round(outcome.peak_rss_gb, 2)}
        del prepared, outcome
    ratio = results["packing"]["tokens_per_s"] / max(results["padding"]["tokens_per_s"], 1e-9)
    print(json.dumps({"benchmark": "sft_packing", "model": args.model, "batch": args.batch,
                      "max_length": args.max_length, "examples": len(records), "machine": platform.machine(),
                      "padding": results["padding"], "packing": results["packing"],
                      "packing_over_padding": round(ratio, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
