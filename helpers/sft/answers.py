"""Answer held-out instructions with a (fine-tuned or base) model through the SFT chat template.

Used for checkpoint selection, the base-vs-fine-tuned comparison and `eos_stop_rate`. It calls transformers
directly, in batches, instead of going through `helpers.llm.client`: checkpoints of a LoRA run live only in memory once
merged, and the stop reason (end-of-turn token vs length limit) is needed exactly. The prompt is rendered and
tokenised the same way `helpers.llm.client`'s local backend does (template text, no extra special tokens, left padding,
greedy decoding), so a saved model answers the same way when stage 4 reaches it through `connect(model=<folder>)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..progress import progress_bar
from .templates import render_prompt


@dataclass
class Answer:
    text: str
    stopped: bool  # True when the model emitted a stop token itself (False: cut at max_new_tokens)
    new_tokens: int


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    found.discard(None)
    return found


def generate_answers(model: Any, tokenizer: Any, instructions: list[str], max_new_tokens: int = 256,
                     batch_size: int = 8, desc: str = "answering") -> list[Answer]:
    """Greedy answers to single-turn instructions, in the input order."""
    import torch

    stops = stop_token_ids(model, tokenizer)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: list[Answer] = []
    model.eval()
    try:
        for start in progress_bar(range(0, len(instructions), batch_size), desc=desc, leave=False):
            batch = instructions[start:start + batch_size]
            prompts = [render_prompt(tokenizer, [{"role": "user", "content": text}]) for text in batch]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=sorted(stops), pad_token_id=tokenizer.pad_token_id)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                kept, stopped = [], False
                for token in row:
                    if token in stops:
                        stopped = True
                        break
                    kept.append(token)
                answers.append(Answer(tokenizer.decode(kept, skip_special_tokens=True).strip(), stopped, len(kept)))
    finally:
        tokenizer.padding_side = old_side
    return answers


def eos_stop_rate(answers: list[Answer]) -> float:
    """Fraction of answers that ended because the model produced its end-of-turn token."""
    return sum(a.stopped for a in answers) / len(answers) if answers else 0.0


def load_for_generation(folder: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """A saved SFT model (full weights, tokenizer carrying its chat template) ready to answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    return model, tokenizer
