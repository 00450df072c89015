"""Where a stage's time goes: phases timed in the stage's process, stored in the manifest when it ends, and printed
by the driver with the start-up before the stage began and the time no phase accounts for."""
from __future__ import annotations

import time

import pytest

from helpers import phases
from helpers.pipeline import stage_startup, timing_lines
from helpers.runs import Run


@pytest.fixture(autouse=True)
def clean():
    phases.reset()
    yield
    phases.reset()


def test_phases_add_up_their_runs_and_counts_and_give_a_rate():
    phases.add("judge generation", 2.0, tokens=30, rows=4)
    phases.add("judge generation", 1.0, tokens=15, rows=2)
    with phases.timed("load model") as counts:
        counts["files"] = 3
    snap = phases.snapshot()["phases"]
    assert snap["judge generation"] == {"seconds": 3.0, "count": 2, "tokens": 45, "rows": 6, "tokens_per_s": 15.0}
    assert snap["load model"]["count"] == 1 and snap["load model"]["files"] == 3


def test_time_covered_counts_overlapping_phases_once():
    phases.add("outer", 4.0, started=100.0)
    phases.add("inner", 1.0, started=101.0)  # inside the outer one
    phases.add("later", 2.0, started=110.0)
    assert phases.snapshot()["covered_s"] == 6.0


def test_a_phase_that_raised_is_counted():
    with pytest.raises(ValueError), phases.timed("failing load"):
        raise ValueError("no such file")
    assert phases.snapshot()["phases"]["failing load"]["count"] == 1


def test_a_stage_stores_its_own_phases_in_the_manifest(tmp_path):
    run = Run(tmp_path / "run")
    run.begin_stage("extract_skills", {})
    phases.add("teacher generation", 5.0)
    run.end_stage()
    phases.add("materialise gemma", 3.0)  # before its stage began (a notebook's preview cell): counts for it
    run.begin_stage("generate", {})
    phases.add("teacher generation", 2.5, tokens=50)
    run.end_stage()
    timing = run.manifest()["stages"]["generate"]["timing"]
    assert set(timing["phases"]) == {"materialise gemma", "teacher generation"}
    assert timing["phases"]["teacher generation"] == {"seconds": 2.5, "count": 1, "tokens": 50, "tokens_per_s": 20.0}
    assert phases.snapshot() == {"phases": {}, "covered_s": 0.0, "first_ns": None}  # the next stage starts afresh


def test_the_driver_prints_start_up_phases_calls_and_the_rest(tmp_path):
    run = Run(tmp_path / "run")
    started_ns = time.time_ns() - 3_000_000_000  # the notebook began 3 s before its stage
    run.begin_stage("generate", {})
    now = time.perf_counter()
    phases.add("load smollm2", 1.0, started=now)
    phases.add("teacher generation", 4.0, started=now + 1.0, tokens=80)
    run.add_accounting("teacher", {"calls": 24, "cache_hits": 0, "output_tokens": 80})
    run.end_stage()
    seen = stage_startup(run, {}, started_ns)
    assert seen["stages"] == ["generate"] and 2.9 <= seen["startup_s"] <= 4.0
    run.set_stage_info("02_generate", {"seconds": 12.0, **seen}, stage="_pipeline")
    lines = timing_lines(run, ["02_generate"])
    text = "\n".join(lines)
    assert lines[0] == "02_generate: 12.0 s" and lines[-1] == "all stages: 12.0 s"
    assert "start-up (kernel, imports)" in text and "80 tokens, 20.0 tok/s" in text and "teacher calls" in text
    other = next(line for line in lines if "other" in line)
    assert float(other.split()[-2]) == pytest.approx(12.0 - seen["startup_s"] - 5.0, abs=0.11)
