"""Keep committed notebooks free of outputs: executed copies with outputs belong in run folders.

    python -m helpers.notebook_hygiene notebooks/*.ipynb     # strip in place (what `make strip` runs)
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def has_outputs(path: str | Path) -> bool:
    nb = nbformat.read(str(path), as_version=4)
    return any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count")) for c in nb.cells)


def strip_outputs(path: str | Path) -> bool:
    """Remove outputs and execution counts; returns True when the file changed."""
    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.get("metadata", {}):
                cell.metadata.pop(key)
                changed = True
    if changed:
        nbformat.write(nb, str(path))
    return changed


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        if strip_outputs(arg):
            print(f"stripped {arg}")
