"""Figures and tables the SFT notebook shows: loss curves, the masked training example, base vs fine-tuned."""
from __future__ import annotations

import html
from typing import Any

import pandas as pd


def loss_curves(log_history: list[dict[str, Any]]) -> Any:
    """Training loss per logged step and held-out loss at each evaluation (step 0 = before training)."""
    import matplotlib.pyplot as plt  # heavy: only a notebook drawing the figure needs it

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    heldout = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if train:
        ax.plot(*zip(*train), label="train (response tokens)", color="tab:blue")
    if heldout:
        ax.plot(*zip(*heldout), "o--", label="held-out", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per response token")
    ax.set_title("SFT loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def masked_html(view: list[tuple[str, bool]]) -> str:
    """Tokens on grey (masked prompt) or green (learned response and end-of-turn) background."""
    spans = []
    for text, learned in view:
        colour = "#c8f7c5" if learned else "#e6e6e6"
        shown = html.escape(text).replace("\n", "\u21b5<br>")
        spans.append(f'<span style="background:{colour};border-right:1px solid #fff">{shown}</span>')
    legend = ('<p><span style="background:#e6e6e6">grey = prompt, label -100 (not learned)</span> '
              '<span style="background:#c8f7c5">green = response and end-of-turn token (learned)</span></p>')
    return legend + '<div style="font-family:monospace;font-size:12px;line-height:1.6">' + "".join(spans) + "</div>"


def comparison_table(instructions: list[str], base: list[str], tuned: list[str], references: list[str],
                     width: int = 400) -> Any:
    """Side-by-side answers (cut to `width` characters) as a pandas DataFrame."""
    def cut(text: str) -> str:
        return text if len(text) <= width else text[:width] + " ..."

    return pd.DataFrame({"instruction": [cut(t) for t in instructions], "base model": [cut(t) for t in base],
                         "fine-tuned": [cut(t) for t in tuned], "held-out reference": [cut(t) for t in references]})
