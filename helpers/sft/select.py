"""Pick the checkpoint stage 4 evaluates, as the paper did: the one a judge likes best on the held-out set.

`SELECTION="judge"` (the paper's criterion): each checkpoint answers the held-out instructions and a pairwise judge
(`helpers.judge.named.compare_pairwise`, the evaluation stage's AlpacaEval-style judge and summary) compares every
answer with the held-out reference response; the checkpoint with the highest win rate wins (ties: lower held-out loss, then the
later checkpoint). `SELECTION="heldout_loss"` is a cheaper stand-in that needs no judge: the checkpoint with the
lowest loss on the held-out responses. `SELECTION="last"` takes the final checkpoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..judge.named import compare_pairwise
from ..layout import SELECTION_JSON
from .train import checkpoint_step

JUDGED_SCORES = ("win_rate", "win_rate_se", "lc_win_rate", "n_scored", "n_unparsed")  # kept in selection.json


@dataclass
class Selection:
    best_checkpoint: str
    criterion: str
    scores: dict[str, Any] = field(default_factory=dict)
    chat_template: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"best_checkpoint": self.best_checkpoint, "criterion": self.criterion, "scores": self.scores,
                "chat_template": self.chat_template, **self.details}


def heldout_losses(log_history: list[dict[str, Any]]) -> dict[int, float]:
    """Held-out loss per training step, from the trainer's log history."""
    return {int(h["step"]): float(h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h}


def select_by_heldout_loss(checkpoints: list[Path], log_history: list[dict[str, Any]]) -> tuple[Path, dict[str, float]]:
    """The checkpoint whose step has the lowest held-out loss (ties: the later one)."""
    if not checkpoints:
        raise ValueError("no checkpoints were saved")
    losses = heldout_losses(log_history)
    scores = {c.name: losses[checkpoint_step(c)] for c in checkpoints if checkpoint_step(c) in losses}
    if not scores:
        raise ValueError("no held-out loss was logged at any checkpoint step; is there a held-out set?")
    best = min(reversed(checkpoints), key=lambda c: scores.get(c.name, float("inf")))
    return best, scores


def select_by_judge(checkpoints: list[Path], answer_fn: Callable[[Path, list[str]], list[str]], judge_client: Any,
                    instructions: list[str], references: list[str], seed: int,
                    tie_break: dict[str, float] | None = None,
                    judge: Any = "alpaca_eval_pairwise") -> tuple[Path, dict[str, dict[str, Any]]]:
    """Win rate of each checkpoint's answers against the held-out references; the highest wins.

    `answer_fn(checkpoint, instructions) -> answers` keeps generation out of this function (tests pass a stub);
    `judge` is SELECTION_JUDGE (a name for the judge loader, or a loaded judge).
    """
    if not checkpoints:
        raise ValueError("no checkpoints were saved")
    tie_break = tie_break or {}
    results: dict[str, dict[str, Any]] = {}
    for checkpoint in checkpoints:
        answers = answer_fn(checkpoint, instructions)
        stats, _ = compare_pairwise(judge_client, instructions, answers, references, seed, judge,
                                    desc=f"judging {checkpoint.name}", parameter="SELECTION_JUDGE")
        results[checkpoint.name] = {k: stats[k] for k in JUDGED_SCORES}

    def key(c: Path) -> tuple[float, float, int]:
        win = results[c.name].get("win_rate")
        return (win if win is not None else float("-inf"), -tie_break.get(c.name, 0.0), checkpoint_step(c))

    return max(checkpoints, key=key), results


def write_selection(run: Any, selection: Selection) -> Path:
    """`RUN_DIR/sft/selection.json` plus the manifest entry stage 4 reads."""
    path = run.artifact(SELECTION_JSON)
    path.write_text(json.dumps(selection.to_dict(), indent=2))
    run.set_stage_info("best_checkpoint", selection.best_checkpoint)
    run.set_stage_info("selection", {"criterion": selection.criterion, "file": str(path)})
    return path
