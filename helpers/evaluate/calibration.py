"""The calibration row: the paper's own model's published AlpacaEval answers, judged beside the student.

A win rate from any judge other than the paper's (gpt-4-1106-preview with alpaca_eval's weighted evaluator) is not
on the scale of the paper's 42.76 % LC. What makes it meaningful is a yardstick scored in the same run: the answers
of the paper's model (alpaca_eval's `results/Llama-3-8B-Instruct-SkillMix/model_outputs.json`) judged by the same
judge, on the same items, in the same order and with the same GLM as the student. With the paper's judge that row
should land near the published leaderboard row (the check of the judge setup); with another judge it is the number
the student is read against ("under this judge the paper's model scores X; yours scores Y").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..official import resolve
from ..params import ParameterError
from .candidates import candidate_outputs, read_outputs_file
from .leaderboard import PAPER_MODEL, published_leaderboard

CALIBRATION_MODEL = "paper_model"  # the row's model name in every table, record and figure
PAPER_CHOICE = "paper"
PAPER_OUTPUTS = "results/Llama-3-8B-Instruct-SkillMix/model_outputs.json"
PAPER_GENERATOR = "Llama-3-8B-Instruct-SkillMix"  # its name on the AlpacaEval leaderboard
PARAMETER = "CALIBRATION_OUTPUTS"


def check_calibration(value: str, eval_set: str, alpaca_eval_repo: str = "") -> None:
    """Fail before any model call: 'paper' needs AlpacaEval's items; a path must be a model_outputs.json."""
    if not value:
        return
    if value == PAPER_CHOICE:
        if eval_set != "alpaca_eval":
            raise ParameterError(PARAMETER, f"'paper' holds answers to AlpacaEval's 805 instructions, but "
                                 f"EVAL_SET={eval_set!r}", "set EVAL_SET='alpaca_eval', or leave CALIBRATION_OUTPUTS "
                                 "empty")
        if alpaca_eval_repo:
            resolve("alpaca_eval", PAPER_OUTPUTS, alpaca_eval_repo)
        return
    read_outputs_file(value, PARAMETER)


def calibration_file(value: str, alpaca_eval_repo: str = "") -> tuple[Path, dict[str, Any]] | None:
    """The outputs file CALIBRATION_OUTPUTS names and where it came from; None when empty. 'paper' is read from a
    local clone of alpaca_eval (ALPACA_EVAL_REPO) or downloaded once at the pinned commit (sha256-checked)."""
    if not value:
        return None
    if value == PAPER_CHOICE:
        file = resolve("alpaca_eval", PAPER_OUTPUTS, alpaca_eval_repo)
        return file.local_path, file.describe()
    path = Path(value).expanduser()
    read_outputs_file(path, PARAMETER)
    return path, {"path": str(path)}


def calibration_outputs(run: Any, value: str, items: list[dict[str, Any]],
                        alpaca_eval_repo: str = "") -> tuple[dict[str, list[str]], dict[str, str]]:
    """({'paper_model': answers matched to the items by instruction}, {'paper_model': generator}), or two empty
    mappings without CALIBRATION_OUTPUTS; the file and its source go into the manifest."""
    found = calibration_file(value, alpaca_eval_repo)
    if found is None:
        return {}, {}
    path, source = found
    answers, generator = candidate_outputs(path, items, PARAMETER)
    run.add_model(CALIBRATION_MODEL.upper(), {"model": generator, "outputs_file": str(path), "source": source})
    return {CALIBRATION_MODEL: answers}, {CALIBRATION_MODEL: generator}


def published_paper_row(board: pd.DataFrame | None = None) -> dict[str, float | None]:
    """The paper's model's published AlpacaEval 2.0 win rate and LC (the leaderboard's row, judged by
    gpt-4-1106-preview): what the calibration row should come out near with the paper's judge."""
    board = published_leaderboard() if board is None else board
    rows = board[board["model"].isin([PAPER_GENERATOR, PAPER_MODEL])]
    values: dict[str, float | None] = {"win_rate": None, "lc_win_rate": None}
    for key in values:
        known = rows[key].dropna() if key in rows else []
        values[key] = float(known.iloc[0]) if len(known) else None
    return values


def calibration_reading(summary: pd.DataFrame, judge_model: str, board: pd.DataFrame | None = None
                        ) -> dict[str, Any] | None:
    """The calibration row read as a sentence and as numbers: this judge's score of the paper's model beside the
    student's and beside the published row; None when the run has no calibration row."""
    rows = summary.set_index("model")
    if CALIBRATION_MODEL not in rows.index:
        return None
    paper, published = rows.loc[CALIBRATION_MODEL], published_paper_row(board)
    student = rows.loc["student"] if "student" in rows.index else None
    label = str(paper.get("lc_label", "LC"))
    out: dict[str, Any] = {
        "judge": str(paper.get("judge", "")), "judge_model": judge_model, "lc_label": label,
        "paper_model_win_rate": float(paper["win_rate"]), "paper_model_lc_win_rate": float(paper["lc_win_rate"]),
        "published_win_rate": published["win_rate"], "published_lc_win_rate": published["lc_win_rate"],
        "student_win_rate": None if student is None else float(student["win_rate"]),
        "student_lc_win_rate": None if student is None else float(student["lc_win_rate"]),
    }
    text = (f"Under this judge ({out['judge']} on {judge_model}), the paper's model scores "
            f"{out['paper_model_win_rate']:.2f} WR / {out['paper_model_lc_win_rate']:.2f} {label}")
    if student is not None:
        text += f"; yours scores {out['student_win_rate']:.2f} WR / {out['student_lc_win_rate']:.2f} {label}"
    if published["lc_win_rate"] is not None:
        wr = "?" if published["win_rate"] is None else f"{published['win_rate']:.2f}"
        text += (f". Published with the paper's judge: {wr} WR / {published['lc_win_rate']:.2f} LC; with that judge "
                 "and the leaderboard's LC the row above should come out near it (the check of the judge setup)")
    out["text"] = text + "."
    return out
