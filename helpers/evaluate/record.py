"""What stage 4 writes into the run folder and records as named results, one function per step of the notebook.

Recorded names are what tests, sweeps (`sweep.csv` columns such as `evaluate.lc_win_rate`) and readers look up:
the student's numbers carry no suffix, another model's carry `_<model>` (e.g. `mt_bench_avg_base`). Grades an
in-process judge did not write but that were read from its probabilities (`judge.weighted_grades`) give numbers of
their own, `mt_bench_weighted_avg`, `wb_score_weighted`, ..., labelled by `weighted_grade_label`. `Run.record`
stores NaN (a mean over nothing) as null. A number that rests on fewer than 10 items, or on fewer than half of its
items because the judge's replies could not be read, is recorded with its count and a flag
(`{"value", "n", "n_total", "flag"}`, see `judge.small_numbers`), never as a plain number.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..judge.small_numbers import reportable
from ..layout import (EVAL_ANSWERS_REFERENCE, EVAL_MT_BENCH_SCORES, EVAL_PAIRWISE_ITEMS, EVAL_PAIRWISE_SUMMARY,
                      EVAL_SCORES_SUMMARY, EVAL_SHIRKER_PROBE, EVAL_WB_REWARD, EVAL_WILDBENCH_SCORES,
                      eval_annotations_file)
from ..llm.client import ChatClient
from ..runs import Run
from .answers import DecodingConfig, generate_answers, save_answers
from .config import STAGE, EvalConfig
from ..judge.weighted_grades import WEIGHTED_LABEL
from .official_suite import MT_BENCH_WEIGHTED, mt_bench_table, scores_summary, wb_score_table
from .together import STUDENT, answer_all

PAIRWISE_KEYS = ("win_rate", "win_rate_se", "lc_win_rate")  # recorded per model (`_<model>`) and as headline


def _suffix(model: str) -> str:
    return "" if model == STUDENT else f"_{model}"


def record_setup(run: Run, cfg: EvalConfig, answerers: Mapping[str, ChatClient], judge: ChatClient) -> None:
    """The models, the judge, the decoding settings and the judge configs, in the manifest."""
    for role, client in answerers.items():
        run.add_model(role.upper(), client.describe())
    run.add_model("JUDGE", judge.describe())
    run.set_stage_info("decoding", cfg.decoding().sampling())
    run.set_stage_info("judges", cfg.judges())


def answer_eval_set(run: Run, answerers: Mapping[str, ChatClient], items: list[dict[str, Any]],
                    decoding: DecodingConfig, candidate_file: str = "") -> dict[str, list[str]]:
    """Every evaluated model answers every instruction; the answers are saved as `eval/answers_<role>.jsonl`.
    With `candidate_file` (CANDIDATE_OUTPUTS) the student's answers are that file's, matched by instruction.
    (`together.answer_all` also answers the MT-Bench questions in the same rounds.)"""
    return answer_all(run, answerers, items, decoding, candidate_file)[0]


def reference_outputs(run: Run, cfg: EvalConfig, items: list[dict[str, Any]]) -> list[str]:
    """The answers candidates are compared with: the eval set's own, or the teacher's (saved and recorded)."""
    run.set_stage_info("reference", cfg.reference)
    if cfg.reference != "teacher":
        return [item["reference_output"] for item in items]
    teacher = cfg.connect(cfg.teacher(), STAGE)
    answers = generate_answers(teacher, items, cfg.decoding(), desc="reference answers")
    save_answers(run.artifact(EVAL_ANSWERS_REFERENCE), answers, teacher.model, cfg.decoding())
    run.add_model("REFERENCE", teacher.describe())
    return [a["output"] for a in answers]


def _counts(row: Mapping[str, Any]) -> tuple[int, int]:
    used = int(row["n_scored"])
    return used, used + int(row["n_unparsed"])


def _lc_flag(row: Mapping[str, Any], key: str) -> str | None:
    """The LC's own flag (a fit that kept no coefficient), for the LC only."""
    flag = row.get("lc_flag") if key.startswith("lc_") else None
    return flag if isinstance(flag, str) and flag else None


def record_pairwise(run: Run, summary: pd.DataFrame, per_item: pd.DataFrame, n_eval: int) -> dict[str, Any]:
    """Win rate, its standard error, LC win rate and unreadable verdicts per model, the student's as headline, with
    the judge, its prompt source and the GLM behind the LC ("LC" only for the leaderboard's length_controlled_v1,
    else "LC (minimal GLM)"); an LC whose fit kept no coefficient is flagged like a small number. alpaca_eval-style
    annotations are saved for `score-alpaca-eval`."""
    for model, rows in summary.attrs.get("annotations", {}).items():
        pd.DataFrame(rows).to_json(run.artifact(eval_annotations_file(model)), orient="records", indent=1)
    per_item.to_csv(run.artifact(EVAL_PAIRWISE_ITEMS), index=False)
    summary.to_csv(run.artifact(EVAL_PAIRWISE_SUMMARY), index=False)
    recorded: dict[str, Any] = {}
    for row in summary.to_dict("records"):
        for key in PAIRWISE_KEYS:
            recorded[f"{key}_{row['model']}"] = reportable(row[key], *_counts(row), flag=_lc_flag(row, key))
        recorded[f"n_unparsed_{row['model']}"] = int(row["n_unparsed"])
    student = summary.set_index("model").loc[STUDENT]
    recorded.update({key: reportable(student[key], *_counts(student), flag=_lc_flag(student, key))
                     for key in PAIRWISE_KEYS})
    recorded.update(lc_label=student["lc_label"], lc_glm=student["lc_glm"], pairwise_judge=student["judge"],
                    pairwise_prompt_source=student["prompt_source"], n_eval=n_eval,
                    n_unparsed_judgments=int(summary["n_unparsed"].sum()))
    return {name: run.record(name, value) for name, value in recorded.items()}


def record_mt_bench(run: Run, mt_rows: pd.DataFrame) -> pd.DataFrame:
    """MT-Bench average, turn 1, turn 2 and unreadable grades per model (flagged when few grades were read);
    returns the per-model table (`mt_bench_table`, per-category tables in `.attrs["per_category"]`)."""
    if len(mt_rows):
        mt_rows.to_csv(run.artifact(EVAL_MT_BENCH_SCORES), index=False)
    table = mt_bench_table(mt_rows)
    for row in table.to_dict("records"):
        for key in ("mt_bench_avg", "mt_bench_turn1", "mt_bench_turn2"):
            run.record(f"{key}{_suffix(row['model'])}", reportable(row[key], row["n_graded"], row["n_total"]))
        run.record(f"mt_bench_unparsed{_suffix(row['model'])}", int(row["n_total"] - row["n_graded"]))
        _record_weighted(run, row, MT_BENCH_WEIGHTED)
    return table


def _record_weighted(run: Run, row: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Probability-weighted grades' numbers under their own names (`..._weighted...`), with their count and label;
    none for a model whose judge wrote every grade it gave."""
    if row.get("n_weighted") is None or pd.isna(row["n_weighted"]):
        return
    for key in keys:
        run.record(f"{key}{_suffix(row['model'])}", reportable(row[key], int(row["n_weighted"]), row["n_total"]))
    run.record("weighted_grade_label", WEIGHTED_LABEL)


def record_wildbench(run: Run, wb_rows: pd.DataFrame, mt_table: pd.DataFrame) -> pd.DataFrame:
    """WB-Score and unreadable grades per model; returns (and saves) the table of every rating-based score."""
    if len(wb_rows):
        wb_rows.to_json(run.artifact(EVAL_WILDBENCH_SCORES), orient="records", lines=True)
    wb_table = wb_score_table(wb_rows)
    for row in wb_table.to_dict("records"):
        run.record(f"wb_score{_suffix(row['model'])}", reportable(row["wb_score"], row["n_graded"], row["n_total"]))
        run.record(f"wb_unparsed{_suffix(row['model'])}", int(row["n_total"] - row["n_graded"]))
        _record_weighted(run, row, ("wb_score_weighted",))
    table = scores_summary(mt_table, wb_table)
    table.to_csv(run.artifact(EVAL_SCORES_SUMMARY), index=False)
    return table


def record_wb_reward(run: Run, reward_rows: pd.DataFrame, rewards: pd.DataFrame) -> None:
    """WB-Reward per model (K = -1 in the paper), flagged when it rests on few judged tasks."""
    reward_rows.to_json(run.artifact(EVAL_WB_REWARD), orient="records", lines=True)
    for row in rewards.to_dict("records"):
        run.record(f"wb_reward{_suffix(row['model'])}", reportable(row["wb_reward"], row["n_judged"], row["n_total"]))


def record_probe(run: Run, probe: pd.DataFrame) -> None:
    probe.to_csv(run.artifact(EVAL_SHIRKER_PROBE), index=False)
    run.record("shirker_probe", probe.to_dict("records"))


def record_accounting(run: Run, clients: Mapping[str, ChatClient]) -> pd.DataFrame:
    """Calls, tokens and cost per model, in the manifest; returns them as a table."""
    for role, client in clients.items():
        run.add_accounting(role.upper(), client.usage)
    return pd.DataFrame({role.upper(): client.usage.as_dict() for role, client in clients.items()}).T


def leaderboard_rows(summary: pd.DataFrame, judge_model: str) -> dict[str, float]:
    """Our LC win rates, labelled with the GLM and judge that produced them, for the leaderboard context figure;
    flagged (small-sample) numbers are left out."""
    return {f"{row['model']} ({row['lc_label']}, judge {judge_model})": row["lc_win_rate"]
            for row in summary.to_dict("records") if not row.get("flag") and not _lc_flag(row, "lc_win_rate")}


