"""Several models judged against the same reference outputs with one pairwise judge, whoever owns it.

One table for stage 4's win rates and for the shirker probe: a summary row per model (win rate and its standard
error, LC win rate with the GLM behind it and its own flag (`lc_flag`: a fit that kept no coefficient), counts, mean length, the judge and its prompt source, a small-number flag)
and a row per item. With an alpaca_eval judge the numbers are alpaca_eval's own scoring of its annotations (the
leaderboard's LC when its GLM data is at hand), and the annotations are kept for `score-alpaca-eval`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..judge.alpaca_eval_glm import GLM_LABELS, GLM_MINIMAL, GLM_V1, GlmData, score_annotations
from ..judge.judging import PairwiseJudgment, summarise_pairwise
from ..judge.named import describe_judge, judge_pairwise, load_named_judge, prompt_source_text
from ..judge.official_alpaca_eval import annotation_records
from ..judge.small_numbers import small_number_flag

ALPACA_EVAL_ID_PREFIX = "alpaca_eval-"


def alpaca_eval_indices(items: Sequence[Mapping[str, Any]]) -> list[int] | None:
    """Positions of the items in AlpacaEval's 805 (what its instruction difficulties are indexed by), or None when
    the items are not AlpacaEval's."""
    ids = [str(it.get("id", "")) for it in items]
    if not ids or not all(i.startswith(ALPACA_EVAL_ID_PREFIX) for i in ids):
        return None
    return [int(i[len(ALPACA_EVAL_ID_PREFIX):]) for i in ids]


def pairwise_table(judge_client: Any, items: Sequence[dict[str, Any]], outputs_by_model: Mapping[str, Sequence[str]],
                   reference_outputs: Sequence[str], seed: int, judge: Any = "alpaca_eval_pairwise",
                   glm_data: GlmData | None = None, reference_generator: str = "reference",
                   generators: Mapping[str, str] | None = None,
                   parameter: str = "PAIRWISE_JUDGE") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, per_item) for every model in `outputs_by_model`. `judge` is a name (`alpaca_eval:...` or a kit
    judge) or a loaded judge; for alpaca_eval judges `summary.attrs["annotations"]` holds its annotations per model,
    naming each model by `generators` (default: its key)."""
    if isinstance(judge, str):
        judge = load_named_judge(judge, parameter)
    described = describe_judge(judge)
    instructions = [it["instruction"] for it in items]
    indices = alpaca_eval_indices(items)
    rows, per_item, annotations = [], [], {}
    for model, outputs in outputs_by_model.items():
        outputs = list(outputs)
        judgments, prefs = judge_pairwise(judge_client, instructions, outputs, list(reference_outputs), seed, judge,
                                          desc=f"judging {model}", parameter=parameter)
        if prefs is None:
            row = {"model": model, **summarise_pairwise(judgments), "lc_glm": GLM_MINIMAL,
                   "lc_label": GLM_LABELS[GLM_MINIMAL], "glm_data": None}
        else:
            annotations[model] = annotation_records(instructions, outputs, list(reference_outputs), prefs,
                                                    (generators or {}).get(model) or model, reference_generator,
                                                    judge, indices)
            row = {"model": model, **_alpaca_eval_scores(annotations[model], prefs, glm_data, indices),
                   "from_logprobs": sum(j.source == "logprobs" for j in judgments),
                   "mean_length": sum(len(o) for o in outputs) / max(len(outputs), 1)}
        rows.append(row)
        per_item.extend(_item_rows(model, items, judgments))
    summary = pd.DataFrame(rows)
    summary["judge"] = described["name"]
    summary["prompt_source"] = prompt_source_text(described)
    summary["flag"] = [small_number_flag(int(r["n_scored"]), int(r["n_scored"]) + int(r["n_unparsed"]))
                       for r in summary.to_dict("records")]
    summary.attrs["annotations"] = annotations
    return summary, pd.DataFrame(per_item)


def _alpaca_eval_scores(annotations: list[dict[str, Any]], prefs: Sequence[float], glm_data: GlmData | None,
                        indices: list[int] | None) -> dict[str, Any]:
    """alpaca_eval's win rate and LC of its own annotations: the leaderboard's GLM only on AlpacaEval's items."""
    use_v1 = glm_data is not None and indices is not None
    scored = score_annotations(pd.DataFrame(annotations).assign(preference=list(prefs)),
                               GLM_V1 if use_v1 else GLM_MINIMAL, glm_data if use_v1 else None)
    return {"win_rate": scored["win_rate"], "win_rate_se": scored["win_rate_se"],
            "lc_win_rate": scored["lc_win_rate"], "lc_win_rate_se": scored["lc_win_rate_se"],
            "lc_flag": scored["lc_flag"], "lc_glm": scored["glm"], "lc_label": scored["lc_label"], "glm_data": scored["glm_data"],
            "n_scored": scored["n"], "n_unparsed": scored["n_unparsed"]}


def _item_rows(model: str, items: Sequence[Mapping[str, Any]],
               judgments: Sequence[PairwiseJudgment]) -> list[dict[str, Any]]:
    return [{"model": model, "id": it["id"], "category": it.get("category", ""), "preference": j.preference,
             "source": j.source, "candidate_first": j.candidate_first, "candidate_length": j.candidate_length,
             "reference_length": j.reference_length} for it, j in zip(items, judgments)]
