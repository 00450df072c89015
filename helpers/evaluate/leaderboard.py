"""Published AlpacaEval 2.0 numbers, to put a run's result in context.

The bundled rows (data/leaderboard_alpaca_eval2.csv) were typed in from the public AlpacaEval 2.0 leaderboard and the
Instruct-SkillMix paper. When the `alpaca_eval` package is installed, its own leaderboard file is used instead.
Those numbers come from the official GPT-4 Turbo judge: a run judged by another model is not on the same scale.
"""
from __future__ import annotations

from importlib import resources

import pandas as pd

from ..layout import BUNDLED_LEADERBOARD
PAPER_MODEL = "LLaMA-3-8B-Base + Instruct-SkillMix 4K"
PAPER_LC_WIN_RATE = 42.76


def package_leaderboard() -> pd.DataFrame | None:
    """The leaderboard shipped inside an installed `alpaca_eval` (not a dependency of the kit), else None."""
    try:
        folder = resources.files("alpaca_eval") / "leaderboards" / "data_AlpacaEval_2"
        path = folder / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
        df = pd.read_csv(str(path))
    except Exception:
        return None
    df = df.rename(columns={df.columns[0]: "model", "length_controlled_winrate": "lc_win_rate"})
    df["source"] = "alpaca_eval package leaderboard"
    return df[["model", "lc_win_rate", "win_rate", "source"]]


def published_leaderboard(prefer_package: bool = True) -> pd.DataFrame:
    """Rows `model`, `lc_win_rate`, `win_rate`, `source`, sorted by LC win rate; always includes the paper's model."""
    df = package_leaderboard() if prefer_package else None
    bundled = pd.read_csv(BUNDLED_LEADERBOARD)
    if df is None:
        df = bundled
    elif PAPER_MODEL not in set(df["model"]):
        df = pd.concat([df, bundled[bundled["model"] == PAPER_MODEL]], ignore_index=True)
    return df.sort_values("lc_win_rate", ascending=False).reset_index(drop=True)
