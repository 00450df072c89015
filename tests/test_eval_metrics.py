"""Win rate, length-controlled win rate, MT-Bench and WB-Score aggregation on hand-computed fixtures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.judge.metrics import (instruction_difficulty_from_models, length_controlled_win_rate, mt_bench_summary,
                                  wb_score, wildbench_groups, win_rate_stats)


def test_win_rate_and_standard_error_by_hand():
    stats = win_rate_stats([1.0, 0.0, 1.0, 0.5, None])
    assert stats["n_scored"] == 4
    assert stats["win_rate"] == pytest.approx(62.5)
    # sample std of [1, 0, 1, .5] = sqrt(((.375)^2*2 + (.625)^2 + (.125)^2) / 3)
    sd = np.sqrt((2 * 0.375**2 + 0.625**2 + 0.125**2) / 3)
    assert stats["win_rate_se"] == pytest.approx(sd / 2 * 100)
    assert (stats["n_wins"], stats["n_losses"], stats["n_draws"]) == (2, 1, 1)
    assert np.isnan(win_rate_stats([None])["win_rate"])


def test_lc_equals_raw_when_lengths_do_not_matter():
    rng = np.random.default_rng(0)
    n = 200
    prefs = (rng.random(n) < 0.3).astype(float)  # 30 % wins, independent of length
    out_len = rng.integers(200, 2000, n)
    ref_len = rng.integers(200, 2000, n)
    lc = length_controlled_win_rate(prefs, out_len, ref_len)
    raw = prefs.mean() * 100
    assert abs(lc["lc_win_rate"] - raw) < 3


def test_lc_removes_a_long_answer_bias():
    # the candidate is longer on 80 % of items and wins exactly those (prob .9); shorter ones lose (prob .1)
    n = 100
    longer = np.arange(n) < 80
    prefs = np.where(longer, 0.9, 0.1)
    out_len = np.where(longer, 1500, 500)
    ref_len = np.full(n, 1000)
    lc = length_controlled_win_rate(prefs, out_len, ref_len)
    raw = win_rate_stats(prefs)["win_rate"]
    assert raw == pytest.approx(74.0)
    assert lc["coef_length"] > 0
    assert 40 < lc["lc_win_rate"] < 60


def test_lc_skips_unparsed_and_handles_tiny_inputs():
    assert np.isnan(length_controlled_win_rate([None, 1.0], [1, 2], [1, 2])["lc_win_rate"])
    lc = length_controlled_win_rate([1.0, 1.0, 1.0, None], [10, 20, 30, 40], [10, 10, 10, 10])
    assert lc["n"] == 3 and 50 <= lc["lc_win_rate"] <= 100


def test_instruction_difficulty_from_models():
    diff = instruction_difficulty_from_models({"a": [1.0, 0.0, None], "b": [1.0, 0.0, 0.5]}, shrink=0.0)
    assert diff[0] < 0 < diff[1] and diff[2] == pytest.approx(0.0)


def _alpaca_eval_glm():
    """alpaca_eval lives in its own folder (`make setup` puts it in .venv/alpaca_eval_ref), not in the kit's env."""
    import sys

    from helpers.runs import PROJECT_ROOT

    ref = PROJECT_ROOT / ".venv" / "alpaca_eval_ref"
    added = ref.is_dir() and str(ref) not in sys.path
    if added:
        sys.path.append(str(ref))
    try:
        from alpaca_eval.metrics import glm_winrate  # noqa: F401
    except Exception:  # not installed (it is not a dependency of the kit), or its imports fail
        pytest.skip("alpaca_eval is not importable")
    finally:
        if added:
            sys.path.remove(str(ref))
    return glm_winrate


def test_lc_matches_alpaca_eval_minimal_glm(tmp_path, monkeypatch):
    """Same data through alpaca_eval's own GLM (minimal formula: offline there are no instruction difficulties)."""
    glm = _alpaca_eval_glm()
    rng = np.random.default_rng(1)
    n = 120
    ref_len = rng.integers(300, 1500, n)
    out_len = rng.integers(300, 3000, n)
    p_win = 1 / (1 + np.exp(-(-0.5 + 1.5 * np.tanh((out_len - ref_len) / 800))))
    prefs = (rng.random(n) < p_win).astype(float)
    gamed = tmp_path / "df_gamed.csv"
    pd.DataFrame({"index": np.arange(n), "instruction_difficulty": 0.0, "model": "x"}).to_csv(gamed, index=False)
    monkeypatch.setattr(glm, "hf_hub_download", lambda **kwargs: str(gamed))
    df = pd.DataFrame({
        "preference": prefs + 1,  # alpaca_eval: 1 = baseline wins, 2 = model wins
        "output_1": ["x" * int(k) for k in ref_len], "output_2": ["y" * int(k) for k in out_len],
        "index": np.arange(n), "generator_1": "reference", "generator_2": "model", "annotator": "fake",
    })
    theirs = glm.get_length_controlled_winrate(df, glm_name="length_controlled_minimal", save_weights_dir=None,
                                               is_warn_extreme_changes=False)
    ours = length_controlled_win_rate(prefs, out_len, ref_len)
    assert ours["lc_win_rate"] == pytest.approx(theirs["length_controlled_winrate"], abs=0.01)
    assert win_rate_stats(prefs)["win_rate"] == pytest.approx(theirs["win_rate"])


def test_mt_bench_summary_by_hand():
    rows = pd.DataFrame([
        {"question_id": 1, "category": "writing", "turn": 1, "score": 8},
        {"question_id": 1, "category": "writing", "turn": 2, "score": 6},
        {"question_id": 2, "category": "math", "turn": 1, "score": 4},
        {"question_id": 2, "category": "math", "turn": 2, "score": None},
        {"question_id": 3, "category": "math", "turn": 1, "score": 2},
        {"question_id": 3, "category": "math", "turn": 2, "score": 3},
    ])
    s = mt_bench_summary(rows)
    assert s["mt_bench_turn1"] == pytest.approx(14 / 3)
    assert s["mt_bench_turn2"] == pytest.approx(4.5)
    assert s["mt_bench_avg"] == pytest.approx(23 / 5)
    assert s["n_unparsed"] == 1 and s["n_graded"] == 5
    assert s["per_category"].loc["math", "turn_1"] == pytest.approx(3)
    assert s["per_category"].loc["writing", "average"] == pytest.approx(7)


def test_wb_score_by_hand():
    assert wildbench_groups("Math", ["Reasoning", "Data Analysis"]) == ["Math & Data Analysis", "Planning & Reasoning"]
    rows = pd.DataFrame([
        {"groups": ["Creative Tasks"], "score": 9},
        {"groups": ["Creative Tasks"], "score": 7},
        {"groups": ["Coding & Debugging", "Planning & Reasoning"], "score": 4},
        {"groups": ["Planning & Reasoning"], "score": None},
    ])
    s = wb_score(rows)
    # creative: mean 8 -> 6; coding: 4 -> -2; planning: 4 -> -2; weights .5, 1.25, 1.25
    expected = (6 * 0.5 - 2 * 1.25 - 2 * 1.25) / 3.0
    assert s["wb_score_raw"] == pytest.approx(expected)
    assert s["wb_score"] == pytest.approx(expected * 10)
    assert s["n_unparsed"] == 1 and s["n_graded"] == 3
    assert s["per_group"].loc["Creative Tasks", "wb_adjusted"] == pytest.approx(6)
