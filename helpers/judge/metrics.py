"""The numbers the paper reports, computed from judge outputs: win rate, length-controlled win rate, MT-Bench and
WB-Score aggregates.

Win rates are in percent, like the AlpacaEval leaderboard. Preferences are from the candidate's side (1 = candidate
better, 0.5 = tie, None = unparsed and excluded).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# WildBench v2 task groups: each fine-grained tag of a task maps to one of five groups, and the WB-Score is a
# weighted macro average over groups (weights as in the WildBench leaderboard scripts).
WILDBENCH_TAG_TO_GROUP = {
    "Information seeking": "Information/Advice seeking",
    "Advice seeking": "Information/Advice seeking",
    "Creative Writing": "Creative Tasks",
    "Editing": "Creative Tasks",
    "Brainstorming": "Creative Tasks",
    "Role playing": "Creative Tasks",
    "Others": "Creative Tasks",
    "Coding & Debugging": "Coding & Debugging",
    "Reasoning": "Planning & Reasoning",
    "Planning": "Planning & Reasoning",
    "Math": "Math & Data Analysis",
    "Data Analysis": "Math & Data Analysis",
}
WILDBENCH_GROUP_WEIGHTS = {
    "Creative Tasks": 0.5,
    "Planning & Reasoning": 1.25,
    "Math & Data Analysis": 1.0,
    "Information/Advice seeking": 0.75,
    "Coding & Debugging": 1.25,
}
# MT-Bench categories graded against a reference solution.
MT_BENCH_REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


def finite_or_none(value: Any) -> Any:
    """NaN (e.g. a mean over nothing) becomes None so recorded results stay valid JSON."""
    try:
        return None if value is None or np.isnan(value) else value
    except TypeError:
        return value


def _clean(preferences: Sequence[float | None]) -> np.ndarray:
    return np.array([p for p in preferences if p is not None and not np.isnan(p)], dtype=float)


def win_rate_stats(preferences: Sequence[float | None]) -> dict[str, Any]:
    """Win rate and its standard error (percent) over the parsed preferences; ties count half.

    The standard error is the sample standard error of the per-item preferences (as AlpacaEval reports it).
    """
    p = _clean(preferences)
    n = len(p)
    if n == 0:
        return {"win_rate": float("nan"), "win_rate_se": float("nan"), "n_scored": 0, "n_wins": 0, "n_losses": 0,
                "n_draws": 0, "discrete_win_rate": float("nan")}
    se = float(p.std(ddof=1) / np.sqrt(n) * 100) if n > 1 else float("nan")
    wins, losses = int((p > 0.5).sum()), int((p < 0.5).sum())
    draws = n - wins - losses
    return {"win_rate": float(p.mean() * 100), "win_rate_se": se, "n_scored": n, "n_wins": wins, "n_losses": losses,
            "n_draws": draws, "discrete_win_rate": float((wins + draws / 2) / n * 100)}


# ------------------------------------------------------------------------------------------- length control


def _soft_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _fit_soft_logistic(X: np.ndarray, y: np.ndarray, C: float, seed: int):
    """L1 logistic regression on probability targets: each row appears once as class 1 weighted by y and once as
    class 0 weighted by 1 - y, which minimises the cross-entropy with soft labels."""
    from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn loads only for the LC fit

    X2 = np.vstack([X, X])
    labels = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    weights = np.concatenate([y, 1 - y])
    keep = weights > 0
    model = LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", fit_intercept=False, random_state=seed)
    if len(set(labels[keep])) < 2:  # all preferences identical: add a vanishing counter-example so sklearn can fit
        keep = np.ones_like(keep)
        weights = np.where(weights > 0, weights, 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X2[keep], labels[keep], sample_weight=weights[keep])
    return model


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))


def length_controlled_win_rate(preferences: Sequence[float | None], output_lengths: Sequence[int],
                               reference_lengths: Sequence[int],
                               instruction_difficulty: Sequence[float] | None = None,
                               n_splits: int = 5, Cs: Sequence[float] | int = 10, seed: int = 123) -> dict[str, Any]:
    """Length-controlled win rate (percent) with the GLM of Dubois et al. (2024).

    Per model, a logistic regression predicts the preference from an intercept (the model's strength), the length
    term tanh(standardised length difference) and, when given, a per-instruction difficulty term. LC is the mean
    predicted preference with the length term set to zero, i.e. "what if both outputs had the same length".
    As in AlpacaEval: L1 penalty, no extra intercept, C picked by grouped 5-fold cross-validation on log-loss over
    10 values from 1e-4 to 1e4. Offline we have neither AlpacaEval's instruction difficulties nor its regularisation
    towards "gamed" baselines (both are downloaded from the hub), so by default this is the minimal GLM.
    The length difference is candidate minus reference (AlpacaEval uses reference minus candidate: same LC,
    opposite sign of the length coefficient).
    """
    from sklearn.model_selection import GroupKFold  # heavy: see _fit_soft_logistic

    prefs = np.array([np.nan if p is None else p for p in preferences], dtype=float)
    lengths = np.asarray(output_lengths, dtype=float) - np.asarray(reference_lengths, dtype=float)
    keep = ~np.isnan(prefs)
    y, dl = prefs[keep], lengths[keep]
    n = len(y)
    nan_out = {"lc_win_rate": float("nan"), "lc_win_rate_se": float("nan"), "coef_intercept": float("nan"),
               "coef_length": float("nan"), "coef_difficulty": None, "C": None, "n": n}
    if n < 2:
        return nan_out
    std = dl.std(ddof=1)
    z = np.tanh(dl / std) if std > 0 else np.zeros_like(dl)
    columns = [np.ones(n), z]
    if instruction_difficulty is not None:
        diff = np.asarray(instruction_difficulty, dtype=float)[keep]
        columns.append(diff)
    X = np.column_stack(columns)
    X_test = X.copy()
    X_test[:, 1] = 0.0

    grid = np.logspace(-4, 4, Cs) if isinstance(Cs, int) else np.asarray(Cs, dtype=float)
    splits = min(n_splits, n)
    if splits >= 2 and len(grid) > 1:
        folds = list(GroupKFold(n_splits=splits).split(X, y, groups=np.arange(n)))
        losses = []
        for C in grid:
            fold_losses = []
            for train, test in folds:
                model = _fit_soft_logistic(X[train], y[train], C, seed)
                fold_losses.append(_soft_log_loss(y[test], model.predict_proba(X[test])[:, 1]))
            losses.append(np.mean(fold_losses))
        best_C = float(grid[int(np.argmin(losses))])
    else:
        best_C = float(grid[-1])
    model = _fit_soft_logistic(X, y, best_C, seed)
    coef = model.coef_[0]
    predicted = _sigmoid(X_test @ coef)
    return {
        "lc_win_rate": float(predicted.mean() * 100),
        "lc_win_rate_se": float(pd.Series(predicted).sem() * 100),
        "coef_intercept": float(coef[0]),
        "coef_length": float(coef[1]),
        "coef_difficulty": float(coef[2]) if instruction_difficulty is not None else None,
        "C": best_C,
        "n": n,
    }


def instruction_difficulty_from_models(preferences_by_model: Mapping[str, Sequence[float | None]],
                                       shrink: float = 1.0) -> np.ndarray:
    """A per-instruction difficulty from several models judged against the same reference on the same items:
    minus the logit of the (shrunk) mean preference across models. It stands in for AlpacaEval's precomputed
    difficulties when several models are evaluated together; with one model it carries no information."""
    table = np.array([[np.nan if p is None else p for p in prefs] for prefs in preferences_by_model.values()],
                     dtype=float)
    counts = (~np.isnan(table)).sum(axis=0)
    sums = np.nansum(table, axis=0)
    mean = np.clip((sums + 0.5 * shrink) / np.maximum(counts + shrink, 1e-12), 1e-6, 1 - 1e-6)
    return -np.log(mean / (1 - mean))


# ------------------------------------------------------------------------------------------- MT-Bench


def mt_bench_summary(scores: pd.DataFrame) -> dict[str, Any]:
    """MT-Bench aggregates from rows (question_id, category, turn, score): turn-1 and turn-2 means, their average
    over all graded answers (the MT-Bench "average"), and a per-category table. Unparsed scores (NaN) are excluded
    and counted."""
    df = scores.copy()
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    n_unparsed = int(df["score"].isna().sum())
    df = df.dropna(subset=["score"])
    turn1 = df.loc[df["turn"] == 1, "score"].mean()
    turn2 = df.loc[df["turn"] == 2, "score"].mean()
    per_category = (df.pivot_table(index="category", columns="turn", values="score", aggfunc="mean")
                    .rename(columns={1: "turn_1", 2: "turn_2"}))
    per_category["average"] = df.groupby("category")["score"].mean()
    return {"mt_bench_turn1": float(turn1), "mt_bench_turn2": float(turn2), "mt_bench_avg": float(df["score"].mean()),
            "n_graded": int(len(df)), "n_unparsed": n_unparsed, "per_category": per_category}


# ------------------------------------------------------------------------------------------- WildBench


def wildbench_groups(primary_tag: str, secondary_tags: Sequence[str] | None = None) -> list[str]:
    """The task groups a WildBench task counts towards (its primary and secondary tags, mapped)."""
    tags = [primary_tag, *(secondary_tags or [])]
    return sorted({WILDBENCH_TAG_TO_GROUP.get(t, t) for t in tags if t})


def wb_score(scores: pd.DataFrame, weights: Mapping[str, float] = WILDBENCH_GROUP_WEIGHTS) -> dict[str, Any]:
    """WB-Score from rows (groups: list of task groups, score: 1-10 or NaN).

    Per group, the mean score is rescaled to (mean - 5) * 2 (so 5 = "fair" maps to 0 and 10 to 10); WB-Score is the
    weighted macro average over groups. The official scripts divide by the sum of all five weights; we divide by the
    weights of the groups present, which is identical when all five are present and stays meaningful on a small
    set. `wb_score` is on the leaderboard's scale (x10); `wb_score_raw` is the unscaled macro average.
    """
    df = scores.copy()
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    n_unparsed = int(df["score"].isna().sum())
    df = df.dropna(subset=["score"]).explode("groups")
    per_group = df.groupby("groups")["score"].mean()
    adjusted = (per_group - 5) * 2
    present = [g for g in adjusted.index if g in weights]
    total_weight = sum(weights[g] for g in present)
    macro = sum(adjusted[g] * weights[g] for g in present) / total_weight if total_weight else float("nan")
    table = pd.DataFrame({"mean_score": per_group, "wb_adjusted": adjusted,
                          "weight": [weights.get(g, 0.0) for g in per_group.index]})
    mean_all = pd.to_numeric(scores["score"], errors="coerce").mean()
    return {"wb_score": float(macro * 10), "wb_score_raw": float(macro),
            "wb_score_unweighted": float((mean_all - 5) * 2 * 10), "n_graded": int(len(scores) - n_unparsed),
            "n_unparsed": n_unparsed, "per_group": table}
