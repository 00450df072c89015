"""Honest small numbers: a metric computed from few items, or from fewer than half of its items because the judge's
replies could not be read, is shown with its count and a flag, never as a plain number (WB-Score 100.0 from one
parsed grade of twelve says nothing)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .metrics import finite_or_none

MIN_ITEMS = 10
MIN_PARSED_SHARE = 0.5


def small_number_flag(n_used: int, n_total: int) -> str | None:
    """None when the count supports the number, else e.g. "n=1 of 12, not reliable"."""
    if n_used >= MIN_ITEMS and n_total and n_used >= MIN_PARSED_SHARE * n_total:
        return None
    return f"n={n_used} of {n_total}, not reliable"


def degenerate_fit_flag(coefficients: Iterable[float], n_used: int, label: str = "LC (minimal GLM)") -> str | None:
    """None when the length-control fit kept a coefficient, else a flag: an L1 fit on few items that zeroes every
    coefficient (cross-validation picked the strongest penalty) predicts 0.5 for everything, so its LC is 50 by
    construction and its standard error 0, whatever the judge said."""
    if any(abs(float(c)) > 0 for c in coefficients):
        return None
    return f"{label}: the fit on n={n_used} items kept no coefficient (50 by construction), not reliable"


def reportable(value: Any, n_used: int, n_total: int, flag: str | None = None) -> Any:
    """The value to record: the plain number when it is supported, else the number with its count and flag
    (`flag`: a reason beyond the count, e.g. `degenerate_fit_flag`, which wins over the count's)."""
    flag = flag or small_number_flag(n_used, n_total)
    value = finite_or_none(value)
    if flag is None:
        return value
    return {"value": value, "n": int(n_used), "n_total": int(n_total), "flag": flag}
