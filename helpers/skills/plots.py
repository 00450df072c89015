"""The figures a reader of stage 1 wants: how skills spread over topics, how they sit by meaning, what dedup merged,
and (dataset route) how much of the seed dataset each final skill covers."""
from __future__ import annotations

from collections import Counter
from typing import Any

import matplotlib.pyplot as plt
import numpy as np


def plot_skills_per_group(skills: list[dict[str, Any]], max_bars: int = 40, title: str = "Skills per topic"):
    """Bar chart of skills per topic (direct/import) or per source when there are no topics (dataset route)."""
    counts = Counter((s.get("topic") or f"({s.get('source', 'no topic')})") for s in skills)
    items = counts.most_common(max_bars)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(items) + 1)))
    if items:
        names, values = zip(*items)
        ax.barh(range(len(items)), values, color="#4C72B0")
        ax.set_yticks(range(len(items)), [n.replace("_", " ") for n in names], fontsize=8)
        ax.invert_yaxis()
    ax.set_xlabel("skills after dedup")
    shown = f" (top {max_bars} of {len(counts)})" if len(counts) > max_bars else ""
    ax.set_title(title + shown)
    return fig


def project_2d(vectors: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """PCA for small or quick maps; t-SNE (sklearn, no extra dependency) separates clusters better when n >= 30."""
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2))
    if n < 3:
        return np.column_stack([np.arange(n, dtype=float), np.zeros(n)])
    if method == "tsne" and n >= 30:
        from sklearn.manifold import TSNE  # heavy: scikit-learn loads only when a map is drawn

        return TSNE(n_components=2, perplexity=min(30, (n - 1) / 3), init="pca", random_state=seed).fit_transform(vectors)
    from sklearn.decomposition import PCA  # heavy: see above

    return PCA(n_components=2, random_state=seed).fit_transform(vectors)


def plot_skill_map(names: list[str], groups: list[str | None], vectors: np.ndarray, method: str = "pca",
                   label_points: int = 40, max_legend: int = 12, title: str = "Skills by embedding similarity"):
    """2-D map of skills; nearby points mean similar skills; colour = topic (or cluster)."""
    xy = project_2d(vectors, method)
    fig, ax = plt.subplots(figsize=(8, 6))
    group_names = [g or "(none)" for g in groups]
    ordered = [g for g, _ in Counter(group_names).most_common()]
    cmap = plt.get_cmap("tab20")
    for index, group in enumerate(ordered):
        mask = np.array([g == group for g in group_names])
        if index < max_legend:
            ax.scatter(xy[mask, 0], xy[mask, 1], s=18, color=cmap(index % 20), label=group.replace("_", " "), alpha=0.85)
        else:  # beyond the legend, colours would repeat and mislead: the rest share one light grey
            ax.scatter(xy[mask, 0], xy[mask, 1], s=10, color="#cccccc", alpha=0.5, zorder=0,
                       label=f"{len(ordered) - max_legend} other groups" if index == max_legend else None)
    step = max(1, len(names) // label_points) if names else 1
    for i in range(0, len(names), step):
        ax.annotate(names[i].replace("_", " "), xy[i], fontsize=6, alpha=0.75)
    if ordered:
        ax.legend(fontsize=7, loc="best", title="topic" if len(ordered) <= max_legend else f"top {max_legend} groups")
    ax.set_title(f"{title} ({method.upper()})")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_dedup_stats(dedup: dict[str, Any], parse: dict[str, Any] | None = None):
    """Where the raw items went: kept, merged as exact or near duplicates; and, beside it, why lines were dropped."""
    fig, axes = plt.subplots(1, 2 if parse else 1, figsize=(10 if parse else 5, 3.2))
    axes = np.atleast_1d(axes)
    labels = ["raw", "exact dups", "near dups", "kept"]
    values = [dedup.get("num_raw", 0), dedup.get("num_exact_merged", 0), dedup.get("num_near_merged", 0),
              dedup.get("num_kept", 0)]
    axes[0].bar(labels, values, color=["#999999", "#DD8452", "#C44E52", "#55A868"])
    for i, v in enumerate(values):
        axes[0].annotate(str(v), (i, v), ha="center", va="bottom", fontsize=8)
    axes[0].set_title(f"Dedup ({dedup.get('method')}, threshold {dedup.get('threshold')})")
    if parse:
        dropped = parse.get("dropped", {})
        if dropped:
            names, counts = zip(*sorted(dropped.items(), key=lambda kv: -kv[1]))
            axes[1].barh(range(len(names)), counts, color="#8172B3")
            axes[1].set_yticks(range(len(names)), names, fontsize=7)
            axes[1].invert_yaxis()
        axes[1].set_title(f"Dropped reply lines: {parse.get('num_dropped', 0)} (kept {parse.get('kept', 0)}, "
                          f"empty replies {parse.get('empty_replies', 0)})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_coverage(coverage: dict[str, int], num_instructions: int | None = None, max_bars: int = 40):
    """Dataset route: instructions per final skill, sorted; the right panel shows the long tail (cumulative share)."""
    items = sorted(coverage.items(), key=lambda kv: -kv[1])
    fig, axes = plt.subplots(1, 2, figsize=(11, max(3, 0.25 * min(len(items), max_bars) + 1)))
    shown = items[:max_bars]
    if shown:
        names, values = zip(*shown)
        axes[0].barh(range(len(shown)), values, color="#4C72B0")
        axes[0].set_yticks(range(len(shown)), [n.replace("_", " ") for n in names], fontsize=7)
        axes[0].invert_yaxis()
    axes[0].set_xlabel("instructions assigned")
    covered = sum(coverage.values())
    note = f" ({covered} of {num_instructions} instructions labelled)" if num_instructions else ""
    axes[0].set_title("Seed-dataset coverage per skill" + note, fontsize=10)
    values_all = np.array([v for _, v in items], dtype=float)
    if values_all.sum() > 0:
        share = np.cumsum(values_all) / values_all.sum()
        axes[1].plot(np.arange(1, len(share) + 1), share, marker="o", ms=3)
        axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("number of skills (most used first)")
    axes[1].set_ylabel("share of instructions covered")
    axes[1].set_title("Long tail")
    fig.tight_layout()
    return fig
