"""Figures for stage 4; each returns the matplotlib Figure so the notebook can show it and save it in the run."""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..figures import apply_theme
from .calibration import CALIBRATION_MODEL
from .interval_plots import plot_win_rate_bars


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=9)
    ax.set_axis_off()


def plot_win_rates(summary: pd.DataFrame, judge_name: str = "", per_item: pd.DataFrame | None = None):
    """Win rate and LC win rate per model with 95 % intervals (bootstrap over the per-item table when given), and
    the 50 % line (= as good as the reference)."""
    return plot_win_rate_bars(summary, per_item, judge_name)


def plot_metric_by(df: pd.DataFrame, x: str, metric: str, line: str | None = None, title: str = "",
                   empty_message: str = "no data"):
    """A metric against one parameter, one line per value of another (e.g. shirker fraction x kind), with 95 %
    normal intervals (±1.96 standard errors) when a `METRIC_se` column is given."""
    apply_theme()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    if df is None or df.empty or x not in df or metric not in df or df[metric].isna().all():
        _empty(ax, empty_message)
        return fig
    groups = df.groupby(line) if line and line in df else [("all", df)]
    se_col = f"{metric}_se"
    for name, g in groups:
        g = g.sort_values(x)
        yerr = 1.96 * g[se_col].fillna(0) if se_col in g else None
        ax.errorbar(g[x], g[metric], yerr=yerr, marker="o", capsize=3, label=str(name))
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs {x}")
    if line:
        ax.legend(title=line)
    return fig


def plot_mt_bench_categories(per_category: Mapping[str, pd.DataFrame]):
    """MT-Bench average score per category, one bar group per category and one bar per model."""
    apply_theme()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if not per_category:
        _empty(ax, "no MT-Bench scores")
        return fig
    table = pd.DataFrame({m: t["average"] for m, t in per_category.items() if "average" in t}).dropna(how="all")
    if table.empty:
        _empty(ax, "no readable MT-Bench ratings (every judge reply was unparsed)")
        return fig
    table.plot.bar(ax=ax)
    ax.set_ylim(0, 10)
    ax.set_ylabel("mean score (1-10)")
    ax.set_title("MT-Bench-style scores per category")
    return fig


def plot_leaderboard(leaderboard: pd.DataFrame, highlight: str = "", ours: Mapping[str, float] | None = None):
    """Published AlpacaEval 2.0 LC win rates, the paper's model highlighted; our numbers drawn apart because they
    come from another judge, the calibration row (the paper's model's answers under this run's judge) in orange
    beside the published red bar it is read against."""
    apply_theme()
    fig, ax = plt.subplots(figsize=(7, 0.3 * (len(leaderboard) + len(ours or {})) + 1))
    rows = leaderboard[["model", "lc_win_rate"]].copy()
    rows["kind"] = np.where(rows["model"] == highlight, "paper", "published")
    for name, value in (ours or {}).items():
        kind = "calibration" if name.startswith(CALIBRATION_MODEL) else "ours"
        rows.loc[len(rows)] = [f"{name} (this run{'' if kind == 'ours' else ': the paper model'}, this judge)", value,
                               kind]
    rows = rows.sort_values("lc_win_rate")
    colours = rows["kind"].map({"paper": "tab:red", "published": "tab:blue", "ours": "tab:grey",
                                "calibration": "tab:orange"})
    ax.barh(rows["model"], rows["lc_win_rate"], color=colours)
    ax.set_xlabel("AlpacaEval 2.0 LC win rate (%)")
    ax.set_title("Context: published AlpacaEval 2.0 rows (GPT-4 Turbo judge)")
    return fig
