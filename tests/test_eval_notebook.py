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
                                 {"JUDGE_API_KEY_ENV": "sk-abcdef"}, {"ANSWER_TOP_P": 2}, {"SWEEP_CSV": "nope.csv"},
                                 {"LOCAL_DTYPE": "float16"}, {"REQUEST_ATTEMPTS": 0}])
def test_bad_parameters_fail_before_any_model_call(bad):
    with pytest.raises(ParameterError):
        EvalConfig.from_params({"STUDENT_MODEL": "x", **bad})


def test_missing_selection_names_run_dir(tmp_path):
    with pytest.raises(ParameterError) as err:
        EvalConfig.from_params({"RUN_DIR": str(tmp_path)})
    assert err.value.name == "RUN_DIR"


def test_every_client_of_a_stage_gets_the_run_s_request_settings(tmp_path, monkeypatch):
    """The base model, the student and the judge are connected the same way (the base model once got the
    library defaults instead of REQUEST_TIMEOUT / REQUEST_ATTEMPTS)."""
    from helpers.evaluate.config import connect_answerers
    from helpers.llm.endpoint import Endpoint

    seen = {}
    monkeypatch.setattr(Endpoint, "connect", lambda self, n, stage="", **o: seen.setdefault(self.role, (n, o)))
    cfg = EvalConfig.from_params({"RUN_DIR": str(tmp_path), "STUDENT_MODEL": "student-x", "COMPARE_BASE": True,
                                  "BASE_MODEL": "base-y", "REQUEST_TIMEOUT": 33, "REQUEST_ATTEMPTS": 2,
                                  "MAX_CONCURRENCY": 5, "LOCAL_DTYPE": "bfloat16"}, inputs=False)
    connect_answerers(cfg)
    cfg.connect(cfg.judge(), "evaluate")
    assert set(seen) == {"STUDENT", "BASE", "JUDGE"}
    for concurrency, options in seen.values():
        assert concurrency == 5 and options["request_timeout_s"] == 33 and options["max_attempts"] == 2
        assert options["batch_dir"] == tmp_path / "batches" and options["local_dtype"] == "bfloat16"
