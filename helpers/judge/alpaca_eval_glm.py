"""The AlpacaEval 2.0 leaderboard's length-controlled win rate, computed the way alpaca_eval 0.6.6 computes it.

Two GLMs, named as alpaca_eval names them:

* `length_controlled_v1` (the leaderboard's and the paper's LC): the preference for the candidate is regressed on
  tanh(standardised length difference), the instruction's difficulty and an indicator "not a gamed baseline"; the
  rows of two deliberately length-gamed baselines (AlpacaEval's `df_gamed.csv`) are added with weight lambda / 2
  (lambda = 0.2) so the length coefficient is pulled towards theirs. LC is the mean predicted preference with the
  length term set to zero.
* `length_controlled_minimal`: only the length term and the intercept (no difficulty, no gamed rows). It needs no
  downloaded data, but it is a different number: the kit reports it as "LC (minimal GLM)", never as "LC".

Both fit an L1 logistic regression on probability targets with 5-fold grouped cross-validation over 10 values of C
(liblinear, no extra intercept, random_state 123), scored by the soft log-loss, exactly the estimator alpaca_eval uses,
so the numbers agree with the leaderboard's code on the same inputs.

Annotations are alpaca_eval's: `preference` in [1, 2] (1 = output_1, the reference, wins; 2 = output_2, the
candidate, wins; 0 or 1.5 = tie; NaN = unparsed), `output_1`, `output_2` and optionally `index` (the instruction's
position in AlpacaEval's 805; without it the row order is the index).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..jsonl import read_json_object
from ..params import ParameterError
from .metrics import finite_or_none
from .small_numbers import degenerate_fit_flag

GLM_V1 = "length_controlled_v1"
GLM_MINIMAL = "length_controlled_minimal"
GLM_NAMES = {"v1": GLM_V1, "minimal": GLM_MINIMAL, GLM_V1: GLM_V1, GLM_MINIMAL: GLM_MINIMAL}
# How each GLM is reported: the leaderboard's LC, or a number that must not be mistaken for it.
GLM_LABELS = {GLM_V1: "LC", GLM_MINIMAL: "LC (minimal GLM)"}
REGULARIZE_TO_GAMED = 0.2  # lambda of length_controlled_v1, shared by the two gamed baselines
N_SPLITS = 5
N_CS = 10
RANDOM_STATE = 123
GAMED_FILE = "df_gamed.csv"
DIFFICULTY_FILE = "instruction_difficulty.csv"
HUB_DATASET = "tatsu-lab/alpaca_eval"
GAMED_COLUMNS = ("index", "instruction_difficulty", "preference", "std_delta_len", "not_gamed_baseline")


@dataclass(frozen=True)
class GlmData:
    """AlpacaEval's precomputed GLM inputs: the gamed baselines' annotations (with the instruction difficulties)."""

    gamed: pd.DataFrame
    origin: str  # the folder or hub dataset it came from

    def difficulty(self) -> pd.Series:
        """Difficulty per annotation index, looked up as alpaca_eval does: first row per index, by row label."""
        return self.gamed.drop_duplicates("index")["instruction_difficulty"]


def glm_name(value: str, parameter: str = "--glm") -> str:
    try:
        return GLM_NAMES[value]
    except KeyError:
        raise ParameterError(parameter, f"unknown GLM {value!r}", "use v1 (the leaderboard's LC) or minimal") from None


def read_glm_data(folder: str | Path, parameter: str = "AE_GLM_DATA") -> GlmData:
    """`df_gamed.csv` from a local folder (AlpacaEval's hub dataset files, downloaded once)."""
    path = Path(folder).expanduser() / GAMED_FILE
    if not path.is_file():
        raise ParameterError(parameter, f"{path} does not exist",
                             f"download {GAMED_FILE} (and {DIFFICULTY_FILE}) from the hub dataset {HUB_DATASET} into "
                             "that folder, or leave it empty to use the minimal GLM")
    gamed = pd.read_csv(path)
    missing = [c for c in GAMED_COLUMNS if c not in gamed.columns]
    if missing:
        raise ParameterError(parameter, f"{path} lacks the columns {missing}",
                             f"use AlpacaEval's own {GAMED_FILE} from {HUB_DATASET}")
    return GlmData(gamed.drop(columns=["model"], errors="ignore"), str(path.parent))


def fetch_glm_data(note: Callable[[str], None] | None = print) -> GlmData | None:
    """`df_gamed.csv` from the AlpacaEval hub dataset (the local hub cache first), or None when the hub cannot be
    reached. Offline it costs one request and `note` gets one line saying which LC is used instead (the hub client
    would retry a download whose first contact failed five times, with a growing wait and a warning each time)."""
    try:
        import huggingface_hub  # heavy optional import, only when the hub is wanted
    except ImportError:
        if note:
            note(f"LC: minimal GLM (huggingface_hub is not installed, so {GAMED_FILE} cannot be fetched; set "
                 "AE_GLM_DATA for the leaderboard's LC)")
        return None
    token = os.environ.get("HF_TOKEN")

    def download(name: str, local_only: bool) -> str:
        return huggingface_hub.hf_hub_download(repo_id=HUB_DATASET, filename=name, repo_type="dataset", token=token,
                                               local_files_only=local_only)

    try:
        path = download(GAMED_FILE, True)
        download(DIFFICULTY_FILE, True)
    except Exception:  # not in the local hub cache: one request tells whether the hub is there at all
        try:
            url = huggingface_hub.hf_hub_url(HUB_DATASET, GAMED_FILE, repo_type="dataset")
            huggingface_hub.get_hf_file_metadata(url, token=token, timeout=10)
            path = download(GAMED_FILE, False)
            download(DIFFICULTY_FILE, False)
        except Exception as exc:  # offline, rate-limited, no access: the caller falls back to the minimal GLM
            if note:
                note(f"LC: minimal GLM (the hub dataset {HUB_DATASET} is not reachable: {exc.__class__.__name__}; "
                     f"set AE_GLM_DATA to a folder holding {GAMED_FILE} for the leaderboard's LC)")
            return None
    return GlmData(pd.read_csv(path).drop(columns=["model"], errors="ignore"), f"hub dataset {HUB_DATASET}")


def resolve_glm_data(folder: str = "", use_hub: bool = True, parameter: str = "AE_GLM_DATA",
                     note: Callable[[str], None] | None = print) -> GlmData | None:
    """A local folder when named, else the hub when reachable, else None (then only the minimal GLM is possible;
    `note` is told so in one line)."""
    if folder:
        return read_glm_data(folder, parameter)
    return fetch_glm_data(note) if use_hub else None


# ------------------------------------------------------------------------------------------------ the fit


def candidate_preference(preference: pd.Series) -> pd.Series:
    """alpaca_eval's preference (1..2, 0 = tie) as P(candidate better) in [0, 1]; NaN stays NaN."""
    return preference.astype(float).replace({0.0: 1.5}) - 1


def _annotation_frame(annotations: pd.DataFrame) -> pd.DataFrame:
    """Features of the annotated rows: standardised length difference (reference minus candidate), the target, the
    index. All rows count for the standardisation and the prediction, parsed or not, as in alpaca_eval."""
    delta = annotations["output_1"].str.len() - annotations["output_2"].str.len()
    index = annotations["index"] if "index" in annotations.columns else pd.Series(annotations.index)
    return pd.DataFrame({"preference": candidate_preference(annotations["preference"]).to_numpy(),
                         "index": np.asarray(index),
                         "std_delta_len": (delta / delta.std()).to_numpy()})


def _soft_log_loss(y_true, y_pred, true_prob, true_sample_weight=None) -> float:
    """Log-loss against the probability target (both copies of a row carry it), optionally weighted."""
    target = np.where(y_true == 1, true_prob, 1 - true_prob)
    p = np.clip(y_pred, 1e-15, 1 - 1e-15)
    losses = target * np.log(p) + (1 - target) * np.log(1 - p)
    if true_sample_weight is not None:
        losses = losses * true_sample_weight
    return float(-np.mean(losses))


def _fit_probability_targets(X: np.ndarray, y: np.ndarray, weight: np.ndarray | None):
    """L1 logistic regression on soft targets: every row twice, as class 1 weighted by y and as class 0 weighted by
    1 - y (times its own weight); C chosen by grouped cross-validation on the weighted soft log-loss."""
    import sklearn  # heavy: only needed when an LC is fitted
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    n = len(y)
    X2 = np.vstack([X, X])
    labels = np.concatenate([np.ones(n), np.zeros(n)])
    true_prob = np.concatenate([y, 1 - y])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    true_weight = None if weight is None else np.concatenate([weight, weight])
    fit_weight = true_prob if true_weight is None else true_prob * true_weight
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scorer = make_scorer(_soft_log_loss, response_method="predict_proba", greater_is_better=False)
        scorer = scorer.set_score_request(true_prob=True, true_sample_weight=True)
        model = LogisticRegressionCV(Cs=N_CS, cv=GroupKFold(n_splits=N_SPLITS), scoring=scorer,
                                     random_state=RANDOM_STATE, dual=False, penalty="l1", solver="liblinear",
                                     fit_intercept=False)
        model.set_fit_request(sample_weight=True)
        model.fit(X2, labels, sample_weight=fit_weight, groups=groups, true_prob=true_prob,
                  true_sample_weight=true_weight)
    return model


def length_controlled(annotations: pd.DataFrame, glm: str = GLM_V1, data: GlmData | None = None) -> dict[str, Any]:
    """LC win rate (percent) of one candidate against one reference under the named GLM.

    Returns `lc_win_rate`, `lc_win_rate_se`, the fitted `weights` (by feature), `glm`, `lc_label` and `lc_flag`:
    None, or why the number says nothing (no readable preference, too few to cross-validate: LC is then None; or
    a fit that kept no coefficient, whose LC is 50 by construction).
    """
    glm = glm_name(glm)
    if glm == GLM_V1 and data is None:
        raise ParameterError("AE_GLM_DATA", "length_controlled_v1 needs AlpacaEval's df_gamed.csv",
                             f"set AE_GLM_DATA to a folder holding {GAMED_FILE} from {HUB_DATASET}, or use the "
                             "minimal GLM and report it as 'LC (minimal GLM)'")
    frame = _annotation_frame(annotations.reset_index(drop=True))
    names = ["np.tanh(std_delta_len)"]
    columns = [np.tanh(frame["std_delta_len"].to_numpy())]
    test = [np.zeros(len(frame))]
    if glm == GLM_V1:
        difficulty = data.difficulty()
        row_difficulty = difficulty.loc[frame["index"].to_numpy()].to_numpy(dtype=float)
        names.append("instruction_difficulty")
        columns.append(row_difficulty)
        test.append(row_difficulty)
    names.append("not_gamed_baseline.astype(float)")
    columns.append(np.ones(len(frame)))
    test.append(np.ones(len(frame)))
    X, y = np.column_stack(columns), frame["preference"].to_numpy(dtype=float)
    weight = np.ones(len(frame)) if glm == GLM_V1 else None
    if glm == GLM_V1:
        g = data.gamed
        gamed_X = np.column_stack([np.tanh(g["std_delta_len"].to_numpy(dtype=float)),
                                   g["instruction_difficulty"].to_numpy(dtype=float), np.zeros(len(g))])
        X = np.vstack([gamed_X, X])
        y = np.concatenate([g["preference"].to_numpy(dtype=float), y])
        weight = np.concatenate([np.full(len(g), REGULARIZE_TO_GAMED / 2), weight])
    keep = ~np.isnan(y)
    n_fitted = int((~np.isnan(frame["preference"].to_numpy(dtype=float))).sum())
    if n_fitted == 0 or int(keep.sum()) < N_SPLITS:  # nothing readable, or too few rows to cross-validate
        return {"lc_win_rate": None, "lc_win_rate_se": None, "weights": {}, "glm": glm, "lc_label": GLM_LABELS[glm],
                "lc_flag": f"{GLM_LABELS[glm]}: not computed from n={n_fitted} readable preferences"}
    model = _fit_probability_targets(X[keep], y[keep], None if weight is None else weight[keep])
    predicted = model.predict_proba(np.column_stack(test))[:, 1]
    weights = dict(zip(names, map(float, model.coef_[0])))
    return {"lc_win_rate": float(predicted.mean() * 100), "lc_win_rate_se": float(pd.Series(predicted).sem() * 100),
            "weights": weights, "glm": glm, "lc_label": GLM_LABELS[glm],
            "lc_flag": degenerate_fit_flag(weights.values(), n_fitted, GLM_LABELS[glm])}


def score_annotations(annotations: list[dict[str, Any]] | pd.DataFrame, glm: str = GLM_V1,
                      data: GlmData | None = None) -> dict[str, Any]:
    """Win rate, its standard error and the LC win rate of one model's annotations, as the leaderboard reports
    them (percent). Unparsed rows (NaN, or a preference outside [1, 2]) are left out of the win rate and of the LC
    fit alike, and counted."""
    df = pd.DataFrame(annotations) if not isinstance(annotations, pd.DataFrame) else annotations
    for column in ("preference", "output_1", "output_2"):
        if column not in df.columns:
            raise ParameterError("ANNOTATIONS", f"the annotations have no {column!r} field",
                                 "use an annotations.json as alpaca_eval writes it")
    raw = pd.to_numeric(df["preference"], errors="coerce")
    pref = candidate_preference(raw)
    readable = (pref >= 0) & (pref <= 1)
    valid = pref[readable]
    lc = length_controlled(df.assign(preference=raw.where(readable)), glm, data)  # the same items as the win rate
    return {
        "win_rate": finite_or_none(float(valid.mean() * 100)) if len(valid) else None,
        "win_rate_se": finite_or_none(float(valid.sem() * 100)) if len(valid) > 1 else None,
        "lc_win_rate": lc["lc_win_rate"], "lc_win_rate_se": lc["lc_win_rate_se"], "lc_label": lc["lc_label"],
        "lc_flag": lc["lc_flag"],
        "glm": lc["glm"], "glm_data": data.origin if data is not None and lc["glm"] == GLM_V1 else None,
        "glm_weights": lc["weights"], "n": int(len(valid)), "n_total": int(len(df)),
        "n_unparsed": int(len(df) - len(valid)),
        "n_wins": int((valid > 0.5).sum()), "n_losses": int((valid < 0.5).sum()),
    }


def score_annotations_file(path: str | Path, glm: str = "v1", glm_data: str = "") -> dict[str, Any]:
    """`python -m helpers score-alpaca-eval`: one model's annotations.json (as alpaca_eval writes it) -> numbers.

    For v1 the GLM data come from `glm_data`, else from the folder in the environment variable AE_GLM_DATA, else from
    the hub; without any of them it fails rather than report another GLM's number under the name LC.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ParameterError("ANNOTATIONS", f"{file} does not exist", "give the path of an annotations.json")
    records = read_json_object(file, "ANNOTATIONS", list, "a list of annotation records as alpaca_eval writes them")
    odd = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if odd is not None:
        raise ParameterError("ANNOTATIONS", f"{file}: item {odd + 1} is a JSON {type(records[odd]).__name__}, not "
                             "an annotation record", "give an annotations.json as alpaca_eval writes it")
    if not records:
        raise ParameterError("ANNOTATIONS", f"{file} holds no annotation", "give a non-empty annotations.json")
    rows = pd.DataFrame(records)  # no type guessing on the columns
    name = glm_name(glm)
    data = None
    if name == GLM_V1:
        data = resolve_glm_data(glm_data or os.environ.get("AE_GLM_DATA", ""), parameter="--glm-data", note=None)
        if data is None:
            raise ParameterError("--glm-data", f"the hub dataset {HUB_DATASET} is not reachable",
                                 f"download {GAMED_FILE} into a folder and pass --glm-data DIR, or use --glm minimal "
                                 "(reported as 'LC (minimal GLM)')")
    return score_annotations(rows, name, data)
