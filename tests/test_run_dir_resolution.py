"""A relative RUN_DIR names the same folder whichever way a notebook is started: from the project root (command
line, papermill driver) or from notebooks/ (JupyterLab's working directory)."""
from __future__ import annotations

import json
import os
import shutil
import uuid

import nbformat
import papermill as pm

from helpers.evaluate.config import EvalConfig
from helpers.generate.config import GenerateConfig
from helpers.runs import PROJECT_ROOT, Run, resolve_run_dir
from helpers.sft.config import SFTStageConfig
from helpers.skills.config import SkillExtractionConfig


def test_relative_run_dir_is_relative_to_the_project_root(monkeypatch, tmp_path):
    monkeypatch.chdir(PROJECT_ROOT / "notebooks")
    expected = PROJECT_ROOT / "runs" / "demo"
    assert resolve_run_dir("runs/demo") == expected
    assert GenerateConfig(run_dir="runs/demo").run_dir == str(expected)
    assert SFTStageConfig(profile="demo", run_dir="runs/demo").run_dir == str(expected)
    assert SkillExtractionConfig(run_dir="runs/demo").run_dir == str(expected)
    assert EvalConfig(run_dir="runs/demo").run_dir == str(expected)
    assert GenerateConfig(run_dir="").run_dir == ""  # left for the config's own check to report
    assert resolve_run_dir(tmp_path / "abs") == tmp_path / "abs"  # absolute paths are kept
    monkeypatch.chdir(tmp_path)
    assert resolve_run_dir("runs/demo") == expected


def test_notebook_started_in_notebooks_folder_writes_the_project_run_folder(tmp_path, monkeypatch):
    name = f"runs/_cwd_test_{uuid.uuid4().hex[:8]}"
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(f"RUN_DIR = {name!r}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import os\nfrom helpers.runs import Run\nrun = Run(RUN_DIR)\nrun.begin_stage('probe', {})\n"
        "run.record('cwd', os.getcwd())")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "probe.ipynb"
    nbformat.write(nb, str(source))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    target = PROJECT_ROOT / name
    try:
        pm.execute_notebook(str(source), str(tmp_path / "out.ipynb"), cwd=str(PROJECT_ROOT / "notebooks"),
                            progress_bar=False)  # no parameters injected: the notebook's own default, as in JupyterLab
        results = json.loads((target / "results.json").read_text())
        assert results["probe"]["cwd"] == str(PROJECT_ROOT / "notebooks")
        assert not (PROJECT_ROOT / "notebooks" / name).exists()
        assert Run(name).results() == results  # the driver's view of the same relative name
    finally:
        shutil.rmtree(target, ignore_errors=True)
