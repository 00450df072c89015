"""One batched `generate` for every in-process model: the local backend's replies and stage 3's held-out answers.

Both must decode the same way, or a checkpoint chosen in stage 3 would answer differently when stage 4 reaches it
through `connect(model=<folder>)`: prompts rendered by the caller (chat template text, no extra special tokens), left
padding, the pad token falling back to the end-of-sequence token, and generation stopping at ANY of the model's stop
tokens (the generation config's and the tokenizer's end-of-sequence, which an SFT template may have changed).

What one row yields (`Generated`): the answer's tokens up to, not including, the first stop token; whether the model
stopped by itself (`stopped`, False when it hit `max_new_tokens`); and `output_tokens`, the tokens generated
including that stop token (what an OpenAI-compatible server counts as completion tokens).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Generated:
    text: str  # decoded answer, special tokens skipped (not stripped: a caller may still cut at stop strings)
    token_ids: list[int]  # answer tokens, the stop token excluded
    stopped: bool  # True: the model emitted a stop token; False: cut at max_new_tokens
    input_tokens: int  # prompt tokens (padding excluded)
    top_logprobs: list[dict[str, float]] | None = field(default=None)  # first steps' alternatives, if asked

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids) + int(self.stopped)


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends an answer: the generation config's end-of-sequence id(s) and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids])
    found.add(tokenizer.eos_token_id)
    found.discard(None)
    return found


@contextmanager
def left_padded(tokenizer: Any) -> Iterator[Any]:
    """Left padding and a pad token for the duration of a batch; the tokenizer is restored afterwards."""
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if pad is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


def generate_batch(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, temperature: float = 0.0,
                   top_p: float = 1.0, seed: int | None = None, top_logprobs: int = 0,
                   add_special_tokens: bool = False) -> list[Generated]:
    """Continue each rendered prompt; greedy at temperature 0, nucleus sampling (no top-k) above it.

    `add_special_tokens=True` is for plain-text prompts (not rendered by a chat template): the tokenizer adds its
    own BOS, as a completion server tokenises a raw prompt.
    """
    import torch  # heavy: only processes that run a model in-process pay for importing it

    stops = stop_token_ids(model, tokenizer)
    with left_padded(tokenizer):
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(model.device)
        pad_id = tokenizer.pad_token_id
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens, "do_sample": temperature > 0, "eos_token_id": sorted(stops),
        "pad_token_id": pad_id, "return_dict_in_generate": True, "output_logits": bool(top_logprobs),
    }
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)  # greedy: silence the sampling defaults
    model.eval()
    with torch.inference_mode():
        if seed is not None:
            torch.manual_seed(int(seed))
        out = model.generate(**enc, **kwargs)
    prompt_len = enc["input_ids"].shape[1]
    results = []
    for row in range(len(prompts)):
        new_ids = out.sequences[row, prompt_len:].tolist()
        kept, stopped = new_ids, False
        for i, token in enumerate(new_ids):
            if token in stops:
                kept, stopped = new_ids[:i], True
                break
        top = None
        if top_logprobs:
            top = []
            for step in out.logits[: min(5, len(kept) + int(stopped))]:
                values, idx = torch.log_softmax(step[row].float(), dim=-1).topk(top_logprobs)
                top.append({tokenizer.decode([int(i)]): float(v) for v, i in zip(values, idx)})
        results.append(Generated(tokenizer.decode(kept, skip_special_tokens=True), kept, stopped,
                                 int(enc["attention_mask"][row].sum()), top))
    return results
