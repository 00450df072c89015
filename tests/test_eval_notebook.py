"""Stage 4 notebook: parameters match EvalConfig and bad values fail early (the full run is in the smoke test)."""
from __future__ import annotations


import pytest

from helpers.evaluate.config import EvalConfig
from helpers.params import ParameterError
from helpers.runs import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "04_eval_ablations.ipynb"


def test_notebook_parameters_match_the_config():
    import papermill as pm

    declared = set(pm.inspect_notebook(str(NOTEBOOK)))
    assert declared == set(EvalConfig.parameter_names())


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
