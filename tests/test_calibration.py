"""Stage 4's calibration row: the paper model's published AlpacaEval answers judged beside the student by the same
logprob judge on the same items, recorded as `paper_model`, drawn in the figures and read in the report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.evaluate.calibration import (CALIBRATION_MODEL, PAPER_OUTPUTS, calibration_file, calibration_reading,
                                          check_calibration, published_paper_row)
from helpers.evaluate.plots import plot_leaderboard
from helpers.evaluate.leaderboard import published_leaderboard
from helpers.llm.fake_openai import FakeOpenAIServer
from helpers.params import ParameterError

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "alpaca_eval"
PUBLISHED = REFERENCE / "Llama-3-8B-Instruct-SkillMix_model_outputs.json"
BASELINE = REFERENCE / "gpt4_1106_preview_model_outputs.json"


def need_reference() -> None:
    if not (PUBLISHED.is_file() and BASELINE.is_file()):
        pytest.skip("the shared AlpacaEval reference outputs are absent")


def alpaca_eval_clone(root: Path) -> Path:
    """A folder laid out like a clone of tatsu-lab/alpaca_eval holding the paper model's outputs."""
    target = root / PAPER_OUTPUTS
    target.parent.mkdir(parents=True)
    shutil.copy(PUBLISHED, target)
    return root


def longer_wins(messages, body) -> str:
    """A logprob judge that prefers the longer of the two outputs shown (the fake server returns the label with
    logprobs)."""
    first, second = (part.split('"""')[0] for part in messages[-1]["content"].split('"output": """')[1:3])
    return "m" if len(first) >= len(second) else "M"


def test_calibration_row_is_judged_beside_the_student_and_shown(tmp_path):
    need_reference()
    from test_alpaca_eval_glm import make_glm_data

    from helpers.pipeline import run_pipeline
    from helpers.report import write_report

    n = 20
    rows = json.loads(PUBLISHED.read_text())
    student = [dict(r, output=r["output"][: len(r["output"]) // 3], generator="student-shortened") for r in rows]
    (tmp_path / "student.json").write_text(json.dumps(student))
    (tmp_path / "glm").mkdir()
    make_glm_data(tmp_path / "glm", 805)
    clone = alpaca_eval_clone(tmp_path / "alpaca_eval")
    with FakeOpenAIServer(models=("gpt-4-1106-preview",), reply_fn=longer_wins) as server:
        run_pipeline(tmp_path / "run", {
            "CANDIDATE_OUTPUTS": str(tmp_path / "student.json"), "CALIBRATION_OUTPUTS": "paper",
            "ALPACA_EVAL_REPO": str(clone), "EVAL_SET": "alpaca_eval", "EVAL_SOURCE": str(BASELINE), "N_EVAL": n,
            "PAIRWISE_JUDGE": "alpaca_eval:weighted_alpaca_eval_gpt4_turbo", "JUDGE_MODEL": "gpt-4-1106-preview",
            "JUDGE_BASE_URL": server.base_url, "AE_GLM_DATA": str(tmp_path / "glm"),
            "SHIRKER_PROBE_FRACTIONS": []}, ["04_eval_ablations"])
        assert server.completions == 2 * n  # the same n items for both rows, one request each
    run = tmp_path / "run"
    references = {r["instruction"]: r["output"] for r in json.loads(BASELINE.read_text())}
    items = rows[:n]  # the published file is in AlpacaEval's order, as the eval set is
    assert [r["instruction"] for r in items] == list(references)[:n]
    expected = {"student": 100 * sum(len(s["output"]) > len(references[s["instruction"]]) for s in student[:n]) / n,
                CALIBRATION_MODEL: 100 * sum(len(r["output"]) > len(references[r["instruction"]]) for r in items) / n}
    ev = json.loads((run / "results.json").read_text())["evaluate"]
    assert ev["win_rate"] == pytest.approx(expected["student"])
    assert ev[f"win_rate_{CALIBRATION_MODEL}"] == pytest.approx(expected[CALIBRATION_MODEL])
    assert isinstance(ev[f"lc_win_rate_{CALIBRATION_MODEL}"], float) and ev["lc_label"] == "LC"
    reading = ev["calibration"]
    assert reading["paper_model_win_rate"] == pytest.approx(expected[CALIBRATION_MODEL])
    published = published_paper_row()
    # the leaderboard row: 42.76 in the bundled table, 42.7619... where alpaca_eval's own leaderboard file is read
    assert published["lc_win_rate"] == pytest.approx(42.76, abs=0.005)
    # the notebook's kernel may read the other table than this process (alpaca_eval importable here or not)
    assert reading["published_win_rate"] == pytest.approx(published["win_rate"], abs=0.005)
    assert reading["published_lc_win_rate"] == pytest.approx(published["lc_win_rate"], abs=0.005)
    assert "the paper's model scores" in reading["text"] and "yours scores" in reading["text"]
    annotations = json.loads((run / "eval" / f"annotations_{CALIBRATION_MODEL}.json").read_text())
    assert len(annotations) == n and annotations[0]["generator_2"] == "Llama-3-8B-Instruct-SkillMix"
    summary = (run / "eval" / "pairwise_summary.csv").read_text()
    assert CALIBRATION_MODEL in summary and "student" in summary
    model = json.loads((run / "manifest.json").read_text())["stages"]["evaluate"]["models"][CALIBRATION_MODEL]
    assert model["model"] == "Llama-3-8B-Instruct-SkillMix" and model["source"]["origin"] == "local clone"
    assert (run / "figures" / "evaluate_win_rates.png").is_file()
    assert (run / "figures" / "evaluate_leaderboard_context.png").is_file()
    assert "Calibration row" in write_report(run).read_text()


def test_leaderboard_figure_draws_the_calibration_row_apart():
    board = published_leaderboard(prefer_package=False)
    ours = {"student (LC, judge j)": 30.0, f"{CALIBRATION_MODEL} (LC, judge j)": 40.0}
    fig = plot_leaderboard(board.head(5), ours=ours)
    bars = {t.get_text(): patch.get_facecolor() for t, patch in zip(fig.axes[0].get_yticklabels(),
                                                                     fig.axes[0].patches)}
    calibration = [label for label in bars if label.startswith(CALIBRATION_MODEL)]
    assert len(calibration) == 1 and "the paper model" in calibration[0]
    student = next(label for label in bars if label.startswith("student"))
    assert bars[calibration[0]] != bars[student]


def test_calibration_parameter_checks_and_pinned_download(tmp_path, monkeypatch):
    need_reference()
    with pytest.raises(ParameterError, match="CALIBRATION_OUTPUTS.*EVAL_SET"):
        check_calibration("paper", "bundled")
    with pytest.raises(ParameterError, match="CALIBRATION_OUTPUTS"):
        check_calibration(str(tmp_path / "missing.json"), "alpaca_eval")
    check_calibration("", "bundled")
    with pytest.raises(ParameterError, match="ALPACA_EVAL_REPO"):
        calibration_file("paper", str(tmp_path))  # a folder that is not a clone
    mirror = tmp_path / "mirror" / "tatsu-lab" / "alpaca_eval"
    monkeypatch.setenv("ISM_OFFICIAL_URL", f"file://{tmp_path}/mirror/{{repository}}/{{commit}}/{{path}}")
    monkeypatch.setenv("ISM_CACHE_DIR", str(tmp_path / "cache"))
    from helpers.official import SOURCES
    target = mirror / SOURCES["alpaca_eval"].commit / PAPER_OUTPUTS
    target.parent.mkdir(parents=True)
    target.write_text("[]")  # not the pinned bytes: refused
    with pytest.raises(ParameterError, match="sha256"):
        calibration_file("paper")
    shutil.copy(PUBLISHED, target)
    path, source = calibration_file("paper")
    assert source["origin"] == "pinned download" and source["matches_pin"] is True
    assert path.read_bytes() == PUBLISHED.read_bytes()


def test_reading_without_and_with_a_calibration_row():
    import pandas as pd

    summary = pd.DataFrame([{"model": "student", "win_rate": 20.0, "lc_win_rate": 25.0, "lc_label": "LC",
                             "judge": "j"}])
    assert calibration_reading(summary, "m") is None
    both = pd.concat([summary, pd.DataFrame([{"model": CALIBRATION_MODEL, "win_rate": 40.0, "lc_win_rate": 41.0,
                                              "lc_label": "LC (minimal GLM)", "judge": "j"}])])
    reading = calibration_reading(both, "gpt-4o-mini-2024-07-18")
    assert reading["student_lc_win_rate"] == 25.0 and reading["paper_model_lc_win_rate"] == 41.0
    assert "41.00 LC (minimal GLM)" in reading["text"] and "gpt-4o-mini-2024-07-18" in reading["text"]
    assert published_paper_row(published_leaderboard(prefer_package=False)) == {"win_rate": 44.63, "lc_win_rate": 42.76}
