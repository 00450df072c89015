"""Figures and readable renderings for the generation notebook: how uniform the skill mix is, what was kept and
dropped, and how good and shirker answers differ in length."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from ..page_text import markdown_quote, markdown_text
from .filters import word_count
from .sampling import ExamplePlan, possible_pairs


def skill_usage_figure(plans: list[ExamplePlan], num_skills: int):
    """How often each skill was drawn, against what uniform sampling predicts."""
    counts = Counter(s for p in plans for s in p.skills)
    uses = [counts.get(s, 0) for s in counts] + [0] * max(0, num_skills - len(counts))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    top = max(uses) if uses else 0
    ax.hist(uses, bins=range(0, top + 2), align="left", rwidth=0.85, color="#4C72B0")
    expected = sum(len(p.skills) for p in plans) / max(1, num_skills)
    ax.axvline(expected, color="#C44E52", ls="--", label=f"uniform expectation ({expected:.2f})")
    ax.set(xlabel="times a skill was drawn", ylabel="number of skills", title="Skill usage across planned examples")
    ax.legend()
    return fig


def query_type_figure(plans: list[ExamplePlan], examples: list[dict[str, Any]]):
    """Query types as planned and as kept after parsing and filtering."""
    planned = Counter(p.query_type["name"] for p in plans)
    kept = Counter(e["query_type"] for e in examples)
    df = pd.DataFrame({"planned": planned, "kept": kept}).fillna(0).astype(int).sort_values("planned")
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(df) + 1.2))
    df.plot.barh(ax=ax, color=["#BBBBBB", "#4C72B0"])
    ax.set(xlabel="examples", title="Query-type mix")
    return fig


def pair_coverage_figure(plans: list[ExamplePlan], num_skills: int):
    """Distinct skill combinations as examples accumulate: repeats are rare while n << C(#skills, k)."""
    seen: set[tuple[str, ...]] = set()
    distinct = []
    for p in plans:
        seen.add(p.pair_key)
        distinct.append(len(seen))
    k = len(plans[0].skills) if plans else 2
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(range(1, len(plans) + 1), distinct, label="distinct combinations")
    ax.plot(range(1, len(plans) + 1), range(1, len(plans) + 1), ls=":", color="grey", label="no repeats")
    total = possible_pairs(num_skills, k)
    ax.set(xlabel="examples planned", ylabel="distinct combinations",
           title=f"Pair coverage ({len(seen)} of {total:,} possible {k}-skill combinations)")
    ax.legend()
    return fig


def length_figure(examples: list[dict[str, Any]]):
    """Instruction and response lengths in words, good answers vs shirker answers."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    groups = {"good": [e for e in examples if not e.get("shirker")],
              "shirker": [e for e in examples if e.get("shirker")]}
    for ax, field, title in ((axes[0], "instruction", "Instruction length"), (axes[1], "output", "Response length")):
        for (label, items), color in zip(groups.items(), ("#4C72B0", "#DD8452")):
            if items:
                ax.hist([word_count(e[field]) for e in items], bins=min(20, max(3, int(math.sqrt(len(items))) + 2)),
                        alpha=0.7, label=f"{label} ({len(items)})", color=color)
        ax.set(xlabel="words", ylabel="examples", title=title)
        ax.legend()
    fig.tight_layout()
    return fig


def outcome_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Where every planned example went: kept, failed to parse, or dropped by a named filter."""
    rows = [("planned (train + held-out)", summary["num_planned"] + summary["num_heldout_planned"]),
            ("kept: train", summary["num_examples"]), ("kept: held-out", summary["num_heldout"]),
            ("failed to parse after all attempts", summary["num_failed"])]
    rows += [(f"filtered: {k.replace('_', ' ')}", v) for k, v in summary["num_filtered"].items()]
    rows += [("held-out dropped as collisions with train", summary["num_heldout_collisions"]),
             ("train responses replaced by shirkers", summary["num_shirkers"])]
    return pd.DataFrame(rows, columns=["what", "examples"])


def outcome_figure(summary: dict[str, Any]):
    df = outcome_table(summary).iloc[1:]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(df) + 1.2))
    ax.barh(df["what"][::-1], df["examples"][::-1], color="#4C72B0")
    ax.set(xlabel="examples", title="Kept, failed and filtered examples")
    return fig


def examples_markdown(examples: list[dict[str, Any]], n: int = 3, max_chars: int = 1200) -> str:
    """A few examples as Markdown, the way a reader should see the data (quoted, skills and type on top). What the
    teacher or a dataset wrote is shown as text, never as markup (`helpers.page_text`)."""
    parts = []
    for e in examples[:n]:
        tag = f" — **shirker: {markdown_text(e['shirker'])}**" if e.get("shirker") else ""
        out = e["output"] if len(e["output"]) <= max_chars else e["output"][:max_chars] + " …"
        parts.append(
            f"#### {markdown_text(e['example_id'])} · {markdown_text(e['query_type'])} · "
            f"{markdown_text(e['skills_joined_str'])}{tag}\n\n"
            f"**Instruction** (attempt {markdown_text(e.get('attempt', 1))}, from the "
            f"{markdown_text(e.get('instruction_from_turn', '?'))} turn)\n\n"
            + markdown_quote(e["instruction"]) + "\n\n**Response**\n\n" + markdown_quote(out)
        )
    return "\n\n---\n\n".join(parts) if parts else "_No example to show._"


def failures_markdown(failed: list[dict[str, Any]], n: int = 2, max_chars: int = 600) -> str:
    """What the teacher actually replied when parsing failed: the honest view of a weak teacher (as text)."""
    parts = []
    for f in failed[:n]:
        replies = [m["content"] for m in f["transcript"] if m["role"] == "assistant"]
        shown = "\n\n".join(f"*reply {i + 1}:* " + markdown_text(r[:max_chars].replace("\n", " "))
                             for i, r in enumerate(replies))
        parts.append(f"#### {markdown_text(f['example_id'])} · {markdown_text(f['skills_joined_str'])} — "
                     f"{markdown_text(f['reasons'][-1])}\n\n{shown}")
    return "\n\n---\n\n".join(parts) if parts else "_No failure._"
