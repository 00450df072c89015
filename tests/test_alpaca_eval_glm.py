"""The leaderboard's LC (length_controlled_v1) and the minimal GLM against alpaca_eval 0.6.6's own code, on
annotations and a `df_gamed.csv` generated here in AlpacaEval's schema."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alpaca_eval_ref import import_reference
from helpers.judge.alpaca_eval_glm import GlmData, length_controlled, read_glm_data, score_annotations
from helpers.params import ParameterError

GAMED_MODELS = ("gpt4_1106_preview_verbose", "gpt4_1106_preview_concise")


def make_glm_data(folder, n_instructions: int, seed: int = 0) -> pd.DataFrame:
    """A small df_gamed.csv in AlpacaEval's schema: per gamed baseline and instruction its preference in [0, 1],
    standardised length difference and the instruction's difficulty; not_gamed_baseline is False throughout."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1.2, n_instructions)
    rows = []
    for model, sign in zip(GAMED_MODELS, (-1.0, 1.0)):
        delta = sign * np.abs(rng.normal(1.0, 0.5, n_instructions))
        p = 1 / (1 + np.exp(-(-difficulty - 0.8 * np.tanh(delta))))
        for i in range(n_instructions):
            rows.append({"model": model, "index": i, "instruction_difficulty": difficulty[i],
                         "preference": float(np.clip(p[i] + rng.normal(0, 0.05), 0, 1)),
                         "std_delta_len": delta[i], "not_gamed_baseline": False})
    gamed = pd.DataFrame(rows)
    gamed.to_csv(folder / "df_gamed.csv", index=False)
    pd.Series(difficulty, name="instruction_difficulty").rename_axis("index").to_csv(
        folder / "instruction_difficulty.csv")
    return gamed


def make_annotations(n: int, seed: int, with_index: bool, n_unparsed: int = 0, shuffle: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ref_len = rng.integers(300, 1500, n)
    out_len = rng.integers(200, 3000, n)
    logit = -0.3 + 1.2 * np.tanh((out_len - ref_len) / 700) + rng.normal(0, 1, n)
    pref = 1 + 1 / (1 + np.exp(-logit))  # weighted judge: 1..2, 2 = the candidate wins
    pref[:3] = [2.0, 1.0, 0.0]  # a clear win, a clear loss, a tie written as 0
    pref[3:3 + n_unparsed] = np.nan
    df = pd.DataFrame({"instruction": [f"q{i}" for i in range(n)], "output_1": ["r" * int(k) for k in ref_len],
                       "output_2": ["c" * int(k) for k in out_len], "preference": pref,
                       "generator_1": "gpt4_1106_preview", "generator_2": "cand", "annotator": "weighted"})
    if with_index:
        df["index"] = np.arange(n)
    if shuffle:
        df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    return df


def theirs(df: pd.DataFrame, glm_name: str, gamed_csv, monkeypatch) -> dict:
    glm = import_reference("metrics.glm_winrate")
    monkeypatch.setattr(glm, "hf_hub_download", lambda **kwargs: str(gamed_csv))
    return glm.get_length_controlled_winrate(df.copy(), glm_name=glm_name, save_weights_dir=None,
                                             is_warn_extreme_changes=False)


@pytest.mark.parametrize("with_index,n_unparsed,shuffle", [(True, 0, False), (False, 4, False), (True, 2, True)])
def test_v1_equals_alpaca_eval(tmp_path, monkeypatch, with_index, n_unparsed, shuffle):
    make_glm_data(tmp_path, 150)
    df = make_annotations(150, seed=3, with_index=with_index, n_unparsed=n_unparsed, shuffle=shuffle)
    ref = theirs(df, "length_controlled_v1", tmp_path / "df_gamed.csv", monkeypatch)
    ours = score_annotations(df, "v1", read_glm_data(tmp_path))
    assert ours["lc_win_rate"] == pytest.approx(ref["length_controlled_winrate"], abs=1e-4)
    assert ours["lc_win_rate_se"] == pytest.approx(ref["lc_standard_error"], abs=1e-4)
    assert ours["win_rate"] == pytest.approx(ref["win_rate"], abs=1e-9)
    assert ours["win_rate_se"] == pytest.approx(ref["standard_error"], abs=1e-9)
    assert ours["n"] == ref["n_total"] == 150 - n_unparsed
    assert ours["glm"] == "length_controlled_v1" and ours["lc_label"] == "LC"


def test_minimal_equals_alpaca_eval(tmp_path, monkeypatch):
    make_glm_data(tmp_path, 120)
    df = make_annotations(120, seed=5, with_index=False, n_unparsed=3)
    ref = theirs(df, "length_controlled_minimal", tmp_path / "df_gamed.csv", monkeypatch)
    ours = score_annotations(df, "minimal")
    assert ours["lc_win_rate"] == pytest.approx(ref["length_controlled_winrate"], abs=1e-4)
    assert ours["lc_label"] == "LC (minimal GLM)" and ours["glm_data"] is None


def test_the_gamed_baselines_change_the_lc(tmp_path):
    """Guard against a fit that ignores its data: v1 and the minimal GLM differ on length-biased annotations."""
    data = GlmData(make_glm_data(tmp_path, 150).drop(columns=["model"]), "test")
    df = make_annotations(150, seed=3, with_index=True)
    assert abs(length_controlled(df, "v1", data)["lc_win_rate"] - length_controlled(df, "minimal")["lc_win_rate"]) > 0.1


def test_v1_needs_the_data_and_the_schema(tmp_path):
    df = make_annotations(20, seed=1, with_index=True)
    with pytest.raises(ParameterError, match="AE_GLM_DATA"):
        length_controlled(df, "v1", None)
    with pytest.raises(ParameterError, match="does not exist"):
        read_glm_data(tmp_path)
    pd.DataFrame({"index": [0], "preference": [0.5]}).to_csv(tmp_path / "df_gamed.csv", index=False)
    with pytest.raises(ParameterError, match="lacks the columns"):
        read_glm_data(tmp_path)


def test_score_alpaca_eval_command(tmp_path, monkeypatch, capsys):
    from helpers.__main__ import main

    make_glm_data(tmp_path, 60)
    df = make_annotations(60, seed=9, with_index=False, n_unparsed=2)
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(json.loads(df.to_json(orient="records"))))
    ref = theirs(df, "length_controlled_v1", tmp_path / "df_gamed.csv", monkeypatch)
    assert main(["score-alpaca-eval", str(path), "--glm", "v1", "--glm-data", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lc_win_rate"] == pytest.approx(ref["length_controlled_winrate"], abs=1e-4)
    assert out["win_rate"] == pytest.approx(ref["win_rate"]) and out["n"] == 58 and out["glm"] == "length_controlled_v1"
    assert main(["score-alpaca-eval", str(path), "--glm", "minimal"]) == 0
    assert json.loads(capsys.readouterr().out)["lc_label"] == "LC (minimal GLM)"
