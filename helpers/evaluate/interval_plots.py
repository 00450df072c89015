"""Figures with 95 % intervals (seaborn, the kit's theme): ablation curves over a sweep parameter and win-rate bars.

Intervals are computed by `helpers.judge.intervals` (a hierarchical bootstrap over seeds and items) and drawn as
error bars; each seed's own number is drawn as a faint dot so the spread between seeds stays visible.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy.stats import norm

from ..figures import apply_theme
from ..judge.intervals import DEFAULT_RESAMPLES, hierarchical_bootstrap


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=9)
    ax.set_axis_off()


def _positions(values: pd.Series) -> tuple[np.ndarray, list | None]:
    """Numeric x stays numeric; anything else (e.g. SKILL_SOURCE) becomes evenly spaced categories."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float), None
    categories = sorted(values.astype(str).unique())
    return np.array([categories.index(str(v)) for v in values], dtype=float), categories


def plot_ablation(intervals: pd.DataFrame, x: str, line: str | None = None, per_seed: pd.DataFrame | None = None,
                  title: str = "", empty_message: str = "no data"):
    """A curve of `estimate` (the mean over seeds) against `x`, one line per value of `line`, with the interval
    [low, high] as error bars; `per_seed` (the sweep rows) adds each seed's recorded number as a dot."""
    apply_theme()
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    if intervals is None or intervals.empty or x not in intervals or intervals["estimate"].isna().all():
        _empty(ax, empty_message)
        return fig
    metric = str(intervals["metric"].iloc[0]) if "metric" in intervals else "metric"
    groups = list(intervals.groupby(line, sort=True)) if line and line in intervals else [(None, intervals)]
    all_x, categories = _positions(intervals[x])
    palette = sns.color_palette(n_colors=max(1, len(groups)))
    offsets = np.linspace(-0.04, 0.04, len(groups)) * (np.ptp(all_x) or 1) if len(groups) > 1 else [0.0]
    for (name, g), colour, shift in zip(groups, palette, offsets):
        g = g.sort_values(x)
        pos = (np.array([categories.index(str(v)) for v in g[x]], dtype=float) if categories
               else g[x].to_numpy(dtype=float)) + shift
        est = g["estimate"].to_numpy(dtype=float)
        err = np.vstack([est - g["low"].to_numpy(dtype=float), g["high"].to_numpy(dtype=float) - est])
        label = f"{line}={name}" if name is not None else "mean over seeds"
        ax.errorbar(pos, est, yerr=np.nan_to_num(err), color=colour, marker="o", capsize=4, lw=1.6, label=label)
        if per_seed is not None and metric in per_seed and x in per_seed:
            seeds = per_seed if name is None else per_seed[per_seed[line] == name]
            seed_pos = (np.array([categories.index(str(v)) for v in seeds[x]], dtype=float) if categories
                        else seeds[x].to_numpy(dtype=float)) + shift
            ax.scatter(seed_pos, pd.to_numeric(seeds[metric], errors="coerce"), color=colour, alpha=0.35, s=14,
                       zorder=1)
    if categories:
        ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    methods = sorted(set(intervals["method"].dropna())) if "method" in intervals else []
    ax.set_title(title or f"{metric} vs {x}", fontsize=10)
    level = intervals["level"].iloc[0] if "level" in intervals else 0.95
    note = f"mean over seeds; bars: {level:.0%} interval, {'; '.join(methods)}; dots: single seeds"
    fig.text(0.01, -0.06, note, fontsize=7, ha="left", va="top", wrap=True)
    ax.legend(fontsize=8)
    return fig


def win_rate_intervals(per_item: pd.DataFrame, n_resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                       rng: int = 0) -> pd.DataFrame:
    """Per model: win rate (percent) with its bootstrap interval over items (over seeds too when `seed` is given)."""
    rows = []
    for model, items in per_item.groupby("model", sort=False):
        rows.append({"model": model, **hierarchical_bootstrap(items, "preference", "seed", n_resamples, level, rng,
                                                              scale=100.0).as_dict()})
    return pd.DataFrame(rows)


def plot_win_rate_bars(summary: pd.DataFrame, per_item: pd.DataFrame | None = None, judge_name: str = "",
                       level: float = 0.95):
    """Win rate and LC win rate per model with 95 % intervals: the win rate's from the item bootstrap when the
    per-item table is given (else the normal interval from its standard error), the LC win rate's from its standard
    error; the 50 % line is "as good as the reference"."""
    apply_theme()
    z = float(norm.ppf(0.5 + level / 2))
    rows = []
    boot = win_rate_intervals(per_item, level=level).set_index("model") if per_item is not None and len(per_item) else None
    for r in summary.to_dict("records"):
        if boot is not None and r["model"] in boot.index:
            low, high = boot.loc[r["model"], "low"], boot.loc[r["model"], "high"]
        else:
            low, high = r["win_rate"] - z * (r.get("win_rate_se") or 0), r["win_rate"] + z * (r.get("win_rate_se") or 0)
        rows.append({"model": r["model"], "metric": "win rate", "value": r["win_rate"], "low": low, "high": high})
        if isinstance(r.get("lc_flag"), str) or pd.isna(r.get("lc_win_rate")):  # an LC the fit cannot support: not drawn
            continue
        lc_se = r.get("lc_win_rate_se") or 0
        rows.append({"model": r["model"], "metric": "LC win rate", "value": r["lc_win_rate"],
                     "low": r["lc_win_rate"] - z * lc_se, "high": r["lc_win_rate"] + z * lc_se})
    table = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if table.empty:  # every number was flagged (too few items or readable verdicts): nothing honest to draw
        ax.text(0.5, 0.5, "no win rate rests on enough items to plot\n(see the table: flagged numbers)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    sns.barplot(data=table, x="model", y="value", hue="metric", errorbar=None, ax=ax)
    for container, (_, g) in zip(ax.containers, table.groupby("metric", sort=False)):
        centres = [bar.get_x() + bar.get_width() / 2 for bar in container.patches]
        values = g["value"].to_numpy(dtype=float)
        err = np.vstack([values - g["low"].to_numpy(dtype=float), g["high"].to_numpy(dtype=float) - values])
        ax.errorbar(centres, values, yerr=np.nan_to_num(np.clip(err, 0, None)), fmt="none", ecolor="black",
                    capsize=3, lw=1)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 100)
    ax.set_ylabel("% vs reference")
    ax.set_xlabel("")
    ax.set_title(f"Pairwise vs reference (judge: {judge_name})" if judge_name else "Pairwise vs reference")
    fig.text(0.01, -0.02, f"bars: {level:.0%} intervals (win rate: bootstrap over items; LC: ±z·SE)", fontsize=7,
             ha="left", va="top")
    ax.legend(fontsize=8)
    return fig

