"""95 % intervals for judge-based numbers that carry both sources of noise: which items were judged and which seed
produced the model.

A win rate on a few hundred items has a standard error of several points, and a retrained student moves by as much
again from one seed to the next. A curve or a comparison of settings is only readable with both in its interval, so
the bootstrap here is hierarchical: draw the seeds with replacement, then within each drawn seed draw its items
with replacement, and take the mean over seeds of the per-seed means. The percentile interval of those resampled
means is the interval. With one seed it is the ordinary item bootstrap; with identical values it has zero width.

Comparisons of two settings (e.g. 0 % vs 20 % shirkers) are paired where they can be: the same seed and the same
item in both settings give one difference, so the item difficulty shared by both settings cancels out.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

DEFAULT_RESAMPLES = 2000
# Resamples drawn at once are capped so that seeds x items x resamples stays near this many values (memory bound).
_VALUES_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval, and what it was computed from."""

    estimate: float
    low: float
    high: float
    level: float
    n_seeds: int
    n_items: int
    method: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def seed_matrix(table: pd.DataFrame, value: str, seed: str | None = "seed") -> tuple[np.ndarray, np.ndarray, list]:
    """Per-seed values as a padded matrix (seeds x most items), each row's usable values first, and their counts.

    Missing values (NaN, e.g. unparsed judge verdicts) are left out; a seed with no usable value is dropped.
    """
    groups = [(None, table)] if seed is None or seed not in table else list(table.groupby(seed, sort=True))
    rows, labels = [], []
    for label, g in groups:
        v = pd.to_numeric(g[value], errors="coerce").to_numpy(dtype=float)
        v = v[~np.isnan(v)]
        if len(v):
            rows.append(v)
            labels.append(label)
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    matrix = np.full((len(rows), int(counts.max()) if len(rows) else 0), np.nan)
    for i, r in enumerate(rows):
        matrix[i, : len(r)] = r
    return matrix, counts, labels


def chunk_sizes(n_resamples: int, n_seeds: int, n_items: int) -> list[int]:
    """How many resamples are drawn per step (the RNG is used chunk by chunk in this order)."""
    per = max(1, _VALUES_PER_CHUNK // max(1, n_seeds * n_items))
    return [min(per, n_resamples - start) for start in range(0, n_resamples, per)]


def resampled_means(matrix: np.ndarray, counts: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Hierarchical bootstrap replicates of the mean of per-seed means (vectorised; one value per resample).

    Per chunk the RNG draws the seed indices (resamples x seeds) first, then uniforms (resamples x seeds x items)
    that pick items within each drawn seed.
    """
    n_seeds, n_items = matrix.shape
    filled = np.nan_to_num(matrix)
    positions = np.arange(n_items)
    out = []
    for size in chunk_sizes(n_resamples, n_seeds, n_items):
        seeds = rng.integers(0, n_seeds, size=(size, n_seeds))
        n = counts[seeds]
        items = np.minimum((rng.random((size, n_seeds, n_items)) * n[..., None]).astype(np.int64), n_items - 1)
        drawn = filled[seeds[..., None], items]
        seed_means = np.where(positions < n[..., None], drawn, 0.0).sum(axis=-1) / n
        out.append(seed_means.mean(axis=-1))
    return np.concatenate(out) if out else np.empty(0)


def _interval(estimate: float, replicates: np.ndarray, level: float, n_seeds: int, n_items: int,
              method: str) -> Interval:
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail]) if len(replicates) else (np.nan, np.nan)
    return Interval(float(estimate), float(low), float(high), level, n_seeds, n_items, method)


def _check(level: float, n_resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")


def hierarchical_bootstrap(table: pd.DataFrame, value: str = "preference", seed: str | None = "seed",
                           n_resamples: int = DEFAULT_RESAMPLES, level: float = 0.95, rng: int = 0,
                           scale: float = 1.0) -> Interval:
    """Mean over seeds of the per-seed mean of `value`, with its hierarchical bootstrap interval.

    `table` has one row per (seed, item); without a `seed` column it is one seed (item bootstrap only). `scale`
    multiplies everything (100 turns preferences in [0, 1] into a win rate in percent). `rng` seeds the bootstrap.
    """
    _check(level, n_resamples)
    matrix, counts, _ = seed_matrix(table, value, seed)
    if not len(counts):
        return Interval(np.nan, np.nan, np.nan, level, 0, 0, "no data")
    estimate = np.nanmean(matrix, axis=1).mean() * scale
    reps = resampled_means(matrix, counts, n_resamples, np.random.default_rng(rng)) * scale
    method = "items within seeds, then seeds" if len(counts) > 1 else "items (one seed)"
    return _interval(estimate, reps, level, len(counts), int(counts.sum()), method)


def paired_table(a: pd.DataFrame, b: pd.DataFrame, value: str = "preference", seed: str | None = "seed",
                 item: str = "id") -> pd.DataFrame:
    """Per (seed, item) present with a usable value in both settings: the difference a - b in column `value`."""
    keys = [k for k in (seed, item) if k is not None and k in a and k in b]
    if item not in keys:
        return pd.DataFrame(columns=[*keys, value])
    left = a[[*keys, value]].dropna(subset=[value])
    right = b[[*keys, value]].dropna(subset=[value])
    both = left.merge(right, on=keys, suffixes=("_a", "_b"))
    both[value] = pd.to_numeric(both[f"{value}_a"]) - pd.to_numeric(both[f"{value}_b"])
    return both[[*keys, value]]


def compare_settings(a: pd.DataFrame, b: pd.DataFrame, value: str = "preference", seed: str | None = "seed",
                     item: str = "id", n_resamples: int = DEFAULT_RESAMPLES, level: float = 0.95, rng: int = 0,
                     scale: float = 1.0) -> Interval:
    """Difference of setting a minus setting b with its interval.

    Paired by (seed, item) where the two tables share them (the usual case in a sweep: same seeds, same eval set);
    otherwise the two settings are bootstrapped independently and the replicates subtracted.
    """
    _check(level, n_resamples)
    paired = paired_table(a, b, value, seed, item)
    if len(paired):
        result = hierarchical_bootstrap(paired, value, seed, n_resamples, level, rng, scale)
        return Interval(result.estimate, result.low, result.high, level, result.n_seeds, result.n_items,
                        f"paired by item{' and seed' if result.n_seeds > 1 else ''}: {result.method}")
    gen = np.random.default_rng(rng)
    parts = []
    for table in (a, b):
        matrix, counts, _ = seed_matrix(table, value, seed)
        if not len(counts):
            return Interval(np.nan, np.nan, np.nan, level, 0, 0, "no data")
        parts.append((np.nanmean(matrix, axis=1).mean(), resampled_means(matrix, counts, n_resamples, gen), counts))
    (est_a, rep_a, n_a), (est_b, rep_b, n_b) = parts
    return _interval((est_a - est_b) * scale, (rep_a - rep_b) * scale, level, min(len(n_a), len(n_b)),
                     int(n_a.sum() + n_b.sum()), "unpaired: each setting bootstrapped on its own")


def seed_bootstrap(values: pd.Series | np.ndarray | list[float], n_resamples: int = DEFAULT_RESAMPLES,
                   level: float = 0.95, rng: int = 0) -> Interval:
    """Interval of a mean over seeds when only one number per seed exists (e.g. an LC win rate, an MT-Bench
    average): the seed-level part of the variation only. With fewer than two values there is no interval (NaN)."""
    _check(level, n_resamples)
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype=float)
    if len(v) < 2:
        est = float(v.mean()) if len(v) else np.nan
        return Interval(est, np.nan, np.nan, level, len(v), 0, "seeds only (too few seeds for an interval)")
    gen = np.random.default_rng(rng)
    reps = v[gen.integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
    return _interval(v.mean(), reps, level, len(v), 0, "seeds only (no per-item data)")
