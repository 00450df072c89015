"""Shirkers: training examples that keep their instruction but get a deliberately poor response.

The paper shows that a small share of such examples (20 %) hurts the fine-tuned model a lot. The subset is chosen
from SEED by ranking example ids with a seeded hash, so it is reproducible and NESTED: the 10 % set is inside the
20 % set for the same data. The poor answer is a separate single-turn teacher call that sees only the instruction;
the good answers stay in the call cache, so a sweep over fractions pays only for shirker answers it has not seen.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .parse import strip_wrapping
from .prompt_versions import shirker_messages
from ..llm.types import Message


def shirker_rank(example_id: str, seed: int) -> str:
    return hashlib.sha256(f"shirker:{seed}:{example_id}".encode()).hexdigest()


def shirker_count(num_examples: int, fraction: float) -> int:
    """round(fraction * n), so 20 % of 1000 is exactly 200."""
    return int(round(fraction * num_examples + 1e-9))


def choose_shirkers(example_ids: list[str], fraction: float, seed: int) -> list[str]:
    """The ids that become shirkers: the first round(fraction*n) ids in seeded-hash order (nested across fractions)."""
    ranked = sorted(example_ids, key=lambda eid: shirker_rank(eid, seed))
    return ranked[:shirker_count(len(example_ids), fraction)]


@dataclass
class ShirkerStats:
    requested: int = 0
    made: int = 0
    failed: list[str] = field(default_factory=list)  # ids whose poor answer could not be obtained (kept good)

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "made": self.made, "failed": len(self.failed)}


def make_shirkers(client: Any, examples: list[dict[str, Any]], *, fraction: float, kind: str, seed: int,
                  max_attempts: int = 3, chosen_ids: list[str] | None = None,
                  messages_fn: Callable[[str], list[Message]] | None = None,
                  clean_fn: Callable[[str], str] = strip_wrapping,
                  **sampling: Any) -> tuple[list[dict[str, Any]], ShirkerStats]:
    """Return the examples with the chosen ones' `output` replaced (and `shirker` set to the kind).

    `chosen_ids`, `messages_fn(instruction)` and `clean_fn(reply)` replace the kit's choice (seeded hash), request
    and clean-up (e.g. by the official rules). A poor answer that fails or comes back empty is asked again with a
    new salt, up to `max_attempts`; if it still fails the example keeps its good answer and is listed in
    `stats.failed`.
    """
    chosen = set(chosen_ids if chosen_ids is not None
                 else choose_shirkers([ex["example_id"] for ex in examples], fraction, seed))
    ask = messages_fn or (lambda instruction: shirker_messages(instruction, kind))
    stats = ShirkerStats(requested=len(chosen))
    out = [dict(ex, shirker=None) for ex in examples]
    todo = [i for i, ex in enumerate(out) if ex["example_id"] in chosen]
    for attempt in range(1, max_attempts + 1):
        if not todo:
            break
        requests = [ask(out[i]["instruction"]) for i in todo]
        salts = [f"shirker-attempt-{attempt}" if attempt > 1 else "" for _ in todo]
        results = client.chat_many(requests, desc=f"{kind} answers", salts=salts, **sampling)
        retry = []
        for i, res in zip(todo, results):
            text = clean_fn(res.text) if res.ok else ""
            if not text:
                retry.append(i)
                continue
            ex = out[i]
            ex.update(good_output=ex["output"], output=text, shirker=kind,
                      input_tokens=ex.get("input_tokens", 0) + res.input_tokens,
                      output_tokens=ex.get("output_tokens", 0) + res.output_tokens,
                      shirker_transcript=requests[todo.index(i)] + [{"role": "assistant", "content": res.text}])
            stats.made += 1
        todo = retry
    stats.failed = [out[i]["example_id"] for i in todo]
    return out, stats
