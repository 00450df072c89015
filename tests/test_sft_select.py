"""Checkpoint selection by judge: the same pairwise summary as stage 4, ties broken by held-out loss then step."""
from __future__ import annotations

import json
from pathlib import Path

from helpers.judge.named import compare_pairwise
from helpers.llm.client import connect_function
from helpers.runs import Run
from helpers.sft.select import JUDGED_SCORES, Selection, select_by_judge, write_selection


def _judge(messages, sampling):
    """Prefers the response containing GOOD."""
    prompt = messages[-1]["content"]
    a = prompt.split("<<<BEGIN RESPONSE A>>>")[1].split("<<<END RESPONSE A>>>")[0]
    return "A" if "GOOD" in a else "B"


def test_select_by_judge_uses_the_stage4_summary(tmp_path):
    judge = connect_function(_judge, model="fake-judge", stage="test", cache_path=tmp_path / "c.sqlite")
    checkpoints = [tmp_path / f"checkpoint-{s}" for s in (10, 20, 30)]
    quality = {"checkpoint-10": "bad", "checkpoint-20": "GOOD", "checkpoint-30": "GOOD"}
    instructions, refs = [f"task {i}" for i in range(6)], ["so-so"] * 6

    def answer(checkpoint: Path, items: list[str]) -> list[str]:
        return [f"{quality[checkpoint.name]} answer to {t}" for t in items]

    best, scores = select_by_judge(checkpoints, answer, judge, instructions, refs, seed=1,
                                   tie_break={"checkpoint-20": 1.0, "checkpoint-30": 2.0})
    assert best.name == "checkpoint-20"  # same win rate as 30, lower held-out loss
    assert set(scores["checkpoint-10"]) == set(JUDGED_SCORES)
    summary, _ = compare_pairwise(judge, instructions, answer(checkpoints[1], instructions), refs, seed=1)
    assert scores["checkpoint-20"] == {k: summary[k] for k in JUDGED_SCORES}
    assert scores["checkpoint-10"]["win_rate"] < scores["checkpoint-20"]["win_rate"] == 100.0


def test_write_selection_lands_where_stage4_reads_it(tmp_path):
    from helpers.evaluate.answers import read_selection

    run = Run(tmp_path / "run", stage="sft")
    path = write_selection(run, Selection("/models/best", "judge", {"checkpoint-1": {"win_rate": 50.0}}, "alpaca"))
    assert path == run.path / "sft" / "selection.json"
    assert read_selection(run.path) == json.loads(path.read_text())
    assert run.stage_info("sft")["best_checkpoint"] == "/models/best"
