"""Ablation curves and setting comparisons from a fabricated sweep (3 seeds x 2 shirker fractions), and the figures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers.evaluate.ablations import ablation_intervals, item_model, load_items, paired_comparisons  # noqa: E402
from helpers.evaluate.interval_plots import plot_ablation, win_rate_intervals  # noqa: E402
from helpers.evaluate.plots import plot_win_rates  # noqa: E402
from helpers.runs import Run  # noqa: E402

ITEMS = [f"q{i}" for i in range(30)]


def fabricated_sweep(tmp_path, with_items: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for fraction in (0.0, 0.2):
        for seed in (0, 1, 2):
            prefs = (rng.random(30) < (0.6 - fraction)).astype(float)
            path = ""
            if with_items:
                path = tmp_path / f"f{fraction}_s{seed}.csv"
                pd.DataFrame({"model": ["student"] * 30 + ["base"] * 30, "id": ITEMS * 2,
                              "preference": list(prefs) + [0.0] * 30}).to_csv(path, index=False)
            rows.append({"cell": f"F={fraction}__seed={seed}", "SHIRKER_FRACTION": fraction, "SHIRKER_KIND": "junk",
                         "seed": seed, "status": "ok", "items_path": str(path),
                         "evaluate.win_rate": prefs.mean() * 100, "evaluate.lc_win_rate": prefs.mean() * 90})
    rows.append({"cell": "broken", "SHIRKER_FRACTION": 0.5, "seed": 0, "status": "failed", "items_path": ""})
    return pd.DataFrame(rows)


def test_metric_to_model():
    assert item_model("evaluate.win_rate") == "student" and item_model("evaluate.win_rate_base") == "base"
    assert item_model("evaluate.lc_win_rate") is None and item_model("evaluate.win_rate_se") is None


def test_curve_points_are_means_over_seeds_with_intervals(tmp_path):
    sweep = fabricated_sweep(tmp_path)
    table = ablation_intervals(sweep, "SHIRKER_FRACTION", "SHIRKER_KIND")
    assert list(table["SHIRKER_FRACTION"]) == [0.0, 0.2]  # the failed cell is left out
    for _, row in table.iterrows():
        seeds = sweep[(sweep["SHIRKER_FRACTION"] == row["SHIRKER_FRACTION"]) & (sweep["status"] == "ok")]
        assert row["estimate"] == pytest.approx(seeds["evaluate.win_rate"].mean())
        assert row["low"] < row["estimate"] < row["high"] and row["n_seeds"] == 3 and row["n_items"] == 90
        assert row["method"] == "items within seeds, then seeds"
    lc = ablation_intervals(sweep, "SHIRKER_FRACTION", metric="evaluate.lc_win_rate")
    assert lc["method"].str.startswith("seeds only").all()
    items = load_items(sweep[sweep["status"] == "ok"], "base")
    assert len(items) == 180 and (items["preference"] == 0).all()


def test_paired_comparison_of_two_fractions(tmp_path):
    sweep = fabricated_sweep(tmp_path)
    diff = paired_comparisons(sweep, "SHIRKER_FRACTION", 0.0, by="SHIRKER_KIND")
    assert len(diff) == 1 and diff["method"].iloc[0].startswith("paired by item and seed")
    row = diff.iloc[0]
    means = sweep[sweep["status"] == "ok"].groupby("SHIRKER_FRACTION")["evaluate.win_rate"].mean()
    assert row["estimate"] == pytest.approx(means[0.2] - means[0.0])
    assert row["low"] < row["estimate"] < row["high"]
    no_items = paired_comparisons(fabricated_sweep(tmp_path, with_items=False), "SHIRKER_FRACTION", 0.0)
    assert no_items["method"].iloc[0] == "paired by seed, seeds only (no per-item data)"
    assert no_items["estimate"].iloc[0] == pytest.approx(row["estimate"])


def test_figures_are_saved_as_png_and_svg(tmp_path):
    sweep = fabricated_sweep(tmp_path)
    run = Run(tmp_path / "run")
    run.begin_stage("evaluate", {})
    fig = plot_ablation(ablation_intervals(sweep, "SHIRKER_FRACTION", "SHIRKER_KIND"), "SHIRKER_FRACTION",
                        "SHIRKER_KIND", per_seed=sweep[sweep["status"] == "ok"])
    png = run.save_figure(fig, "sweep_shirker_fraction")
    assert png.suffix == ".png" and png.with_suffix(".svg").exists() and png.stat().st_size > 1000
    per_item = pd.read_csv(sweep["items_path"].iloc[0])
    summary = pd.DataFrame([{"model": m, "win_rate": g["preference"].mean() * 100, "win_rate_se": 5.0,
                             "lc_win_rate": 40.0, "lc_win_rate_se": 3.0} for m, g in per_item.groupby("model")])
    intervals = win_rate_intervals(per_item).set_index("model")
    assert intervals.loc["base", "low"] == intervals.loc["base", "high"] == 0
    bars = plot_win_rates(summary, "judge-x", per_item)
    lines = [line for line in bars.axes[0].lines if len(line.get_xdata()) == 2]  # error bar segments
    assert lines, "the bars carry interval lines"
    empty = plot_ablation(pd.DataFrame(), "K_SKILLS", empty_message="no sweep")
    assert "no sweep" in empty.axes[0].texts[0].get_text()
