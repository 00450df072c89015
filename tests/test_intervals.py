"""Interval arithmetic on fixed small tables: degenerate cases, a slow reference with the same RNG, pairing."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from helpers.judge.intervals import (chunk_sizes, compare_settings, hierarchical_bootstrap, paired_table,
                                     seed_bootstrap, seed_matrix)

# Three seeds, ragged after dropping the unparsed verdict (NaN) of seed 2.
TABLE = pd.DataFrame({
    "seed": [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],
    "id": ["a", "b", "c", "d"] * 3,
    "preference": [1.0, 0.0, 0.5, 1.0, 0.0, 0.0, 1.0, 0.5, 1.0, np.nan, 1.0, 0.0],
})


def slow_reference(table: pd.DataFrame, n_resamples: int, rng_seed: int, level: float = 0.95):
    """The same bootstrap written as plain loops, consuming the generator in the documented order."""
    groups = [g["preference"].dropna().tolist() for _, g in table.groupby("seed", sort=True)]
    n_items = max(len(g) for g in groups)
    rng = np.random.default_rng(rng_seed)
    reps = []
    for size in chunk_sizes(n_resamples, len(groups), n_items):
        seeds = rng.integers(0, len(groups), size=(size, len(groups)))
        u = rng.random((size, len(groups), n_items))
        for r in range(size):
            means = []
            for s in range(len(groups)):
                g = groups[seeds[r, s]]
                picks = [g[int(u[r, s, j] * len(g))] for j in range(len(g))]
                means.append(sum(picks) / len(picks))
            reps.append(sum(means) / len(means))
    estimate = sum(sum(g) / len(g) for g in groups) / len(groups)
    low, high = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    return estimate, low, high


def test_matches_slow_reference_with_the_same_rng():
    fast = hierarchical_bootstrap(TABLE, n_resamples=300, rng=7)
    estimate, low, high = slow_reference(TABLE, 300, 7)
    assert fast.estimate == pytest.approx(estimate)
    assert (fast.low, fast.high) == (pytest.approx(low), pytest.approx(high))
    assert fast.n_seeds == 3 and fast.n_items == 11 and "seeds" in fast.method


def test_fixed_table_numbers():
    result = hierarchical_bootstrap(TABLE, n_resamples=2000, rng=0, scale=100)
    # per-seed means 62.5, 37.5, 66.67 -> 55.56
    assert result.estimate == pytest.approx((62.5 + 37.5 + 200 / 3) / 3)
    assert 0 <= result.low < result.estimate < result.high <= 100
    again = hierarchical_bootstrap(TABLE, n_resamples=2000, rng=0, scale=100)
    assert again == result  # seeded: the same interval every time


def test_zero_variance_gives_zero_width():
    flat = TABLE.assign(preference=0.5)
    result = hierarchical_bootstrap(flat, scale=100)
    assert result.estimate == result.low == result.high == pytest.approx(50)
    diff = compare_settings(flat, flat)
    assert diff.estimate == diff.low == diff.high == 0


def test_one_seed_is_the_item_bootstrap():
    one = TABLE[TABLE["seed"] == 0]
    result = hierarchical_bootstrap(one, n_resamples=4000, rng=3)
    assert result.n_seeds == 1 and result.method == "items (one seed)"
    # the plain item bootstrap of the same four values with the same generator
    values = one["preference"].to_numpy()
    rng = np.random.default_rng(3)
    rng.integers(0, 1, size=(4000, 1))
    picks = (rng.random((4000, 1, 4)) * 4).astype(int)
    expected = np.quantile(values[picks[:, 0, :]].mean(axis=1), [0.025, 0.975])
    assert (result.low, result.high) == (pytest.approx(expected[0]), pytest.approx(expected[1]))
    # no seed column at all is the same thing
    assert hierarchical_bootstrap(one.drop(columns="seed"), n_resamples=4000, rng=3) == result


def test_seed_variation_widens_the_interval():
    # items identical within each seed, seeds far apart: item-only resampling would see no variation at all
    table = pd.DataFrame({"seed": [0] * 5 + [1] * 5 + [2] * 5, "id": list("abcde") * 3,
                          "preference": [0.0] * 5 + [0.5] * 5 + [1.0] * 5})
    result = hierarchical_bootstrap(table, rng=1)
    assert result.estimate == pytest.approx(0.5) and result.low < 0.3 and result.high > 0.7


def test_paired_difference_cancels_item_difficulty():
    items = [f"q{i}" for i in range(40)]
    difficulty = np.linspace(0, 1, 40)
    a = pd.DataFrame({"seed": 0, "id": items, "preference": difficulty})
    b = a.assign(preference=np.clip(difficulty - 0.1, 0, 1))
    paired = compare_settings(a, b, scale=100)
    assert paired.method.startswith("paired") and paired.n_items == 40
    assert paired.estimate == pytest.approx(100 * (a["preference"] - b["preference"]).mean())
    unpaired = compare_settings(a, b.assign(id=[f"other{i}" for i in range(40)]), scale=100)
    assert unpaired.method.startswith("unpaired")
    assert unpaired.estimate == pytest.approx(paired.estimate)
    assert (paired.high - paired.low) < (unpaired.high - unpaired.low) / 3


def test_paired_table_keeps_common_parsed_items():
    b = TABLE.assign(preference=TABLE["preference"].fillna(0.5)).iloc[:-1]
    diff = paired_table(TABLE, b)
    assert len(diff) == 10  # 12 rows - the unparsed one in a - the row missing from b
    assert (diff["preference"] == 0).all()


def test_seed_bootstrap_and_ragged_matrix():
    result = seed_bootstrap([30.0, 40.0, 50.0], rng=0)
    assert result.estimate == 40 and 30 <= result.low < 40 < result.high <= 50 and result.n_seeds == 3
    single = seed_bootstrap([42.0])
    assert single.estimate == 42 and np.isnan(single.low)
    matrix, counts, labels = seed_matrix(TABLE, "preference")
    assert counts.tolist() == [4, 4, 3] and labels == [0, 1, 2] and np.isnan(matrix[2, 3])


def test_bad_arguments_and_empty_table():
    with pytest.raises(ValueError):
        hierarchical_bootstrap(TABLE, level=95)
    empty = hierarchical_bootstrap(TABLE.iloc[:0])
    assert empty.method == "no data" and np.isnan(empty.estimate)


def test_three_seeds_of_805_items_is_fast():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"seed": np.repeat([0, 1, 2], 805), "id": np.tile(np.arange(805), 3),
                          "preference": rng.choice([0.0, 0.5, 1.0], size=3 * 805)})
    start = time.perf_counter()
    hierarchical_bootstrap(table, n_resamples=2000)
    assert time.perf_counter() - start < 1.0
