"""Run folders, the recorder, parameter routing and the papermill driver (on small throwaway notebooks)."""
from __future__ import annotations

import json

import nbformat
import pytest

from helpers import pipeline
from helpers.__main__ import load_params, main
from helpers.params import ParameterError
from helpers.runs import Run, read_notebook_records


def make_notebook(path, params_src: str, body: list[str]):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params_src)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(src) for src in body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_manifest_and_records(tmp_path):
    run = Run(tmp_path / "r")
    run.begin_stage("generate", {"NUM_EXAMPLES": 4, "TEACHER_API_KEY_ENV": "OPENAI_API_KEY"}, seeds={"SEED": 1})
    run.add_model("teacher", {"backend": "openai", "model": "gpt-4-turbo-2024-04-09"})
    run.add_accounting("teacher", {"calls": 3, "input_tokens": 10})
    run.record("num_examples", 4)
    run.end_stage()
    m = run.manifest()
    st = m["stages"]["generate"]
    assert st["params"]["NUM_EXAMPLES"] == 4 and st["seeds"] == {"SEED": 1} and "finished" in st
    assert st["models"]["teacher"]["model"] == "gpt-4-turbo-2024-04-09" and st["accounting"]["teacher"]["calls"] == 3
    assert set(m["versions"]) >= {"python", "torch", "transformers", "trl", "openai"}
    assert Run(tmp_path / "r").results() == {"generate": {"num_examples": 4}}


def test_record_stores_nan_as_null(tmp_path):
    run = Run(tmp_path)
    run.begin_stage("evaluate", {})
    assert run.record("lc", {"a": float("nan"), "b": [1.0, float("inf")]}) == {"a": None, "b": [1.0, None]}
    assert json.loads(run.results_path.read_text())["evaluate"]["lc"]["a"] is None


def test_record_requires_a_stage(tmp_path):
    with pytest.raises(RuntimeError, match="begin_stage"):
        Run(tmp_path).record("x", 1)


def test_driver_routes_parameters_and_reads_records(tmp_path):
    nb = make_notebook(tmp_path / "01_demo.ipynb", "RUN_DIR = ''\nN = 2\n",
                       ["from helpers.runs import Run\nrun = Run(RUN_DIR)\nrun.begin_stage('demo', {'N': N})\nrun.record('n_squared', N * N)"])
    out = pipeline.run_notebook(nb, tmp_path / "run", {"N": 7}, progress=False)
    assert read_notebook_records(out) == {"demo": {"n_squared": 49}}
    assert Run(tmp_path / "run").results()["demo"]["n_squared"] == 49
    assert not nbformat.read(str(nb), as_version=4).cells[1].outputs  # the source notebook stays clean


def test_failing_cell_is_named(tmp_path):
    nb = make_notebook(tmp_path / "02_bad.ipynb", "RUN_DIR = ''\n", ["x = 1", "raise ValueError('boom')"])
    with pytest.raises(pipeline.NotebookFailed, match=r"02_bad failed in cell \d+: ValueError: boom") as info:
        pipeline.run_notebook(nb, tmp_path / "run", {}, progress=False)
    assert info.value.output_path.exists()


def test_unknown_parameter_fails_before_running(tmp_path):
    nb = make_notebook(tmp_path / "03_p.ipynb", "RUN_DIR = ''\nSEED = 0\n", ["raise SystemExit('must not run')"])
    with pytest.raises(ParameterError, match="NUM_EXAMPLS.*known parameters: RUN_DIR, SEED"):
        pipeline.split_parameters({"NUM_EXAMPLS": 3}, [nb])


def test_cli_parses_yaml_values(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("NUM_EXAMPLES: 1000\nTEACHER_BASE_URL: https://api.openai.com/v1\n")
    params = load_params(str(cfg), [["NUM_EXAMPLES", "8"], ["SHIRKER_FRACTION", "0.2"], ["TEACHER_BASE_URL", "''"]])
    assert params == {"NUM_EXAMPLES": 8, "TEACHER_BASE_URL": "", "SHIRKER_FRACTION": 0.2}


def test_cli_reports_bad_parameter(capsys, tmp_path):
    assert main(["run", "--run-dir", str(tmp_path / "r"), "-p", "NOT_A_PARAMETER", "1"]) == 2
    assert "NOT_A_PARAMETER" in capsys.readouterr().err
