"""Papermill smoke run of all four notebooks on the embedded models with tiny parameters, as `make demo` runs them,
then checks of what a reader and a sweep rely on: recorded metrics, artifacts, figures, the manifest."""
from __future__ import annotations

import json

import pytest

from helpers.generate.files import load_training_data
from helpers.pipeline import NOTEBOOKS, run_pipeline
from helpers.runs import Run, read_notebook_records

pytestmark = pytest.mark.slow

TINY = {
    # stage 1: a few teacher calls
    "NUM_TOPICS": 2, "SKILLS_PER_TOPIC": 3, "NUM_QUERY_TYPES": 2, "EXTRACT_MAX_TOKENS": 96,
    # stage 2: a handful of short single-draft conversations, two retries
    "NUM_EXAMPLES": 4, "NUM_HELDOUT": 2, "PROMPT_VERSION": "single_turn", "MAX_ATTEMPTS": 3, "GENERATE_MAX_TOKENS": 96,
    # stage 3: two optimizer steps, one checkpoint
    "MAX_STEPS": 2, "SAVE_EVERY": 2, "MAX_NEW_TOKENS": 8, "MAX_LENGTH": 128, "MAX_TRAIN_EXAMPLES": 8,
    "MAX_HELDOUT_EXAMPLES": 2, "SELECTION_EXAMPLES": 2, "COMPARE_EXAMPLES": 1,
    # stage 4: a few eval items, short answers, no base-model comparison
    "N_EVAL": 4, "N_MT_BENCH": 1, "ANSWER_MAX_TOKENS": 16, "JUDGE_MAX_TOKENS": 16, "COMPARE_BASE": False,
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    executed = run_pipeline(run_dir, TINY, NOTEBOOKS, log=print, progress=False)
    return Run(run_dir), executed


def test_every_stage_finished_and_recorded(demo_run):
    run, executed = demo_run
    assert [p.stem for p in executed] == list(NOTEBOOKS)
    results = run.results()
    assert set(results) >= {"extract_skills", "generate", "sft", "evaluate"}
    for path, stage in zip(executed, ("extract_skills", "generate", "sft", "evaluate")):
        assert read_notebook_records(path)[stage] == results[stage], f"{path.name} records differ from results.json"
    manifest = run.manifest()
    for stage in ("extract_skills", "generate", "sft", "evaluate"):
        assert "finished" in manifest["stages"][stage], f"{stage} did not call run.end_stage()"
    assert manifest["stages"]["generate"]["accounting"]["teacher"]["calls"] > 0
    assert manifest["versions"]["transformers"] and manifest["git_commit"] is not None


def test_stage_outputs_chain_together(demo_run):
    run, _ = demo_run
    r = run.results()
    assert r["extract_skills"]["num_skills"] >= 2 and r["extract_skills"]["num_query_types"] >= 1
    assert r["generate"]["num_examples"] >= 1
    train = load_training_data(run.path / "data" / "train.jsonl")
    assert len(train) == r["generate"]["num_examples"]
    assert json.loads((run.path / "data" / "train_official.json").read_text())[0].keys() >= {
        "instruction", "input", "output", "skills_joined_str", "query_type", "generator"}
    selection = json.loads((run.path / "sft" / "selection.json").read_text())
    assert (run.path / "sft").exists() and selection["best_checkpoint"]
    assert r["sft"]["num_train_examples"] == r["generate"]["num_examples"]


def test_evaluation_metrics_are_in_range(demo_run):
    run, _ = demo_run
    ev = run.results()["evaluate"]
    # with a few items every number is recorded flagged, as {"value", "n", "n_total", "flag"}
    plain = {k: v["value"] if isinstance(v, dict) and "flag" in v else v for k, v in ev.items()}
    rates = {k: v for k, v in plain.items() if k.startswith(("win_rate", "lc_win_rate")) and not k.endswith("_se")
             and isinstance(v, (int, float))}
    assert rates, f"no win rates recorded: {sorted(ev)}"
    assert all(0 <= v <= 100 for v in rates.values()), rates
    assert ev["n_eval"] == TINY["N_EVAL"]
    assert "win_rate_student" in ev and "lc_win_rate" in ev and "n_unparsed_judgments" in ev
    assert (run.path / "eval" / "shirker_probe.csv").exists()


def test_figures_were_saved(demo_run):
    run, _ = demo_run
    names = {p.name.split("_")[0] for p in run.figures.glob("*.png")}
    assert {"extract", "generate", "sft", "evaluate"} <= names, sorted(p.name for p in run.figures.glob("*.png"))
