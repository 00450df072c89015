"""Dry run: what a generation run would cost before anything is spent.

Token counts are estimated at ~4 characters per token (no tokenizer is needed for a remote model); the number
of calls is exact for the plan (conditional rewrite turns counted as if always sent). Retries of unparseable
examples are not included: multiply by the expected number of attempts if the teacher often breaks the format.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..llm.accounting import estimate_cost
from .flow import Flow
from .sampling import ExamplePlan
from .shirkers import shirker_count

CHARS_PER_TOKEN = 4.0
TYPICAL_REPLY_TOKENS = 450  # the released GPT-4-Turbo responses average ~300 words


def approx_tokens(text: str) -> int:
    return max(1, round(len(text) / CHARS_PER_TOKEN))


def _conversation_tokens(plan: ExamplePlan, version: Flow, reply_tokens: int) -> tuple[int, int, int]:
    """(calls, input tokens, output tokens) of one conversation if every reply has `reply_tokens` tokens."""
    calls = inp = out = 0
    context = 0 if version.system_prompt is None else approx_tokens(version.system_prompt)
    for text in version.estimate_turns(plan):
        context += approx_tokens(text)
        inp += context
        out += reply_tokens
        context += reply_tokens
        calls += 1
    return calls, inp, out


def estimate_generation(plans: list[ExamplePlan], version: Flow, *, model: str, max_tokens: int,
                        shirker_fraction: float = 0.0, num_train: int | None = None) -> dict[str, Any]:
    """Calls, tokens and cost for a 'typical' run and an upper bound (every reply uses GENERATE_MAX_TOKENS)."""
    num_train = len([p for p in plans if p.split == "train"]) if num_train is None else num_train
    n_shirk = shirker_count(num_train, shirker_fraction)
    out: dict[str, Any] = {"model": model, "conversations": len(plans), "turns_per_conversation": version.num_turns,
                           "shirker_calls": n_shirk}
    for label, reply in (("typical", min(max_tokens, TYPICAL_REPLY_TOKENS)), ("upper_bound", max_tokens)):
        calls = inp = outp = 0
        for plan in plans:
            c, i, o = _conversation_tokens(plan, version, reply)
            calls, inp, outp = calls + c, inp + i, outp + o
        avg_instruction = 60  # words; shirker prompts carry only the instruction
        inp += n_shirk * (approx_tokens(version.shirker_prompt()) + avg_instruction * 4 // 3)
        outp += n_shirk * reply
        calls += n_shirk
        cost = estimate_cost(model, inp, outp)
        out[label] = {"calls": calls, "input_tokens": inp, "output_tokens": outp,
                      "cost_usd": None if cost is None else round(cost, 2)}
    for label in ("typical", "upper_bound"):
        batch = batch_estimate(out, label)
        out[label].update(batch_cost_usd=batch["batch_cost_usd"], batch_rounds=batch["rounds"])
    return out


def batch_estimate(estimate: dict[str, Any], scenario: str = "typical") -> dict[str, Any]:
    """Live vs Batch API cost of one scenario of the estimate, and the batch rounds it needs.

    A conversation sends one turn per round (each waits for the previous reply), and the shirker answers need the
    finished instructions, so: one round per turn, plus one for shirkers. Each round waits for its batch (minutes
    to the 24-hour window); examples retried because the reply did not parse, and failed lines, add rounds.
    """
    row = estimate[scenario]
    batch_cost = estimate_cost(estimate["model"], row["input_tokens"], row["output_tokens"], batch=True)
    return {"live_cost_usd": row["cost_usd"], "batch_cost_usd": None if batch_cost is None else round(batch_cost, 2),
            "rounds": int(estimate["turns_per_conversation"]) + (1 if estimate.get("shirker_calls") else 0)}


def estimate_table(estimate: dict[str, Any]):
    """The estimate as a small table: one row per scenario."""
    return pd.DataFrame({k: estimate[k] for k in ("typical", "upper_bound")}).T
