"""Committed notebooks carry no outputs and each declares a `parameters` cell using the shared names."""
from __future__ import annotations

import nbformat
import pytest

from helpers.notebook_hygiene import has_outputs, strip_outputs
from helpers.pipeline import NOTEBOOKS, notebook_parameters, notebook_path

SHARED = {"RUN_DIR", "SEED"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    assert not has_outputs(notebook_path(name)), f"run `make strip` to remove outputs from {name}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell(name):
    nb = nbformat.read(str(notebook_path(name)), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    params = notebook_parameters(name)
    assert SHARED <= set(params), f"{name} lacks {SHARED - set(params)}"
    assert all(p.isupper() for p in params), "parameter names are UPPER_CASE"
    assert nb.cells[0].cell_type == "markdown", "a notebook opens with its story"


def test_strip_outputs(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    cell.execution_count = 3
    nb.cells = [cell]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    assert has_outputs(path) and strip_outputs(path) and not has_outputs(path)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_reads_every_parameter(name):
    """papermill silently skips a parameter line it cannot parse (e.g. some comments): then the pipeline would
    reject that parameter as unknown. Every assignment in the cell must be seen."""
    nb = nbformat.read(str(notebook_path(name)), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {line.split("=", 1)[0].strip() for line in cell.source.splitlines()
                if "=" in line.split("#", 1)[0] and not line.startswith((" ", "#"))}
    assert assigned == set(notebook_parameters(name))
