"""pyproject declares exactly the package data that exists: every glob matches a file, every data file is declared."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _globs() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-data"]["helpers"]


def test_every_declared_glob_matches_files():
    for pattern in _globs():
        assert list((ROOT / "helpers").glob(pattern)), f"pyproject declares helpers/{pattern} but nothing matches"


def test_every_data_file_beside_the_code_is_declared():
    declared = {p for pattern in _globs() for p in (ROOT / "helpers").glob(pattern)}
    data = {p for p in (ROOT / "helpers").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert data - declared == set(), "add these to [tool.setuptools.package-data] in pyproject.toml"
