"""Sweep driver: grid expansion, stage-1 sharing, parameter routing and the collected table (fake runner)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers.params import ParameterError
from helpers.sweep import PAPER_GRIDS, cell_name, collect_results, expand_grid, load_grid, main, run_sweep

DECLARED = {
    "01_extract_skills": {"RUN_DIR", "SEED", "SKILL_SOURCE", "TEACHER_MODEL"},
    "02_generate": {"RUN_DIR", "SEED", "TEACHER_MODEL", "NUM_EXAMPLES", "SHIRKER_FRACTION", "SHIRKER_KIND", "K_SKILLS"},
    "03_sft": {"RUN_DIR", "SEED", "BASE_MODEL"},
    "04_eval_ablations": {"RUN_DIR", "SEED", "JUDGE_MODEL"},
}


class FakeRunner:
    """Stands in for helpers.pipeline.run_pipeline: writes what the notebooks would record."""

    def __init__(self, fail_when: dict | None = None):
        self.calls: list[tuple[str, dict, tuple]] = []
        self.fail_when = fail_when or {}

    def __call__(self, run_dir, params, notebooks=()):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.calls.append((str(run_dir), dict(params), tuple(notebooks)))
        if notebooks == ("01_extract_skills",):
            (run_dir / "skills.jsonl").write_text(json.dumps({"skill": f"s_{params.get('SKILL_SOURCE', 'x')}"}) + "\n")
            return
        assert (run_dir / "skills.jsonl").exists(), "stage-1 artifacts must be copied into the cell"
        if all(params.get(k) == v for k, v in self.fail_when.items()) and self.fail_when:
            raise RuntimeError("04_eval_ablations failed in cell 7: ValueError: boom")
        frac = params.get("SHIRKER_FRACTION", 0)
        results = {"generate": {"n_examples": params.get("NUM_EXAMPLES", 10)},
                   "evaluate": {"win_rate_student": 40 - 20 * frac, "lc_win_rate_student": 35 - 10 * frac,
                                "per_category": {"a": 1}}}
        (run_dir / "results.json").write_text(json.dumps(results))


def test_expand_grid_and_names(tmp_path):
    spec = load_grid("shirkers", {"NUM_EXAMPLES": 8})
    cells = expand_grid(spec)
    assert len(cells) == 6 and all(c["NUM_EXAMPLES"] == 8 for c in cells)
    assert cells[0]["SHIRKER_FRACTION"] == 0.0 and cells[1]["SHIRKER_KIND"] == "junk"
    assert cell_name(cells[1], ["SHIRKER_FRACTION", "SHIRKER_KIND"]) == "SHIRKER_FRACTION=0.0__SHIRKER_KIND=junk"
    grid = tmp_path / "g.yaml"
    grid.write_text("base:\n  SEED: 3\ngrid:\n  K_SKILLS: [1, 2]\n")
    assert [c["K_SKILLS"] for c in expand_grid(load_grid(grid))] == [1, 2]
    with pytest.raises(ParameterError):
        load_grid("no_such_grid")
    assert set(PAPER_GRIDS) >= {"shirkers", "k", "size", "skill_source"}


def test_sweep_shares_stage1_and_collects_a_table(tmp_path):
    runner = FakeRunner(fail_when={"SHIRKER_FRACTION": 0.5, "SHIRKER_KIND": "junk"})
    spec = load_grid("shirkers", {"NUM_EXAMPLES": 8, "SEED": 1})
    df = run_sweep(spec, tmp_path / "sw", parallel=2, runner=runner, declared=DECLARED.__getitem__, log=lambda m: None)
    stage1_calls = [c for c in runner.calls if c[2] == ("01_extract_skills",)]
    assert len(stage1_calls) == 1 and stage1_calls[0][1] == {"SEED": 1}
    later = [c for c in runner.calls if c[2] != ("01_extract_skills",)]
    assert len(later) == 6 and all("SKILL_SOURCE" not in c[1] for c in later)
    assert len(df) == 6
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and "boom" in failed["error"].iloc[0]
    ok = df[df["status"] == "ok"].set_index("cell")
    assert ok.loc["SHIRKER_FRACTION=0.2__SHIRKER_KIND=brevity", "evaluate.win_rate_student"] == pytest.approx(36)
    assert "evaluate.per_category" not in df.columns
    on_disk = pd.read_csv(tmp_path / "sw" / "sweep.csv")
    assert len(on_disk) == 6 and "SHIRKER_KIND" in on_disk.columns
    assert collect_results(tmp_path / "sw", write=False).shape == df.shape


def test_stage1_parameter_in_grid_runs_stage1_per_value(tmp_path):
    runner = FakeRunner()
    spec = load_grid("skill_source")
    df = run_sweep(spec, tmp_path / "sw", runner=runner, declared=DECLARED.__getitem__, log=lambda m: None)
    assert len([c for c in runner.calls if c[2] == ("01_extract_skills",)]) == 2
    assert (df["status"] == "ok").all()
    skills = {Path(r).name: (Path(r) / "skills.jsonl").read_text() for r in df["run_dir"]}
    assert "s_dataset" in skills["SKILL_SOURCE=dataset"] and "s_direct" in skills["SKILL_SOURCE=direct"]


def test_unknown_parameter_fails_before_running(tmp_path):
    runner = FakeRunner()
    spec = load_grid("shirkers", {"NUM_EXAMPLE": 8})
    with pytest.raises(ParameterError) as err:
        run_sweep(spec, tmp_path / "sw", runner=runner, declared=DECLARED.__getitem__, log=lambda m: None)
    assert err.value.name == "NUM_EXAMPLE" and runner.calls == []


def test_cli_collect_only(tmp_path, capsys):
    runner = FakeRunner()
    run_sweep(load_grid("k"), tmp_path / "sw", runner=runner, declared=DECLARED.__getitem__, log=lambda m: None)
    assert main(["--grid", "k", "--out", str(tmp_path / "sw"), "--collect-only"]) == 0
    assert "K_SKILLS" in capsys.readouterr().out


def test_values_differing_only_in_unsafe_characters_get_their_own_cells(tmp_path):
    runner = FakeRunner()
    grid = tmp_path / "g.yaml"
    grid.write_text('grid:\n  TEACHER_MODEL: ["org/model", "org:model", "org model", "org-model"]\n')
    df = run_sweep(load_grid(grid), tmp_path / "sw", runner=runner, declared=DECLARED.__getitem__, log=lambda m: None)
    later = [c for c in runner.calls if c[2] != ("01_extract_skills",)]
    assert len({c[0] for c in later}) == 4 and len(df) == 4
    assert sorted(df["TEACHER_MODEL"]) == sorted(["org/model", "org:model", "org model", "org-model"])
    assert "TEACHER_MODEL=org-model" in set(df["cell"])  # a name that needed no change keeps its plain form


def test_a_pasted_key_in_a_grid_is_refused_before_anything_is_written(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("base:\n  TEACHER_API_KEY_ENV: sk-proj-Zq7Sentinel9x\ngrid:\n  K_SKILLS: [1, 2]\n")
    declared = {**DECLARED, "02_generate": DECLARED["02_generate"] | {"TEACHER_API_KEY_ENV"}}
    with pytest.raises(ParameterError, match="TEACHER_API_KEY_ENV: this is not the name of an environment variable"):
        run_sweep(load_grid(grid), tmp_path / "sw", runner=FakeRunner(), declared=declared.__getitem__)
    assert not (tmp_path / "sw" / "grid.json").exists()
def test_seeds_expand_cells_times_seeds_with_stage1_shared(tmp_path):
    runner = FakeRunner()
    spec = load_grid("shirkers", {"NUM_EXAMPLES": 8, "SEED": 5}, seeds=[0, 1, 2])
    spec.grid = {"SHIRKER_FRACTION": [0.0, 0.2]}
    df = run_sweep(spec, tmp_path / "sw", runner=runner, declared=DECLARED.__getitem__, log=lambda m: None)
    stage1 = [c for c in runner.calls if c[2] == ("01_extract_skills",)]
    assert len(stage1) == 1 and stage1[0][1] == {"SEED": 5}  # the base seed: stage 1 is not repeated per seed
    later = [c for c in runner.calls if c[2] != ("01_extract_skills",)]
    assert sorted((c[1]["SHIRKER_FRACTION"], c[1]["SEED"]) for c in later) == [
        (f, s) for f in (0.0, 0.2) for s in (0, 1, 2)]
    assert len(df) == 6 and sorted(df["seed"]) == [0, 0, 1, 1, 2, 2] and (df["SEED"] == df["seed"]).all()
    assert "SHIRKER_FRACTION=0.2__seed=1" in set(df["cell"])
    assert (df["items_path"].fillna("") == "").all()  # the fake stage 4 wrote no per-item table
    on_disk = pd.read_csv(tmp_path / "sw" / "sweep.csv")
    assert len(on_disk) == 6 and "seed" in on_disk.columns


def test_seeds_from_grid_file_and_cli(tmp_path, monkeypatch):
    grid = tmp_path / "g.yaml"
    grid.write_text("grid:\n  K_SKILLS: [1, 2]\nSEEDS: [3, 4]\n")
    assert load_grid(grid).seeds == [3, 4]
    assert load_grid(grid, seeds=[7]).seeds == [7]
    with pytest.raises(ParameterError):
        load_grid(grid, seeds="1,1")
    grid.write_text("grid:\n  SEED: [1, 2]\nSEEDS: [3]\n")
    with pytest.raises(ParameterError):
        load_grid(grid)
    seen = {}

    def fake_run_sweep(spec, out, parallel=1, rerun=False):
        seen["seeds"] = spec.seeds
        return pd.DataFrame({"status": ["ok"], "run_dir": ["x"]})

    monkeypatch.setattr("helpers.sweep.run_sweep", fake_run_sweep)
    assert main(["--grid", "k", "--out", str(tmp_path / "sw"), "--seeds", "0,1,2"]) == 0
    assert seen["seeds"] == [0, 1, 2]
    assert main(["--grid", "k", "--out", str(tmp_path / "sw"), "--seeds", "0,x"]) == 2


def test_items_path_is_collected(tmp_path):
    runner = FakeRunner()
    run_sweep(load_grid("k"), tmp_path / "sw", runner=runner, declared=DECLARED.__getitem__, log=lambda m: None)
    cell = tmp_path / "sw" / "cells" / "K_SKILLS=1"
    (cell / "eval").mkdir()
    (cell / "eval" / "pairwise_items.csv").write_text("model,id,preference\nstudent,a,1.0\n")
    df = collect_results(tmp_path / "sw").set_index("cell")
    assert df.loc["K_SKILLS=1", "items_path"].endswith("pairwise_items.csv")
    assert pd.isna(df.loc["K_SKILLS=2", "items_path"]) or df.loc["K_SKILLS=2", "items_path"] == ""


def test_running_a_sweep_again_keeps_finished_cells_and_retries_failed_ones(tmp_path):
    spec = load_grid("shirkers")
    first = FakeRunner(fail_when={"SHIRKER_FRACTION": 0.5, "SHIRKER_KIND": "junk"})
    run_sweep(spec, tmp_path / "sw", runner=first, declared=DECLARED.__getitem__, log=lambda m: None)
    again, said = FakeRunner(), []
    df = run_sweep(spec, tmp_path / "sw", runner=again, declared=DECLARED.__getitem__, log=said.append)
    cells = [Path(call[0]).name for call in again.calls]
    assert cells == ["SHIRKER_FRACTION=0.5__SHIRKER_KIND=junk"]  # only the failed cell runs again
    assert (df["status"] == "ok").all() and sum("kept" in m for m in said) == 5
    changed = load_grid("shirkers", {"NUM_EXAMPLES": 7})  # other parameters: every cell runs again
    assert len([c for c in _cell_calls(changed, tmp_path)]) == 6
    forced = FakeRunner()
    run_sweep(spec, tmp_path / "sw", runner=forced, declared=DECLARED.__getitem__, log=lambda m: None, rerun=True)
    assert len([c for c in forced.calls if c[2] != ("01_extract_skills",)]) == 6


def _cell_calls(spec, tmp_path):
    runner = FakeRunner()
    run_sweep(spec, tmp_path / "sw", runner=runner, declared=DECLARED.__getitem__, log=lambda m: None)
    return [c for c in runner.calls if c[2] != ("01_extract_skills",)]


def test_cli_writes_curves_with_intervals_and_paired_differences(tmp_path, capsys):
    """Two fractions x three seeds with per-item preferences: the 0.5 cells lose the items the 0.0 cells win."""
    grid = tmp_path / "g.yaml"
    grid.write_text("grid:\n  SHIRKER_FRACTION: [0.0, 0.5]\nSEEDS: [0, 1, 2]\n")
    run_sweep(load_grid(grid), tmp_path / "sw", runner=FakeRunner(), declared=DECLARED.__getitem__,
              log=lambda m: None)
    for cell in (tmp_path / "sw" / "cells").iterdir():
        wins = 6 if "=0.0_" in cell.name else 3  # of 8 items
        (cell / "eval").mkdir()
        rows = [f"student,i{i},{1.0 if i < wins else 0.0}" for i in range(8)]
        (cell / "eval" / "pairwise_items.csv").write_text("model,id,preference\n" + "\n".join(rows) + "\n")
    assert main(["--grid", str(grid), "--out", str(tmp_path / "sw"), "--collect-only"]) == 0
    assert "SHIRKER_FRACTION" in capsys.readouterr().out
    intervals = pd.read_csv(tmp_path / "sw" / "intervals.csv").set_index("SHIRKER_FRACTION")
    assert intervals.loc[0.0, "estimate"] == pytest.approx(75.0) and intervals.loc[0.5, "estimate"] == pytest.approx(37.5)
    assert (intervals["n_seeds"] == 3).all() and (intervals["n_items"] == 24).all()
    assert (intervals["low"] <= intervals["estimate"]).all() and (intervals["estimate"] <= intervals["high"]).all()
    paired = pd.read_csv(tmp_path / "sw" / "paired.csv").iloc[0]
    assert paired["SHIRKER_FRACTION"] == 0.5 and paired["baseline"] == 0.0
    assert paired["estimate"] == pytest.approx(-37.5)  # items 3-5 lost in every seed, the others unchanged
    assert -100 <= paired["low"] < -37.5 < paired["high"] < 0  # an interval over items that excludes no effect
    assert (tmp_path / "sw" / "figures" / "sweep_shirker_fraction.png").stat().st_size > 0
    assert (tmp_path / "sw" / "figures" / "sweep_shirker_fraction.svg").exists()
