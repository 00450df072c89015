"""Ablation curves and setting comparisons from a sweep table, with intervals that carry item and seed noise.

A sweep row (`helpers.sweep`: one per cell and seed) names the per-item judge preferences its stage 4 wrote
(`items_path`). A win-rate point of a curve is the mean over seeds of the per-seed win rates, with the hierarchical
bootstrap interval of `helpers.judge.intervals` (seeds, then items within seeds). Numbers without per-item data
(LC win rate, MT-Bench, WB-Score) get the seed-level interval only, and the table says so.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..judge.intervals import (DEFAULT_RESAMPLES, Interval, compare_settings, hierarchical_bootstrap,
                               seed_bootstrap)

_WIN_RATE = re.compile(r"^(?:evaluate\.)?win_rate(?:_(?P<model>[a-z0-9]+))?$")


def item_model(metric: str) -> str | None:
    """The model whose per-item preferences make up `metric`: 'evaluate.win_rate' -> 'student',
    'evaluate.win_rate_base' -> 'base'; None for metrics that have no per-item data."""
    match = _WIN_RATE.match(metric)
    if not match or (match["model"] or "") == "se":
        return None
    return match["model"] or "student"


def _seeds(rows: pd.DataFrame) -> pd.Series:
    """The seed of each sweep row (old tables without a seed column: SEED, else the row number)."""
    for column in ("seed", "SEED"):
        if column in rows and rows[column].notna().all():
            return rows[column]
    return pd.Series(range(len(rows)), index=rows.index)


def load_items(rows: pd.DataFrame, model: str = "student") -> pd.DataFrame | None:
    """Per-item preferences of `model` for these sweep rows, with a `seed` column; None if any row has none."""
    if "items_path" not in rows:
        return None
    tables = []
    for seed, path in zip(_seeds(rows), rows["items_path"]):
        if not isinstance(path, str) or not path or not Path(path).exists():
            return None
        items = pd.read_csv(path)
        items = items[items["model"] == model] if "model" in items else items
        tables.append(items[["id", "preference"]].assign(seed=seed))
    return pd.concat(tables, ignore_index=True) if tables else None


def setting_interval(rows: pd.DataFrame, metric: str, n_resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                     rng: int = 0) -> Interval:
    """The interval of one setting (its rows = its seeds): hierarchical when per-item data exist, else seeds only."""
    model = item_model(metric)
    items = load_items(rows, model) if model else None
    if items is not None and len(items):
        return hierarchical_bootstrap(items, "preference", "seed", n_resamples, level, rng, scale=100.0)
    return seed_bootstrap(rows[metric] if metric in rows else [], n_resamples, level, rng)


def _groups(sweep: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    keys = [k for k in keys if k in sweep]
    if not keys:
        return [((), sweep)]
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in sweep.groupby(keys, sort=True, dropna=False)]


def ok_rows(sweep: pd.DataFrame) -> pd.DataFrame:
    """The rows whose cell finished."""
    return sweep[sweep["status"] == "ok"] if "status" in sweep else sweep


def ablation_intervals(sweep: pd.DataFrame, x: str, line: str | None = None, metric: str = "evaluate.win_rate",
                       n_resamples: int = DEFAULT_RESAMPLES, level: float = 0.95, rng: int = 0) -> pd.DataFrame:
    """One row per setting (line value, x value): the mean over seeds of `metric`, its interval and how it was
    computed (columns estimate, low, high, level, n_seeds, n_items, method)."""
    rows = ok_rows(sweep)
    keys = [k for k in (line, x) if k]
    out = []
    for values, group in _groups(rows, keys):
        if x not in rows:
            break
        interval = setting_interval(group, metric, n_resamples, level, rng)
        out.append({**dict(zip([k for k in keys if k in rows], values)), "metric": metric, **interval.as_dict()})
    return pd.DataFrame(out)


def paired_comparisons(sweep: pd.DataFrame, param: str, baseline: Any, by: str | None = None,
                       metric: str = "evaluate.win_rate", n_resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                       rng: int = 0) -> pd.DataFrame:
    """Each value of `param` minus its `baseline` value (e.g. 20 % shirkers minus 0 %), within each value of `by`:
    the difference of the means over seeds with its interval, paired by seed and item where both have item data."""
    rows = ok_rows(sweep)
    if param not in rows:
        return pd.DataFrame()
    out = []
    model = item_model(metric)
    for by_values, group in _groups(rows, [by] if by else []):
        base = group[group[param] == baseline]
        if base.empty:
            continue
        for value, other in group[group[param] != baseline].groupby(param, sort=True):
            a_items = load_items(other, model) if model else None
            b_items = load_items(base, model) if model else None
            if a_items is not None and b_items is not None:
                interval = compare_settings(a_items, b_items, "preference", "seed", "id", n_resamples, level, rng,
                                            scale=100.0)
            else:
                interval = _seed_level_difference(other, base, metric, n_resamples, level, rng)
            label = dict(zip([by] if by and by in rows else [], by_values))
            out.append({**label, param: value, "baseline": baseline, "metric": metric, **interval.as_dict()})
    return pd.DataFrame(out)


def _seed_level_difference(a: pd.DataFrame, b: pd.DataFrame, metric: str, n_resamples: int, level: float,
                           rng: int) -> Interval:
    """Without item data: differences of the recorded numbers, paired by seed where both settings share seeds."""
    left = pd.DataFrame({"seed": _seeds(a).to_numpy(), "value": a[metric].to_numpy() if metric in a else None})
    right = pd.DataFrame({"seed": _seeds(b).to_numpy(), "value": b[metric].to_numpy() if metric in b else None})
    both = left.merge(right, on="seed", suffixes=("_a", "_b")).dropna()
    result = seed_bootstrap(pd.to_numeric(both["value_a"]) - pd.to_numeric(both["value_b"]), n_resamples, level, rng)
    return Interval(result.estimate, result.low, result.high, level, result.n_seeds, 0,
                    "paired by seed, seeds only (no per-item data)")
