"""Answer held-out instructions with a (fine-tuned or base) model through the SFT chat template.

Used for checkpoint selection, the base-vs-fine-tuned comparison and `eos_stop_rate`. With LOCAL_ENGINE resolving
to 'transformers' it runs the model in this process with `helpers.llm.generation.generate_batch` (the local
backend's own decoding, so a saved model answers the same way when stage 4 reaches it through
`connect(model=<folder>)`); with 'vllm' a vLLM engine serves the checkpoint folder and `engine_answers` sends it the
same rendered prompts with the same stop tokens. Neither goes through `ChatClient`: the stop reason is needed per
answer, and checkpoint folders of different runs share names (`checkpoint-40`), so their answers must never come
from the shared call cache.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..llm.generation import generate_batch, row_seed
from ..llm.meter import TokenMeter
from ..llm.vllm_backend import stop_ids_of
from ..llm.vllm_engine import EngineSpec, complete_prompts, engine_for
from ..phases import timed
from ..progress import live_description, progress_bar
from .templates import render_prompt


@dataclass
class Answer:
    text: str
    stopped: bool  # True when the model emitted a stop token itself (False: cut at max_new_tokens)
    new_tokens: int  # the answer's tokens, the stop token excluded


def generate_answers(model: Any, tokenizer: Any, instructions: list[str], max_new_tokens: int = 256,
                     batch_size: int = 8, desc: str = "answering", temperature: float = 0.0, top_p: float = 1.0,
                     seed: int = 0, prompt_fn: Callable[[str], str] | None = None) -> list[Answer]:
    """Answers to single-turn instructions, in the input order: greedy, or sampled (seeded) when temperature > 0.

    `prompt_fn(instruction)` replaces the chat template with a plain-text prompt, tokenised with the tokenizer's
    own special tokens (BOS), as a completion server such as vLLM tokenises a raw prompt.
    """
    answers: list[Answer] = []
    meter = TokenMeter()  # the bar moves per batch; the tokens show that a long batch is working
    bar = progress_bar(range(0, len(instructions), batch_size), desc=desc, leave=False)
    with live_description(bar, lambda: " · ".join(filter(None, (desc, meter.note())))):
        for start in bar:
            prompts = _prompts(tokenizer, instructions[start:start + batch_size], prompt_fn)
            with timed(desc, rows=len(prompts)) as counts:
                rows = generate_batch(model, tokenizer, prompts, max_new_tokens, temperature=temperature, top_p=top_p,
                                      seed=seed + start if temperature > 0 else None,
                                      add_special_tokens=prompt_fn is not None, meter=meter)
                counts.update(tokens=sum(r.output_tokens for r in rows), prompt_tokens=sum(r.input_tokens for r in rows),
                              decode_steps=max((r.output_tokens for r in rows), default=0))
            answers.extend(Answer(row.text.strip(), row.stopped, len(row.token_ids)) for row in rows)
    return answers


def _prompts(tokenizer: Any, instructions: list[str], prompt_fn: Callable[[str], str] | None) -> list[str]:
    if prompt_fn is None:
        return [render_prompt(tokenizer, [{"role": "user", "content": text}]) for text in instructions]
    return [prompt_fn(text) for text in instructions]


def engine_answers(folder: str, instructions: list[str], max_new_tokens: int = 256, desc: str = "answering",
                   temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                   prompt_fn: Callable[[str], str] | None = None, dtype: str = "float32", device: str = "cpu",
                   tokenizer: Any = None, stop_ids: list[int] | None = None) -> list[Answer]:
    """`generate_answers` through a vLLM engine serving `folder`: the same prompts (rendered here by `tokenizer`,
    the folder's own by default), the same stop tokens (`stop_ids`, the folder's by default), one seed per prompt."""
    from transformers import AutoTokenizer  # heavy: only where a model answers

    tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(folder)
    prompts = _prompts(tokenizer, instructions, prompt_fn)
    server = engine_for(EngineSpec(str(folder), dtype, device))
    sampling = [{"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                 **({"seed": row_seed(p, seed)} if temperature > 0 else {})} for p in prompts]
    done = complete_prompts(server, prompts, sampling, add_special_tokens=prompt_fn is not None,
                            stop_ids=stop_ids if stop_ids is not None else stop_ids_of(str(folder)), desc=desc)
    return [Answer(c.text.strip(), c.stopped, c.output_tokens - int(c.stopped)) for c in done]


def eos_stop_rate(answers: list[Answer]) -> float:
    """Fraction of answers that ended because the model produced its end-of-turn token."""
    return sum(a.stopped for a in answers) / len(answers) if answers else 0.0


def load_for_generation(folder: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """A saved SFT model (full weights, tokenizer carrying its chat template) ready to answer."""
    # heavy: transformers is imported only when a model is loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with timed(f"load {Path(folder).name}"):
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    return model, tokenizer
