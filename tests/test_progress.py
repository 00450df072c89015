"""Visible progress: plain progress lines from the kernel streamed by the driver, and each stage's numbers at the end."""
from __future__ import annotations

import os

import nbformat

from helpers import pipeline
from helpers.progress import PLAIN_ENV, LineRelay, plain_progress_env, progress_bar, stage_summary_lines


def test_line_relay_splits_redraws_and_drops_repeats():
    lines: list[str] = []
    relay = LineRelay("nb | ", lines.append)
    relay.write("gen:  10%|#         | 1/10\rgen:  10%|#         | 1/10\r")
    relay.write("gen: 100%|##########| 10/10 [00:09<00:00, 1.01it/s]\rgen: 100%|##########| 10/10 [00:09<00:00, 1.0")
    relay.write("2it/s]\nhalf a li")
    assert lines == ["nb | gen:  10%|#         | 1/10", "nb | gen: 100%|##########| 10/10 [00:09<00:00, 1.01it/s]"]
    relay.write("ne\n\n\n")
    relay.write("tail")
    relay.close()
    assert lines[2:] == ["nb | half a line", "nb | tail"]


def test_plain_progress_bar_prints_its_final_state(monkeypatch, capsys):
    monkeypatch.setenv(PLAIN_ENV, "1")
    for _ in progress_bar(range(3), desc="judging", leave=False):
        pass
    err = capsys.readouterr().err
    assert "judging" in err and "3/3" in err  # kept at the end even though the caller asked leave=False


def test_plain_progress_env_is_scoped(monkeypatch):
    before = os.environ.get(PLAIN_ENV)
    with plain_progress_env():
        with plain_progress_env():
            assert os.environ[PLAIN_ENV] == "1"
        assert os.environ[PLAIN_ENV] == "1"
    assert os.environ.get(PLAIN_ENV) == before
    monkeypatch.setenv("PYTHONWARNINGS", "error::DeprecationWarning")
    with plain_progress_env():
        assert os.environ["PYTHONWARNINGS"] == "error::DeprecationWarning,ignore:IProgress not found"
    assert os.environ["PYTHONWARNINGS"] == "error::DeprecationWarning"


def test_stage_summary_lines_show_numbers_only():
    results = {"generate": {"n_train": 6, "kept_fraction": 0.83333, "notes": "text", "table": [1], "ok": True},
               "other": {"x": 1}}
    lines = stage_summary_lines(results, ["generate"])
    assert lines == ["generate: n_train=6 kept_fraction=0.8333"]
    assert stage_summary_lines({"a": {f"metric_{i}": i for i in range(30)}}, ["a"], width=60)[1].startswith("  ")


def test_driver_streams_kernel_progress_and_ends_with_the_numbers(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("RUN_DIR = ''\nN = 3\n")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from helpers.progress import progress_bar\nfrom helpers.runs import Run\n"
        "run = Run(RUN_DIR)\nrun.begin_stage('demo', {})\n"
        "for i in progress_bar(range(N), desc='examples generated'):\n    pass\n"
        "print('stage says hello')\nrun.record('n_done', N)\nrun.record('rate', 0.5)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "01_probe.ipynb"
    nbformat.write(nb, str(path))
    lines: list[str] = []
    pipeline.run_pipeline(tmp_path / "run", {"N": 4}, [str(path)], log=lines.append, stream_progress=True)
    text = "\n".join(lines)
    assert "01_probe | examples generated" in text and "4/4" in text
    assert "01_probe | stage says hello" in text
    assert "Warning" not in text  # no tqdm widget warning in a kernel without ipywidgets
    assert lines[-1].strip() == "demo: n_done=4 rate=0.5"
