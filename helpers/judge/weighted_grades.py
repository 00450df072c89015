"""Probability-weighted grades, read the way G-Eval does (Liu et al. 2023), for replies where a judge wrote no grade.

G-Eval scores with the judge's probabilities over the valid score tokens at the place where the score is written:
grade = sum_g g * p(g), the probabilities normalised over the valid grades. A small judge (the embedded 135M
model) explains but seldom writes MT-Bench's `[[rating]]` or WildBench's `"score"`; continuing its OWN reply with the
judge's rating prefix (`rating_prefix` in the judge's config.yaml, e.g. `Rating: [[`) and reading the next-token
distribution gives a grade from what it wrote, instead of no grade at all.

Such a grade is a different measurement from a written one: rows say `grade_source: probability-weighted`, the
grade sits in its own column (`weighted_score`), and every summary of it is a separate, labelled number. Parsed
grades are never replaced, and a judge whose grades were all written gets no weighted grade. Only backends that
continue a trailing assistant message (the in-process model, `continues_final_message`) are asked: a served judge
would answer such a request anew, so its replies stay as they are.

Two-digit grades: with per-digit tokenizers "10" starts like "1", so a second one-token request after "<prefix>1"
splits them: p(10) = p("1") * p("0" | "1") and p(1) = p("1") * (1 - p("0" | "1")).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..llm.types import Message
from .judging import Judge, Rating, load_judge, rate_answers, rating_requests

GRADE_SOURCE_PARSED = "parsed"
GRADE_SOURCE_WEIGHTED = "probability-weighted"
WEIGHTED_LABEL = ("probability-weighted (G-Eval): the judge's probabilities over the grades after its rating prefix, "
                  "where it wrote no grade")
TOP_LOGPROBS = 20  # alternatives read at the grade's position; grades outside them count as probability 0
MIN_GRADE_MASS = 0.5  # below this the judge did not mean a number there: no grade
SEPARATOR = "\n\n"  # between the judge's own reply and the rating prefix
SAMPLING = {"max_tokens": 1, "temperature": 0.0, "top_logprobs": TOP_LOGPROBS}
GRADE_FIELDS = ("grade_source", "weighted_score", "weighted_mass")  # the columns a graded row adds (`grade_fields`)


@dataclass(frozen=True)
class WeightedGrade:
    value: float  # sum of grade x probability, normalised over the valid grades
    mass: float  # the probability the judge put on any valid grade there (before normalising)
    probabilities: dict[int, float]  # normalised, grades with probability 0 left out


def can_weigh(client: Any) -> bool:
    """Whether the client's backend continues a trailing assistant message (see the module docstring)."""
    return bool(getattr(getattr(client, "backend", None), "continues_final_message", False))


def continuation(request: Sequence[Message], reply: str, prefix: str) -> list[Message]:
    """The judge's request followed by its own reply and the rating prefix, as an assistant message to continue."""
    head = f"{reply.rstrip()}{SEPARATOR}" if reply.strip() else ""
    return [dict(m) for m in request] + [{"role": "assistant", "content": f"{head}{prefix}"}]


def _grades(judge: Judge) -> list[int]:
    low, high = judge.rating_range
    return list(range(math.ceil(low), math.floor(high) + 1))


def token_probabilities(step: dict[str, float], wanted: Sequence[str]) -> dict[str, float]:
    """Probability of each wanted string at one step; variants with spaces around them (" 7") are summed."""
    out = {w: 0.0 for w in wanted}
    for token, logprob in step.items():
        if token.strip() in out:
            out[token.strip()] += math.exp(logprob)
    return out


def grade_probabilities(first: dict[str, float], after: dict[str, dict[str, float]], grades: Sequence[int]
                        ) -> dict[int, float]:
    """Unnormalised p(grade) from the first step's alternatives and, for each first digit of a two-digit grade,
    the step after that digit (`after[digit]`; missing: the digit stands for a one-digit grade only)."""
    texts = [str(g) for g in grades]
    firsts = token_probabilities(first, texts + sorted({t[0] for t in texts if len(t) > 1}))
    probs = {g: firsts.get(str(g), 0.0) for g in grades}  # whole-grade tokens ("7", or "10" as one token)
    for digit, step in after.items():
        seconds = {g: token_probabilities(step, [str(g)[1:]])[str(g)[1:]] for g in grades
                   if len(str(g)) == 2 and str(g)[0] == digit}
        p_digit = firsts.get(digit, 0.0)
        for g, p_second in seconds.items():
            probs[g] += p_digit * p_second
        if int(digit) in probs:
            probs[int(digit)] = p_digit * max(0.0, 1.0 - sum(seconds.values()))
    return probs


def weighted_grade(probs: dict[int, float]) -> WeightedGrade | None:
    mass = sum(probs.values())
    if mass < MIN_GRADE_MASS:
        return None
    normalised = {g: p / mass for g, p in probs.items() if p > 0}
    return WeightedGrade(sum(g * p for g, p in normalised.items()), mass, normalised)


def weighted_grades(judge_client: Any, requests: Sequence[Sequence[Message]], ratings: Sequence[Rating],
                    judge: Judge, desc: str = "weighted grades") -> list[WeightedGrade | None]:
    """For each reply that holds no readable grade, the probability-weighted grade; None for the others (a parsed
    grade, a failed call) and where nothing can be read (no prefix, a backend that cannot continue, little
    probability on the grades)."""
    out: list[WeightedGrade | None] = [None] * len(ratings)
    todo = [i for i, r in enumerate(ratings) if r.score is None and r.error is None]
    if not todo or not judge.rating_prefix or not can_weigh(judge_client):
        return out
    grades = _grades(judge)
    openers = sorted({str(g)[0] for g in grades if len(str(g)) == 2})
    asks = [continuation(requests[i], ratings[i].judge_text, judge.rating_prefix) for i in todo]
    firsts = judge_client.chat_many(asks, desc=desc, **SAMPLING)
    seconds: dict[str, dict[int, Any]] = {}
    for digit in openers:  # e.g. "1" opens "10": what follows it splits p("1") between 1 and 10
        need = [k for k, res in enumerate(firsts)
                if res.ok and res.top_logprobs and token_probabilities(res.top_logprobs[0], [digit])[digit] > 0]
        follow = [asks[k][:-1] + [{"role": "assistant", "content": asks[k][-1]["content"] + digit}] for k in need]
        results = judge_client.chat_many(follow, desc=f"{desc} ({digit}x)", **SAMPLING) if follow else []
        seconds[digit] = dict(zip(need, results))
    for k, i in enumerate(todo):
        first = firsts[k]
        if not first.ok or not first.top_logprobs:
            continue
        after = {d: res[k].top_logprobs[0] for d, res in seconds.items()
                 if k in res and res[k].ok and res[k].top_logprobs}
        out[i] = weighted_grade(grade_probabilities(first.top_logprobs[0], after, grades))
    return out


def grade_fields(rating: Rating, weighted: WeightedGrade | None) -> dict[str, Any]:
    """Where a row's grade came from ('parsed', 'probability-weighted' or None), and the weighted grade with the
    probability the judge put on the grades there (None where the judge wrote its grade)."""
    source = GRADE_SOURCE_PARSED if rating.score is not None else (
        GRADE_SOURCE_WEIGHTED if weighted is not None else None)
    return {"grade_source": source, "weighted_score": None if weighted is None else weighted.value,
            "weighted_mass": None if weighted is None else weighted.mass}


def rate_with_weighted_grades(judge_client: Any, items: Sequence[dict[str, Any]], judge: str | Judge,
                              desc: str = "grading") -> tuple[list[Rating], list[WeightedGrade | None]]:
    """`rate_answers`, then a probability-weighted grade for each reply it could not read (see above)."""
    judge = judge if isinstance(judge, Judge) else load_judge(judge)
    ratings = rate_answers(judge_client, items, judge, desc=desc)
    if not judge.rating_prefix or not can_weigh(judge_client):
        return ratings, [None] * len(ratings)
    return ratings, weighted_grades(judge_client, rating_requests(items, judge), ratings, judge,
                                    desc=f"{desc} (weighted)")
