"""Drawing the generation plan: which k skills and which query type each example combines.

The plan is a pure function of the skill list, the query types and a seed, so the same SEED always asks the teacher
the same questions (and therefore hits the call cache on a re-run). Skills are drawn uniformly without replacement
within an example; query types are spread evenly (the list is repeated, shuffled and cut, as the official code does)
so every type gets its share even in a small run.
"""
from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExamplePlan:
    """What one example must combine. `seed` is the split's seed, kept for provenance."""

    example_id: str
    split: str
    index: int
    skills: tuple[str, ...]
    query_type: dict[str, Any] = field(hash=False, compare=False)
    seed: int = 0

    @property
    def skills_joined_str(self) -> str:
        return ", ".join(self.skills)

    @property
    def pair_key(self) -> tuple[str, ...]:
        """The skill combination regardless of order."""
        return tuple(sorted(self.skills))


def repeat_salts(plans: list[ExamplePlan]) -> dict[str, str]:
    """A cache salt for each plan that repeats an earlier plan's prompt (same skills in the same order, same query
    type): "" for the first, "repeat-1", "repeat-2", ... after it. Two examples with the same prompt are two samples
    of the teacher, as two API calls are: without the salt they would share one cache entry (and, in-process, one
    seeded draw) and the second would come back as an exact duplicate of the first."""
    seen: dict[tuple[Any, ...], int] = {}
    salts = {}
    for plan in plans:
        key = (tuple(plan.skills), plan.query_type.get("name"))
        salts[plan.example_id] = f"repeat-{seen[key]}" if key in seen else ""
        seen[key] = seen.get(key, 0) + 1
    return salts


def attempt_salt(repeat: str, attempt: int) -> str:
    """The salt of one try of one example: its repeat salt, and "attempt-N" from the second try on."""
    return "/".join(part for part in (repeat, f"attempt-{attempt}" if attempt > 1 else "") if part)


def derive_seed(seed: int, purpose: str) -> int:
    """A second, independent seed from SEED (used for the held-out set), stable across Python versions."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).hexdigest()
    return int(digest[:8], 16)


def unique_skills(skills: list[str]) -> list[str]:
    """Released skill lists contain duplicate lines; draw from the distinct skills so each is equally likely."""
    return list(dict.fromkeys(s.strip() for s in skills if s and s.strip()))


def draw_plan(skills: list[str], query_types: list[dict[str, Any]], num_examples: int, k: int, seed: int,
              split: str = "train") -> list[ExamplePlan]:
    """`num_examples` plans: k distinct skills (in random order) and one query type each."""
    pool = unique_skills(skills)
    if k > len(pool):
        raise ValueError(f"cannot draw {k} distinct skills from {len(pool)}")
    if num_examples and not query_types:
        raise ValueError("no query types to draw from")
    rng = random.Random(seed)
    combos = [tuple(rng.sample(pool, k)) for _ in range(num_examples)]
    types = list(query_types) * max(1, math.ceil(num_examples / max(1, len(query_types))))
    rng.shuffle(types)
    return [
        ExamplePlan(f"{split}-{i:05d}", split, i, combos[i], dict(types[i]), seed)
        for i in range(num_examples)
    ]


def repeated_pairs(plans: list[ExamplePlan]) -> int:
    """How many examples reuse a skill combination that an earlier example already has."""
    counts = Counter(p.pair_key for p in plans)
    return sum(c - 1 for c in counts.values())


def pair_report(train: list[ExamplePlan], heldout: list[ExamplePlan]) -> dict[str, int]:
    """Repeats within each split and combinations shared between them (a held-out set should test new mixes)."""
    shared = {p.pair_key for p in train} & {p.pair_key for p in heldout}
    return {
        "train": repeated_pairs(train),
        "heldout": repeated_pairs(heldout),
        "shared_train_heldout": len(shared),
    }


def possible_pairs(num_skills: int, k: int) -> int:
    return math.comb(num_skills, k)
