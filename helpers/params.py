"""Parameter checks that fail before any model call, with messages that name the parameter and the fix.

Every notebook validates its `parameters` cell through these functions first, so a typo costs a second,
not an hour of paid generation.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ParameterError(ValueError):
    """A user-supplied parameter is wrong. The message names the parameter and says how to fix it."""

    def __init__(self, name: str, problem: str, fix: str) -> None:
        self.name, self.problem, self.fix = name, problem, fix
        super().__init__(f"{name}: {problem}. Fix: {fix}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ParameterError(name, f"got {value!r}", f"use one of {', '.join(repr(c) for c in choices)}")
    return value


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ParameterError(name, f"expected a whole number, got {value!r}", "pass an integer, e.g. 8")
    _check_bounds(name, value, low, high)
    return value


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, f"expected a number, got {value!r}", "pass a number, e.g. 0.2")
    _check_bounds(name, float(value), low, high)
    return float(value)


def _check_bounds(name: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise ParameterError(name, f"{value} is below the minimum {low}", f"use a value >= {low}")
    if high is not None and value > high:
        raise ParameterError(name, f"{value} is above the maximum {high}", f"use a value <= {high}")


def check_existing_path(name: str, value: str | Path, kind: str = "file") -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise ParameterError(name, f"{str(value)!r} does not exist", f"point {name} at an existing {kind}, or leave it empty")
    return path


def check_env_var_name(name: str, value: str) -> str:
    """The *_API_KEY_ENV parameters hold the name of a variable, never the key itself."""
    if not value:
        return value
    looks_like_secret = value.startswith(("sk-", "sk_")) or (len(value) > 30 and not value.isupper())
    if looks_like_secret:
        raise ParameterError(
            name,
            "this looks like an API key, not the name of an environment variable",
            f"export the key (e.g. `export OPENAI_API_KEY=...`) and set {name}='OPENAI_API_KEY'; keys never go into parameters",
        )
    if not value.replace("_", "").isalnum():
        raise ParameterError(name, f"{value!r} is not a valid environment variable name", "use a name like 'OPENAI_API_KEY'")
    return value
