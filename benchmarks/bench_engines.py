"""Answer throughput of the two engines of in-process models, side by side on the same prompts: transformers' batched
`generate` (the kit's `generate_batch`, on this machine's best device, batch by device) and vLLM (a server the kit
starts, `LOCAL_ENGINE='vllm'`), greedy, on the embedded student by default.

Prints one JSON object: output tokens/s of each engine, their ratio, how many answers agree, and vLLM's start-up
time (paid once per model, not per request, and not in its tokens/s). Without vLLM (`make setup-vllm`) only the
transformers figures are printed.

    python benchmarks/bench_engines.py [--model gemma-3-270m --prompts 32 --max-tokens 128 --no-vllm]

On a shared machine compare the ratio within one run, never absolute times of two runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.jsonl import read_jsonl  # noqa: E402
from helpers.layout import BUNDLED_EVAL_SET  # noqa: E402


def plain_prompts(n: int) -> list[str]:
    """Instructions of the bundled eval set as plain text (a base model has no chat template), repeated up to n."""
    instructions = [row["instruction"] for row in read_jsonl(BUNDLED_EVAL_SET)]
    return [f"Instruction: {instructions[i % len(instructions)]}\nAnswer:" for i in range(n)]


def transformers_throughput(model: str, prompts: list[str], max_tokens: int, dtype: str = "auto") -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.llm.device import batch_size_for, best_device, describe_placement, place, resolve_dtype
    from helpers.llm.generation import generate_batch
    from helpers.llm.models import resolve_model_path

    device = best_device()
    dtype = resolve_dtype(dtype, device)
    path = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded = place(AutoModelForCausalLM.from_pretrained(path, dtype=dtype), device)
    batch = batch_size_for(device)
    start = time.perf_counter()
    rows = []
    for i in range(0, len(prompts), batch):
        rows += generate_batch(loaded, tokenizer, prompts[i:i + batch], max_tokens, add_special_tokens=True)
    seconds = time.perf_counter() - start
    tokens = sum(r.output_tokens for r in rows)
    del loaded
    return {**describe_placement(device, dtype), "batch_size": batch, "output_tokens": tokens,
            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "texts": [r.text for r in rows]}


def vllm_throughput(model: str, prompts: list[str], max_tokens: int, dtype: str = "auto") -> dict | None:
    from helpers.llm.device import best_device, resolve_dtype
    from helpers.llm.models import resolve_model_path
    from helpers.llm.vllm_backend import stop_ids_of
    from helpers.llm.vllm_engine import EngineSpec, complete_prompts, engine_for, find_vllm_python, stop_engines, vllm_version

    python = find_vllm_python()
    if python is None:
        return None
    device = best_device()
    dtype = resolve_dtype(dtype, device)
    path = resolve_model_path(model)
    started = time.perf_counter()
    server = engine_for(EngineSpec(path, dtype, device))
    start_seconds = time.perf_counter() - started
    try:
        start = time.perf_counter()
        done = complete_prompts(server, prompts, [{"max_tokens": max_tokens, "temperature": 0.0}] * len(prompts),
                                add_special_tokens=True, stop_ids=stop_ids_of(path), concurrency=len(prompts))
        seconds = time.perf_counter() - start
    finally:
        stop_engines()
    tokens = sum(c.output_tokens for c in done)
    return {"device": device, "dtype": dtype, "engine_version": vllm_version(python), "output_tokens": tokens,
            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "start_seconds": round(start_seconds, 1), "texts": [c.text for c in done]}


def compare(model: str, n_prompts: int, max_tokens: int, use_vllm: bool = True) -> dict:
    """Both engines on the same prompts; the answers themselves are left out of the result (only their agreement)."""
    prompts = plain_prompts(n_prompts)
    hf = transformers_throughput(model, prompts, max_tokens)
    vl = vllm_throughput(model, prompts, max_tokens) if use_vllm else None
    out: dict = {"model": model, "prompts": n_prompts, "max_tokens": max_tokens,
                 "transformers": {k: v for k, v in hf.items() if k != "texts"}}
    if vl is None:
        out["vllm"] = "not run (vLLM not installed: make setup-vllm)" if use_vllm else "not run (--no-vllm)"
        return out
    out["vllm"] = {k: v for k, v in vl.items() if k != "texts"}
    out["vllm_over_transformers"] = round(vl["tokens_per_s"] / max(hf["tokens_per_s"], 1e-9), 2)
    out["identical_answers"] = sum(a.strip() == b.strip() for a, b in zip(hf["texts"], vl["texts"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m", help="embedded name or checkpoint folder")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--no-vllm", action="store_true", help="transformers only")
    args = parser.parse_args(argv)
    result = compare(args.model, args.prompts, args.max_tokens, use_vllm=not args.no_vllm)
    print(json.dumps({"benchmark": "answer_engines", "machine": platform.machine(), **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
