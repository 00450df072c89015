"""The Slurm executor against a real Slurm (`make test-slurm`: a one-node cluster started by tests/slurm/cluster.sh).

One grid of the shirker ablation's shape (tests/slurm/shirkers_2cells.yaml: stage 1 shared, 2 fractions x 1 seed)
runs through the local executor and as Slurm job arrays; the two sweep.csv must agree in every result column. One
cell's stage-3 job is requeued (`scontrol requeue`) after its first checkpoint: it must restart, continue training
from the checkpoint and end with the local run's numbers. A run whose stage 3 fails must be reported as failed, with
the error in the log lines the status shows, and its stage 4 must not run.

Skipped unless ISM_TEST_SLURM=1 (set by `make test-slurm`); with it set, a Slurm that does not answer is a failure.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
GRID = ROOT / "tests" / "slurm" / "shirkers_2cells.yaml"
REQUEUED = "SHIRKER_FRACTION=0.5__seed=0"  # its stage-3 job is requeued with `scontrol requeue`
SIGNALLED = "SHIRKER_FRACTION=0.0__seed=0"  # its stage-3 job gets SIGUSR2, as before a time limit or a preemption
MAX_STEPS = 4  # the grid's
SLURM = ["--executor", "slurm", "--set", "SLURM_CPUS=1", "--set", "SLURM_TIME=30:00"]
# Columns that differ between two runs of the same cell by nature: where and how long, not what.
NOT_COMPARED = re.compile(r"(^|\.)(run_dir|items_path|best_checkpoint|status|error|seconds|\w*_seconds|\w*_per_s|"
                          r"\w*rss_gb)$")

pytestmark = pytest.mark.skipif(os.environ.get("ISM_TEST_SLURM") != "1",
                                reason="real Slurm tests: `make setup-slurm` then `make test-slurm`")


def _python(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(f"$ python {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _slurm(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=True).stdout


def _wait(predicate, timeout: float, what: str, every: float = 2.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{_slurm('squeue')}")


def _record(run_dir: Path, stage: str) -> dict:
    try:
        return json.loads((run_dir / "slurm" / f"{stage}.json").read_text())
    except (OSError, ValueError):
        return {}


def _queue_empty(job_prefixes: set[str]) -> bool:
    ids = [line.strip() for line in _slurm("squeue", "-h", "-r", "-o", "%i").splitlines() if line.strip()]
    return not any(i.split("_")[0] in job_prefixes for i in ids)


def _job_ids(folder: Path) -> set[str]:
    history = json.loads((folder / "slurm" / "jobs.json").read_text())
    return {b["job_id"] for s in history["submissions"] for b in s["batches"]}


def _interrupt_mid_training(cell: Path, interrupt) -> dict:
    """Wait for the cell's first stage-3 checkpoint, interrupt its job, let the requeued job start at once."""
    checkpoints = cell / "sft" / "checkpoints"

    def first_checkpoint():
        record = _record(cell, "03_sft")
        done = [c for c in checkpoints.glob("checkpoint-*") if (c / "trainer_state.json").exists()]
        return record.get("state") == "running" and done and record
    job = _wait(first_checkpoint, 1500, f"the first stage-3 checkpoint of {cell.name}", every=0.5)["job"]
    interrupt(job)
    at = sorted(int(c.name.split("-")[1]) for c in checkpoints.glob("checkpoint-*"))
    # Slurm holds a requeued job for two minutes (Reason=BeginTime); let it start at once to keep the test short.
    _wait(lambda: re.search(r"JobState=PENDING .*Restarts=1", " ".join(_slurm("scontrol", "show", "job", job).split())),
          300, f"job {job} to be requeued", every=1)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True, timeout=60)
    return {"cell": cell, "job": job, "at_interrupt": at}


@pytest.fixture(scope="module")
def cluster():
    if not shutil.which("sbatch") or not os.environ.get("SLURM_CONF"):
        pytest.fail("ISM_TEST_SLURM=1 but no sbatch or SLURM_CONF: run through `make test-slurm`")
    _slurm("sinfo", "-h")  # the controller answers
    return True


@pytest.fixture(scope="module")
def sweeps(cluster, tmp_path_factory):
    """The grid locally, then as Slurm jobs with one requeue mid-training, plus a failing run beside it."""
    base = tmp_path_factory.mktemp("slurm-e2e")
    start = time.monotonic()
    local = _python("-m", "helpers.sweep", "--grid", str(GRID), "--out", str(base / "local"))
    assert local.returncode == 0, local.stderr[-2000:]
    local_s = time.monotonic() - start

    failing = base / "failing"  # stage 3 drops every example (all longer than 16 tokens): fails at run time
    failing.mkdir()
    for name in ("skills.jsonl", "query_types.jsonl", "skills.txt", "queries.txt"):
        src = base / "local" / "_stage1" / "shared" / name
        if src.exists():
            shutil.copy2(src, failing / name)
    params = [a for k, v in (("NUM_EXAMPLES", "3"), ("NUM_HELDOUT", "1"), ("GENERATE_MAX_TOKENS", "64"),
                             ("MAX_STEPS", "1"), ("MAX_LENGTH", "16"), ("LONG_EXAMPLES", "drop"), ("N_EVAL", "4"),
                             ("RUN_MT_BENCH", "false"), ("RUN_WILDBENCH", "false"), ("COMPARE_BASE", "false"),
                             ("SLURM_CPUS", "1"), ("SLURM_TIME", "'30'"))
              for a in ("-p", k, v)]
    start = time.monotonic()
    sub = _python("-m", "helpers.sweep", "--grid", str(GRID), "--out", str(base / "slurm"), *SLURM)
    assert sub.returncode == 0, sub.stderr[-2000:]
    fail = _python("-m", "helpers", "run", "--run-dir", str(failing), "--only", "02,03,04", "--executor", "slurm",
                   *params)
    assert fail.returncode == 0, fail.stderr[-2000:]

    # Mid-training, one cell's job gets what a time limit or a preemption sends (SIGUSR2: submitit requeues the job
    # itself) and the other is requeued from outside (`scontrol requeue`, as an admin or a node failure would).
    signalled = _interrupt_mid_training(base / "slurm" / "cells" / SIGNALLED,
                                        lambda job: _slurm("scancel", "--signal=USR2", job))
    requeued = _interrupt_mid_training(base / "slurm" / "cells" / REQUEUED, lambda job: _slurm("scontrol", "requeue", job))

    jobs = _job_ids(base / "slurm") | _job_ids(failing)
    _wait(lambda: _queue_empty(jobs), 1800, "every job to leave the queue", every=5)
    slurm_s = time.monotonic() - start
    print(f"local sweep {local_s:.0f} s; Slurm sweep + failing run {slurm_s:.0f} s")
    return {"base": base, "failing": failing, REQUEUED: requeued, SIGNALLED: signalled}


def test_slurm_sweep_equals_local(sweeps):
    base = sweeps["base"]
    collected = _python("-m", "helpers.sweep", "--collect-only", "--out", str(base / "slurm"))
    assert collected.returncode == 0, collected.stderr
    local = pd.read_csv(base / "local" / "sweep.csv")
    slurm = pd.read_csv(base / "slurm" / "sweep.csv")
    assert list(slurm["status"]) == ["ok", "ok"] == list(local["status"])
    compared = [c for c in local.columns if not NOT_COMPARED.search(c)
                and not local[c].astype(str).str.contains(str(base), regex=False).any()]  # paths differ by nature
    assert {"evaluate.win_rate", "sft.train_loss_final", "generate.num_examples"} <= set(compared), compared
    assert set(compared) <= set(slurm.columns)
    # float32 training resumed from a checkpoint: equal up to summation order
    pd.testing.assert_frame_equal(slurm[compared], local[compared], check_exact=False, rtol=1e-6)
    status = _python("-m", "helpers.sweep", "--status", "--out", str(base / "slurm"))
    assert status.returncode == 0 and "3 done" in status.stdout, status.stdout  # stage 1's folder and both cells
    for name in (REQUEUED, SIGNALLED):
        assert re.search(rf"^{re.escape(name)}\s+done\s+\[requeued 1x\]", status.stdout, re.M), status.stdout


@pytest.mark.parametrize("name", [REQUEUED, SIGNALLED])
def test_interrupted_cell_resumed_from_its_checkpoint(sweeps, name):
    cell, job, at = sweeps[name]["cell"], sweeps[name]["job"], sweeps[name]["at_interrupt"]
    shown = _slurm("scontrol", "show", "job", job)
    assert re.search(r"\bRestarts=1\b", shown), shown  # the same job id, started again
    record = _record(cell, "03_sft")
    assert record["state"] == "done" and record["attempts"] == 2 and record["restarts"] == 1
    log = "\n".join((cell / "logs" / f"03_sft.{job}.{s}").read_text() for s in ("out", "err"))
    assert "attempt 1," in log and "attempt 2, Slurm restarts 1" in log
    if name == SIGNALLED:
        assert "time limit or preemption: requeued" in log  # submitit asked the job, which requeued itself
    second = log[log.index("attempt 2, Slurm restarts 1"):]
    steps = [int(m) for m in re.findall(rf"training: step (\d+)/{MAX_STEPS}, loss", second)]
    assert steps and min(steps) > min(at), (steps, at)  # continued from a checkpoint, not from step 1
    assert max(steps) == MAX_STEPS
    assert _record(cell, "04_eval_ablations")["state"] == "done"


def test_failing_run_is_reported_with_its_log(sweeps):
    failing = sweeps["failing"]
    assert _record(failing, "03_sft")["state"] == "failed"
    assert not (failing / "results.json").exists() or "evaluate" not in json.loads((failing / "results.json").read_text())
    status = _python("-m", "helpers", "status", "--run-dir", str(failing))
    assert status.returncode == 1
    line = next(l for l in status.stdout.splitlines() if l.startswith(failing.name))
    assert "failed" in line and "03_sft" in line and "MAX_LENGTH" in line, status.stdout
    assert "| " in status.stdout and "MAX_LENGTH" in status.stdout.split(line, 1)[1]  # the log's last lines
    assert _record(failing, "04_eval_ablations") == {}  # never started


def test_bad_input_fails_before_submission(cluster, tmp_path):
    before = _slurm("squeue", "-h", "-o", "%i")
    cases = [(["--set", "SLURM_PARTITION=nosuch"], "SLURM_PARTITION", "unknown partition"),
             (["--set", "SLURM_TIME=1:2:3:4"], "SLURM_TIME", "not a Slurm time limit"),
             (["--set", "SLURM_GPUS={'03': 64}"], "SLURM_GPUS", "per node"),
             (["--set", "SLURM_CPUS=512"], "SLURM_CPUS", "at most")]
    for extra, name, problem in cases:
        done = _python("-m", "helpers.sweep", "--grid", str(GRID), "--out", str(tmp_path / "bad"), "--executor",
                       "slurm", *extra)
        assert done.returncode == 2 and f"error: {name}" in done.stderr and problem in done.stderr, done.stderr
    env = {**os.environ, "PATH": "/nonexistent"}
    done = subprocess.run([sys.executable, "-m", "helpers.sweep", "--grid", str(GRID), "--out", str(tmp_path / "bad"),
                           "--executor", "slurm"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "sinfo" in done.stderr and "--executor local" in done.stderr, done.stderr
    assert _slurm("squeue", "-h", "-o", "%i") == before


def test_smoke_one_run_as_jobs(cluster, tmp_path):
    """One run folder, stages 1-4 as four chained jobs (CI's Slurm smoke: `make test-slurm PYTEST_ARGS='-k smoke'`)."""
    run = tmp_path / "smoke"
    params = [a for k, v in (("NUM_TOPICS", "1"), ("SKILLS_PER_TOPIC", "3"), ("NUM_QUERY_TYPES", "1"),
                             ("DEDUP_METHOD", "fuzzy"), ("NUM_EXAMPLES", "2"), ("NUM_HELDOUT", "1"),
                             ("GENERATE_MAX_TOKENS", "48"), ("MAX_STEPS", "1"), ("WARMUP_RATIO", "0.0"),
                             ("SELECTION", "last"), ("COMPARE_EXAMPLES", "0"), ("N_EVAL", "2"),
                             ("ANSWER_MAX_TOKENS", "8"), ("COMPARE_BASE", "false"), ("RUN_MT_BENCH", "false"),
                             ("RUN_WILDBENCH", "false"), ("SHIRKER_PROBE_FRACTIONS", "[]"), ("SLURM_CPUS", "1"),
                             ("SLURM_TIME", "'20'")) for a in ("-p", k, v)]
    start = time.monotonic()
    sub = _python("-m", "helpers", "run", "--run-dir", str(run), "--executor", "slurm", *params)
    assert sub.returncode == 0, sub.stderr
    jobs = _job_ids(run)
    assert len(jobs) == 4
    _wait(lambda: _queue_empty(jobs), 1200, "the smoke run's four jobs", every=3)
    print(f"smoke run: {time.monotonic() - start:.0f} s")
    status = _python("-m", "helpers", "status", "--run-dir", str(run))
    assert status.returncode == 0 and " done" in status.stdout, status.stdout
    assert "evaluate" in json.loads((run / "results.json").read_text())
    assert sorted(p.name for p in (run / "logs").glob("*.out")) == sorted(
        f"{stage}.{job}.out" for stage, job in zip(("01_extract_skills", "02_generate", "03_sft",
                                                    "04_eval_ablations"), sorted(jobs, key=int)))
