"""The GPU check: the kit's GPU paths end to end on one accelerator, in under 8 minutes on one GPU, as one JSON object.

Sections (`--sections`, all by default):
- `sft`: SFT of the embedded student in bf16 on the GPU, with padding and with TRL's packing: real tokens/s, peak
  GPU memory, their ratio (`benchmarks/bench_sft_packing.py`'s measure);
- `answers`: the same prompts answered by transformers on the GPU (the kit's `generate_batch`, batch by device) and
  by vLLM where it is installed: output tokens/s of each and the ratio (`benchmarks/bench_engines.py`);
- `pipeline`: a demo run folder made by stages 01-02, then stages 03-04 of `helpers run` on it, everything on the
  GPU: seconds per stage and where stage 3 and 4 say their models ran (from the manifest).

    python benchmarks/bench_gpu.py                       # on a GPU node
    python benchmarks/bench_gpu.py --tiny --no-vllm      # anywhere, tiny sizes: shows that the script runs

`--tiny` shrinks every size so the script also runs on a CPU in a few minutes (its figures then say nothing about
GPUs). This script has not yet been run on a GPU by its authors: see docs/gpu.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))

from bench_engines import compare  # noqa: E402
from bench_sft_packing import synthetic_records, tokens_per_second  # noqa: E402

SECTIONS = ("sft", "answers", "pipeline")
FULL = {"sft": {"examples": 512, "steps": 20, "batch": 16, "max_length": 1024},
        "answers": {"prompts": 128, "max_tokens": 256}}
TINY = {"sft": {"examples": 8, "steps": 2, "batch": 2, "max_length": 128},
        "answers": {"prompts": 4, "max_tokens": 8}}
# stages 01-02 make the run folder (not timed as part of the check); stages 03-04 are what is timed
DEMO_TINY = {"NUM_TOPICS": 2, "SKILLS_PER_TOPIC": 3, "NUM_QUERY_TYPES": 2, "EXTRACT_MAX_TOKENS": 96,
             "NUM_EXAMPLES": 4, "NUM_HELDOUT": 2, "PROMPT_VERSION": "single_turn", "GENERATE_MAX_TOKENS": 96,
             "MAX_STEPS": 2, "SAVE_EVERY": 2, "MAX_NEW_TOKENS": 8, "MAX_LENGTH": 128, "SELECTION_EXAMPLES": 2,
             "COMPARE_EXAMPLES": 1, "N_EVAL": 4, "N_MT_BENCH": 1, "ANSWER_MAX_TOKENS": 16, "JUDGE_MAX_TOKENS": 16}


def _peak_memory_reset() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_gb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 1024**3, 2) if torch.cuda.is_available() else None


def sft_section(model: str, sizes: dict[str, int]) -> dict[str, Any]:
    """Padding vs packing, bf16 where the device has it (float32 training on a CPU)."""
    from datasets import Dataset

    from helpers.llm.device import best_device, is_accelerator
    from helpers.sft.config import SFTStageConfig
    from helpers.sft.train import prepare_model, train_sft

    device = best_device()
    records = Dataset.from_list(synthetic_records(sizes["examples"]))
    out: dict[str, Any] = {"device": device, "bf16": is_accelerator(device), **sizes}
    for mode in ("padding", "packing"):
        cfg = SFTStageConfig(profile="demo", base_model=model, max_steps=sizes["steps"],
                             per_device_batch_size=sizes["batch"], max_length=sizes["max_length"],
                             packing=mode == "packing", use_lora=False, bf16=is_accelerator(device),
                             learning_rate=1e-5, logging_steps=1, chat_template="alpaca",
                             long_examples="truncate").validate()
        prepared = prepare_model(cfg)
        _peak_memory_reset()
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            outcome = train_sft(cfg, records, None, folder, model_tokenizer=prepared, evaluate_first=False,
                                save_strategy="no", eval_strategy="no", disable_tqdm=True)
            wall = time.perf_counter() - start
        out[mode] = {"tokens_per_s": round(tokens_per_second(outcome), 1), "tokens": outcome.train_tokens,
                     "wall_s": round(wall, 1), "peak_gpu_memory_gb": _peak_memory_gb(),
                     "peak_rss_gb": round(outcome.peak_rss_gb, 2)}
        del prepared, outcome
        from helpers.llm.device import release_accelerator_memory

        release_accelerator_memory()
    out["packing_over_padding"] = round(out["packing"]["tokens_per_s"] / max(out["padding"]["tokens_per_s"], 1e-9), 2)
    return out


def pipeline_section(tiny: bool, runner: Callable[..., Any] | None = None,
                     run_dir: Path | None = None) -> dict[str, Any]:
    """Stages 01-02 make a demo run folder, then stages 03-04 run on it; seconds of each stage, and where the
    manifest says stage 3's answers and stage 4's models ran."""
    from helpers.pipeline import run_pipeline
    from helpers.runs import Run

    runner = runner or run_pipeline
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="bench-gpu-")) / "run"
    params = dict(DEMO_TINY) if tiny else {}
    seconds = {}
    for stages in (["01_extract_skills", "02_generate"], ["03_sft", "04_eval_ablations"]):
        start = time.perf_counter()
        runner(run_dir, params, stages, progress=False)
        seconds["+".join(s[:2] for s in stages)] = round(time.perf_counter() - start, 1)
    manifest = Run(run_dir).manifest().get("stages", {})
    placed = {"sft_answers": manifest.get("sft", {}).get("answers"),
              "evaluate_models": {role: {k: info.get(k) for k in ("device", "dtype", "engine", "engine_version")}
                                  for role, info in manifest.get("evaluate", {}).get("models", {}).items()}}
    return {"run_dir": str(run_dir), "seconds": seconds, "stages_03_04_s": seconds["03+04"], **placed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: runs anywhere (a CPU too) in minutes")
    parser.add_argument("--model", default="gemma-3-270m", help="the student: embedded name or checkpoint folder")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--no-vllm", action="store_true", help="answers by transformers only")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; use {', '.join(SECTIONS)}")
    from helpers.llm.device import best_device

    sizes = TINY if args.tiny else FULL
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "gpu_check", "device": best_device(), "tiny": args.tiny,
                              "machine": platform.machine(), "model": args.model}
    if best_device() == "cuda":
        import torch

        result["gpu"] = torch.cuda.get_device_name(0)
    if "sft" in sections:
        result["sft"] = sft_section(args.model, sizes["sft"])
    if "answers" in sections:
        result["answers"] = compare(args.model, sizes["answers"]["prompts"], sizes["answers"]["max_tokens"],
                                    use_vllm=not args.no_vllm)
    if "pipeline" in sections:
        result["pipeline"] = pipeline_section(args.tiny)
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
