"""The one-page run report (self-contained, every number) and `compare`, on small fabricated run folders."""
from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402

from helpers.__main__ import main  # noqa: E402
from helpers.pipeline import export_html  # noqa: E402
from helpers.report import (build_report, changed_parameters, compare_runs, headline_table,  # noqa: E402
                            notebook_defaults, recorded_numbers)
from helpers.runs import Run  # noqa: E402

DEFAULTS = {"02_generate": {"RUN_DIR": "runs/demo", "SEED": 0, "NUM_EXAMPLES": 6},
            "04_eval_ablations": {"RUN_DIR": "runs/demo", "N_EVAL": 12, "PAIRWISE_JUDGE": "alpaca_eval_pairwise"}}


def fabricate_run(folder, win_rate: float = 41.5):
    run = Run(folder)
    run.begin_stage("generate", {"NUM_EXAMPLES": 40})
    run.add_model("teacher", {"backend": "local", "model": "smollm2-135m-instruct"})
    run.add_accounting("teacher", {"calls": 12, "input_tokens": 3400, "cost_usd": None})
    run.record("n_train", 38, display=False)
    run.record("estimate", {"calls": 120, "cost_usd": 0.0, "model": "x", "per_role": {"teacher": {"tokens": 777}}},
               display=False)
    run.begin_stage("evaluate", {"N_EVAL": 20, "N_MT_BENCH": 3})
    run.add_model("judge", {"backend": "local", "model": "smollm2-135m-instruct"})
    run.set_stage_info("judges", {"PAIRWISE_JUDGE": {"name": "alpaca_eval_pairwise", "prompt_source": "kit"},
                                  "MT_BENCH_JUDGE": {"name": "mt_bench_single", "prompt_source": "kit"}})
    for name, value in (("win_rate", win_rate), ("lc_win_rate", 37.25), ("n_eval", 20), ("mt_bench_avg", 3.5),
                        ("wb_score", None)):
        run.record(name, value, display=False)
    run.record("shirker_probe", [{"SHIRKER_FRACTION": 0.0, "win_rate": 40.0}, {"SHIRKER_FRACTION": 0.5,
                                                                               "win_rate": 22.0}], display=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    run.save_figure(fig, "win_rates")
    plt.close(fig)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nb.metadata["papermill"] = {"parameters": {"RUN_DIR": str(run.path), "NUM_EXAMPLES": 40, "SEED": 0,
                                               "NOT_DECLARED": 1}}
    nbformat.write(nb, str(run.artifact("notebooks", "02_generate.ipynb")))
    return run.path


def test_report_is_self_contained_and_lists_every_number(tmp_path):
    folder = fabricate_run(tmp_path / "run_a")
    numbers = recorded_numbers(folder).set_index("name")
    assert numbers.loc["win_rate", "judge"] == "alpaca_eval_pairwise / smollm2-135m-instruct"
    assert numbers.loc["win_rate", "prompt_source"] == "kit" and numbers.loc["win_rate", "n_items"] == 20
    assert numbers.loc["mt_bench_avg", "judge"].startswith("mt_bench_single") and numbers.loc["mt_bench_avg", "n_items"] == 3
    assert numbers.loc["estimate.calls", "value"] == 120 and "estimate.model" not in numbers.index
    assert numbers.loc["estimate.per_role.teacher.tokens", "value"] == 777
    assert numbers.loc["n_train", "judge"] == ""

    changed = changed_parameters(folder, DEFAULTS)
    assert set(changed["parameter"]) == {"NUM_EXAMPLES", "NOT_DECLARED"}  # SEED is at its default, RUN_DIR left out

    assert main(["report", "--run-dir", str(folder)]) == 0
    page = (folder / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)  # nothing fetched from anywhere
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert page.count('src="data:image/png;base64,') == 1
    assert 'href="notebooks/02_generate.ipynb"' in page
    for value in ("41.5", "37.25", "38", "120", "777", "3400", "22"):
        assert f">{value}<" in page, value
    assert "NUM_EXAMPLES" in page and "shirker_probe" in page


def test_compare_two_runs_prints_and_plots(tmp_path, capsys):
    a, b = fabricate_run(tmp_path / "a"), fabricate_run(tmp_path / "b", win_rate=30.0)
    table = compare_runs([a, b])
    assert list(table.columns) == ["a", "b"]
    assert table.loc["evaluate.win_rate"].tolist() == [41.5, 30.0]
    assert main(["compare", str(a), str(b), "--plot", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "evaluate.win_rate" in out and "41.5" in out and "30" in out
    assert (tmp_path / "cmp.png").exists() and (tmp_path / "cmp.svg").exists()
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2


def test_defaults_come_from_the_notebooks_parameters_cells():
    defaults = notebook_defaults()
    assert set(defaults) == {"01_extract_skills", "02_generate", "03_sft", "04_eval_ablations"}
    assert all(isinstance(d.get("RUN_DIR"), str) for d in defaults.values())


def test_html_export_works_on_a_run_folder(tmp_path):
    folder = fabricate_run(tmp_path / "run")
    written = export_html(folder)
    assert [p.name for p in written] == ["02_generate.html"]
    assert main(["report", "--run-dir", str(folder)]) == 0
    assert 'href="notebooks/02_generate.html"' in (folder / "report.html").read_text()


def test_report_on_a_missing_folder_fails_cleanly(tmp_path, capsys):
    assert main(["report", "--run-dir", str(tmp_path / "missing")]) == 2
    assert "no run folder" in capsys.readouterr().out
    assert not (tmp_path / "missing").exists()


def _fabricate_evaluation(folder):
    """Stage 4's records as `helpers.evaluate.record` writes them: the student without suffix, the base model with
    `_base`, a small-number flag on MT-Bench."""
    run = Run(folder)
    run.begin_stage("evaluate", {"N_EVAL": 20, "N_MT_BENCH": 3, "WB_REWARD_JUDGE": "wildbench:pairwise.v2"})
    for role, model in (("student", "checkpoint-40"), ("base", "gemma-3-270m"), ("judge", "smollm2-135m-instruct")):
        run.add_model(role, {"backend": "local", "model": model})
    run.set_stage_info("reference", "bundled")
    run.set_stage_info("judges", {"PAIRWISE_JUDGE": {"name": "alpaca_eval_pairwise", "prompt_source": "kit"},
                                  "MT_BENCH_JUDGE": {"name": "mt_bench_single", "prompt_source": "kit"}})
    flagged = {"value": 4.25, "n": 4, "n_total": 6, "flag": "n=4 of 6, not reliable"}
    for name, value in (("win_rate_student", 60.0), ("win_rate_se_student", 10.0), ("lc_win_rate_student", 55.5),
                        ("n_unparsed_student", 2), ("win_rate_base", 35.0), ("win_rate_se_base", 5.0),
                        ("lc_win_rate_base", 33.25), ("n_unparsed_base", 0), ("win_rate", 60.0),
                        ("win_rate_se", 10.0), ("lc_win_rate", 55.5), ("lc_label", "LC (minimal GLM)"),
                        ("n_eval", 20), ("mt_bench_avg", flagged), ("mt_bench_avg_base", 2.5),
                        ("wb_reward", -12.5), ("wb_reward_base", None)):
        run.record(name, value, display=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    run.save_figure(fig, "win_rates")
    plt.close(fig)
    return run.path


def test_headline_has_one_row_per_metric_and_one_column_per_model(tmp_path):
    table = headline_table(_fabricate_evaluation(tmp_path / "run")).set_index("metric")
    assert list(table.columns) == ["judge", "student", "base", "reference (bundled)"]
    assert list(table.index) == ["win rate vs reference, % [95 % interval]", "LC (minimal GLM), %", "MT-Bench, 1-10",
                                 "WB-Reward"]
    win = table.iloc[0]
    assert win["student"] == "60.0 [40.4, 79.6] (n=18)" and win["base"] == "35.0 [25.2, 44.8] (n=20)"
    assert win["reference (bundled)"] == "50 (baseline)"
    assert win["judge"] == "alpaca_eval_pairwise / smollm2-135m-instruct (kit)"
    assert table.loc["LC (minimal GLM), %", "student"] == "55.5 (n=18)"
    assert table.loc["MT-Bench, 1-10", "student"] == "4.25 (n=4 of 6, not reliable)"
    assert table.loc["MT-Bench, 1-10", "base"] == "2.50 (3 questions)"
    assert table.loc["MT-Bench, 1-10", "reference (bundled)"] == "–"
    assert table.loc["WB-Reward", "judge"].startswith("wildbench:pairwise.v2")
    assert table.loc["WB-Reward", "base"] == "–"


def test_report_opens_with_the_headline_then_figures_then_parameters(tmp_path):
    folder = _fabricate_evaluation(tmp_path / "run")
    page = build_report(folder, DEFAULTS)
    first_table = page[page.index("<table>"):page.index("</table>")]
    assert "win rate vs reference" in first_table and "60.0 [40.4, 79.6]" in first_table
    positions = [page.index(h) for h in ("<h2>Headline</h2>", "<h2>Figures</h2>", "<h2>Parameters that differ",
                                         "<details>")]
    assert positions == sorted(positions)
    collapsed = page[page.index("<details>"):page.index("</details>")]
    assert "win_rate_se_base" in collapsed and "n_unparsed_student" in collapsed  # bookkeeping: collapsed
    assert "n_unparsed_student" not in page[:page.index("<details>")]


def test_a_run_without_evaluation_says_so_instead_of_a_headline(tmp_path):
    run = Run(tmp_path / "run")
    run.begin_stage("generate", {"NUM_EXAMPLES": 4})
    run.record("n_train", 4, display=False)
    assert headline_table(run.path).empty
    page = build_report(run.path, DEFAULTS)
    assert "no evaluation recorded" in page[:page.index("<h2>Figures</h2>")]


def test_headline_shows_probability_weighted_grades_in_a_row_of_their_own(tmp_path):
    folder = _fabricate_evaluation(tmp_path / "run")
    results = json.loads((folder / "results.json").read_text())
    results["evaluate"]["mt_bench_weighted_avg"] = {"value": 5.125, "n": 6, "n_total": 6, "flag": None}
    (folder / "results.json").write_text(json.dumps(results))
    table = headline_table(folder).set_index("metric")
    weighted = "MT-Bench, 1-10, probability-weighted (G-Eval; not a parsed grade)"
    assert list(table.index).index(weighted) == list(table.index).index("MT-Bench, 1-10") + 1
    assert table.loc[weighted, "student"] == "5.12 (n=6 of 6)"
    assert table.loc["MT-Bench, 1-10", "student"] == "4.25 (n=4 of 6, not reliable)"  # never mixed with parsed ones
    assert table.loc[weighted, "judge"].startswith("mt_bench_single")
