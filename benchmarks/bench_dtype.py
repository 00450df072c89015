"""The embedded models in float32 and in bfloat16 on this machine: load, prefill and decoding rate, in one run.

    python benchmarks/bench_dtype.py [--batch 16 --prompt-tokens 120 --new-tokens 24 --threads 1 --repeats 1]

Why: `LOCAL_DTYPE='auto'` picks bfloat16 on a CPU only where the CPU computes it natively (AMX or AVX512-BF16,
`helpers.llm.device.cpu_has_native_bf16`); this measures whether that is the faster precision for each embedded model
at the demo's CPU batch. Each model is loaded in both precisions and, for each repeat, timed in turn (float32, then
bfloat16), so the load of a shared machine falls on both alike; compare the ratios. Decoding is greedy with a fixed
number of new tokens (`min_new_tokens`), so both precisions take the same number of steps: the decoding rate is the
rows times the steps after the first, over the time they add to a one-token generation (the prefill).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from helpers.llm.device import CPU_BATCH_SIZE, cpu_has_native_bf16
from helpers.llm.models import EMBEDDED_STUDENT, EMBEDDED_TEACHER, resolve_model_path

DTYPES = ("float32", "bfloat16")


def load(name: str, dtype: str) -> tuple[Any, Any, float]:
    """Tokenizer, model (eval mode) and the seconds loading the model took."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    seconds = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer, model, seconds


def generate_seconds(tokenizer: Any, model: Any, inputs: dict, new_tokens: int) -> float:
    """Wall seconds of a greedy generation of exactly `new_tokens` per row."""
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id)
    return time.perf_counter() - start


def time_model(tokenizer: Any, model: Any, batch: int, prompt_tokens: int, new_tokens: int) -> dict:
    """Prefill seconds (a one-token generation) and decoding tokens/s at `batch` rows."""
    ids = list(range(1000, 1000 + prompt_tokens))
    text = tokenizer.decode(ids)
    inputs = tokenizer([text] * batch, return_tensors="pt", padding=True)
    generate_seconds(tokenizer, model, inputs, 2)  # warm-up: first-call costs fall on neither figure
    prefill = generate_seconds(tokenizer, model, inputs, 1)
    total = generate_seconds(tokenizer, model, inputs, new_tokens)
    decode = max(total - prefill, 1e-9)
    steps = new_tokens - 1
    return {"prefill_s": round(prefill, 3), "decode_s": round(decode, 3), "decode_steps_per_s": round(steps / decode, 3),
            "decode_tokens_per_s": round(batch * steps / decode, 2)}


def bench_model(name: str, args: argparse.Namespace) -> dict:
    """Both precisions of one model, loaded once each and timed in turn per repeat."""
    loaded = {dtype: load(name, dtype) for dtype in DTYPES}
    out: dict[str, Any] = {dtype: {"load_s": round(loaded[dtype][2], 2), "runs": []} for dtype in DTYPES}
    for _ in range(args.repeats):
        for dtype in DTYPES:
            tokenizer, model, _ = loaded[dtype]
            out[dtype]["runs"].append(time_model(tokenizer, model, args.batch, args.prompt_tokens, args.new_tokens))
    best = {dtype: max(r["decode_tokens_per_s"] for r in out[dtype]["runs"]) for dtype in DTYPES}
    out["bf16_decode_speedup"] = round(best["bfloat16"] / best["float32"], 2)
    prefill = {dtype: min(r["prefill_s"] for r in out[dtype]["runs"]) for dtype in DTYPES}
    out["bf16_prefill_speedup"] = round(prefill["float32"] / prefill["bfloat16"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=CPU_BATCH_SIZE, help="rows per generation (the CPU batch)")
    ap.add_argument("--prompt-tokens", type=int, default=120, help="tokens per prompt row")
    ap.add_argument("--new-tokens", type=int, default=24, help="tokens generated per row")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="timings per precision, alternating")
    args = ap.parse_args()

    import torch  # heavy: imported after argument parsing so --help stays quick

    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(),
              "batch": args.batch, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
              "models": {name: bench_model(name, args) for name in (EMBEDDED_TEACHER, EMBEDDED_STUDENT)}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
