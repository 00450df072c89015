"""Stage 4 notebook: parameters match EvalConfig, checks fail early, and (slow) a tiny offline run records metrics."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.eval_config import EvalConfig
from helpers.params import ParameterError
from helpers.runs import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "04_eval_ablations.ipynb"
TINY = {"N_EVAL": 3, "N_MT_BENCH": 1, "ANSWER_MAX_TOKENS": 12, "JUDGE_MAX_TOKENS": 12}


def test_notebook_parameters_match_the_config():
    import papermill as pm

    declared = set(pm.inspect_notebook(str(NOTEBOOK)))
    assert declared == set(EvalConfig.__dataclass_fields__)


@pytest.mark.parametrize("bad", [{"REFERENCE": "gpt4"}, {"EVAL_SET": "arena"}, {"N_EVAL": -1},
                                 {"PAIRWISE_JUDGE": "mt_bench_single"}, {"SHIRKER_PROBE_KINDS": ["lazy"]},
                                 {"JUDGE_API_KEY_ENV": "sk-abcdef"}, {"ANSWER_TOP_P": 2}, {"SWEEP_CSV": "nope.csv"}])
def test_bad_parameters_fail_before_any_model_call(bad):
    with pytest.raises(ParameterError):
        EvalConfig.from_params({"STUDENT_MODEL": "x", **bad})


def test_missing_selection_names_run_dir(tmp_path):
    with pytest.raises(ParameterError) as err:
        EvalConfig.from_params({"RUN_DIR": str(tmp_path)})
    assert err.value.name == "RUN_DIR"


@pytest.mark.slow
def test_tiny_offline_run(tmp_path, monkeypatch):
    """The embedded judge and an embedded instruct model as a stand-in student (no stage 3 needed)."""
    from helpers.models import resolve_model_path
    from helpers.pipeline import run_notebook

    monkeypatch.setenv("ISM_CACHE_DIR", str(tmp_path / "cache"))
    student = resolve_model_path("smollm2-135m-instruct", "STUDENT_MODEL")
    run_dir = tmp_path / "run"
    (run_dir / "sft").mkdir(parents=True)
    (run_dir / "sft" / "selection.json").write_text(json.dumps({"best_checkpoint": str(student), "criterion": "test",
                                                                "scores": {}, "chat_template": "model"}))
    run_notebook("04_eval_ablations", run_dir, {**TINY, "BASE_MODEL": "", "RUN_WILDBENCH": False}, progress=False)
    results = json.loads((run_dir / "results.json").read_text())["evaluate"]
    assert results["n_eval"] == 3
    assert "win_rate_student" in results and "lc_win_rate" in results and "n_unparsed_judgments" in results
    assert (run_dir / "eval" / "shirker_probe.csv").exists()
    assert (run_dir / "figures" / "evaluate_win_rates.png").exists()
