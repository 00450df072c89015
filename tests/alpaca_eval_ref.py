"""Import helpers for the alpaca_eval reference copy that `make setup` installs into .venv/alpaca_eval_ref.

alpaca_eval is not a dependency of the kit: tests compare the kit with it and skip when it is not importable.
"""
from __future__ import annotations

import importlib
import sys

import pytest

from helpers.runs import PROJECT_ROOT

REFERENCE_FOLDER = PROJECT_ROOT / ".venv" / "alpaca_eval_ref"


def import_reference(module: str):
    """Import `alpaca_eval.<module>` from the reference folder (appended to sys.path), or skip the test."""
    added = REFERENCE_FOLDER.is_dir() and str(REFERENCE_FOLDER) not in sys.path
    if added:
        sys.path.append(str(REFERENCE_FOLDER))
    try:
        return importlib.import_module(f"alpaca_eval.{module}")
    except Exception:  # not installed, or its own imports fail
        pytest.skip("alpaca_eval is not importable")
    finally:
        if added:
            sys.path.remove(str(REFERENCE_FOLDER))
