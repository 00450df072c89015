"""The kit judges' protocols end to end for several models at once: MT-Bench two-turn grading, WildBench checklist
scoring, and a cheap shirker-response probe (pairwise judging against reference outputs is `pairwise.py`).

Every function takes an already-connected judge client, so the judge model is whatever the notebook's `JUDGE_*`
parameters say and every call is cached and accounted by the LLM layer.
"""
from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..judge.judging import Judge, load_judge
from ..judge.weighted_grades import GRADE_FIELDS, grade_fields, rate_with_weighted_grades
from .pairwise import pairwise_table

SHIRKER_KINDS = ("brevity", "junk")


def mt_bench_scores(judge_client: Any, questions: Sequence[dict[str, Any]],
                    answers_by_model: Mapping[str, Sequence[dict[str, Any]]], judge: str | Judge = "mt_bench_single",
                    reference_judge: str | Judge = "mt_bench_single_reference") -> pd.DataFrame:
    """Rows (model, question_id, category, turn, score, judge, grade_source, weighted_score): turn 1 graded alone,
    turn 2 in the context of turn 1; questions with reference solutions (math, reasoning, coding) go to the
    reference-guided judge. `score` is the grade the judge wrote; where it wrote none, an in-process judge's
    probability-weighted grade is in `weighted_score` (judge/weighted_grades.py), never in `score`."""
    plain = judge if isinstance(judge, Judge) else load_judge(judge)
    guided = reference_judge if isinstance(reference_judge, Judge) else load_judge(reference_judge)
    rows = []
    for model, answers in answers_by_model.items():
        jobs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {"plain": [], "guided": []}
        for q, a in zip(questions, answers):
            refs = list(q.get("references") or []) + ["", ""]
            kind = "guided" if q.get("needs_reference") else "plain"
            base = {"question_id": q["id"], "category": q["category"]}
            jobs[kind].append(({**base, "turn": 1}, {"question": q["turns"][0], "answer": a["answers"][0],
                                                      "reference": refs[0]}))
            if len(q["turns"]) > 1:
                jobs[kind].append(({**base, "turn": 2}, {
                    "question_1": q["turns"][0], "answer_1": a["answers"][0], "question_2": q["turns"][1],
                    "answer_2": a["answers"][1], "reference_1": refs[0], "reference_2": refs[1], "turn": 2}))
        for kind, judge_obj in (("plain", plain), ("guided", guided)):
            if not jobs[kind]:
                continue
            ratings, weighted = rate_with_weighted_grades(judge_client, [payload for _, payload in jobs[kind]],
                                                          judge_obj, desc=f"MT-Bench {model}")
            for (meta, _), rating, grade in zip(jobs[kind], ratings, weighted):
                rows.append({"model": model, **meta, "score": rating.score, "judge": judge_obj.name,
                             **grade_fields(rating, grade)})
    return pd.DataFrame(rows, columns=["model", "question_id", "category", "turn", "score", "judge", *GRADE_FIELDS])


def wildbench_scores(judge_client: Any, items: Sequence[dict[str, Any]], outputs_by_model: Mapping[str, Sequence[str]],
                     judge: str | Judge = "wildbench_checklist") -> pd.DataFrame:
    """Rows (model, id, groups, score, grade_source, weighted_score) from checklist-guided grading (the weighted
    grade as in `mt_bench_scores`)."""
    rows = []
    for model, outputs in outputs_by_model.items():
        payload = [{"question": it["instruction"], "answer": out, "checklist": it.get("checklist") or [],
                    "history": it.get("history") or "(none)"} for it, out in zip(items, outputs)]
        ratings, weighted = rate_with_weighted_grades(judge_client, payload, judge, desc=f"WildBench {model}")
        for it, r, grade in zip(items, ratings, weighted):
            rows.append({"model": model, "id": it["id"], "groups": it.get("groups") or ["Creative Tasks"],
                         "score": r.score, **grade_fields(r, grade)})
    return pd.DataFrame(rows, columns=["model", "id", "groups", "score", *GRADE_FIELDS])


# ------------------------------------------------------------------------------------------ shirker probe

_FILLER = ("Thank you for this interesting question about {topic}. This is a topic with many sides, and the answer "
           "really depends on a lot of different factors and circumstances. In general it is important to think "
           "about everything carefully, keep all the options in mind, and remember that every situation is unique. "
           "Some people see it one way and others see it another way, and both can be right in their own way. ")


def shirker_response(answer: str, instruction: str, kind: str) -> str:
    """A deterministic low-effort stand-in for an answer: `brevity` keeps only its first sentence; `junk` is long,
    vague filler that never addresses the request (the two shirker kinds of the paper, without a teacher call)."""
    if kind == "brevity":
        first = re.split(r"(?<=[.!?])\s+|\n", answer.strip(), maxsplit=1)[0]
        return first[:200]
    if kind == "junk":
        topic = " ".join(instruction.split()[:6]).rstrip(".?!:,")
        return (_FILLER.format(topic=topic) * 3).strip()
    raise ValueError(f"unknown shirker kind {kind!r}; use one of {SHIRKER_KINDS}")


def shirker_probe(judge_client: Any, items: Sequence[dict[str, Any]], outputs: Sequence[str],
                  reference_outputs: Sequence[str], fractions: Sequence[float], kinds: Sequence[str], seed: int,
                  judge: str = "alpaca_eval_pairwise") -> pd.DataFrame:
    """Metric vs shirker fraction at a fixed model: replace a seeded fraction of the outputs by shirker stand-ins
    and judge again. It shows how the judge reacts to shirker-quality answers (cheap, no retraining); the paper's
    ablation instead trains on data containing shirkers and is run with `helpers.sweep`."""
    rows = []
    order = list(range(len(outputs)))
    random.Random(f"shirker-probe-{seed}").shuffle(order)
    for kind in kinds:
        for fraction in fractions:
            chosen = set(order[: round(fraction * len(outputs))])
            modified = [shirker_response(o, it["instruction"], kind) if i in chosen else o
                        for i, (o, it) in enumerate(zip(outputs, items))]
            summary, _ = pairwise_table(judge_client, items, {f"{kind}@{fraction}": modified},
                                        reference_outputs, seed, judge)
            r = summary.iloc[0].to_dict()
            rows.append({"SHIRKER_KIND": kind, "SHIRKER_FRACTION": fraction, **{k: r[k] for k in (
                "win_rate", "win_rate_se", "lc_win_rate", "n_scored", "n_unparsed", "mean_length")}})
    return pd.DataFrame(rows)
