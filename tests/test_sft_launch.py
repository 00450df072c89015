"""Stage 3 starting its own training processes, from the notebook, as `python -m helpers run --only 03` runs it.

NUM_PROCESSES=2 with ACCELERATE_CONFIG='ddp' on CPU: the notebook's kernel starts `accelerate launch` with two gloo
processes, relays their output, and selects, answers and records after they end. The run folder holds data as
stage 2 writes it (`data/train.jsonl`, `data/heldout.jsonl`); the base model is the tiny random model of
`sft_tiny`, so that the cost is the launch itself (two processes importing torch and TRL), not training.
`ISM_SFT_TRACE_DIR` makes every launched process log the rows it trained on and the files it wrote
(`helpers.sft.process_trace`). Loss tolerance of the resume check: see tests/test_sft_multiprocess.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.pipeline import NotebookFailed, run_pipeline
from helpers.runs import PROJECT_ROOT
from sft_tiny import ARITHMETIC_HELDOUT, ARITHMETIC_TRAIN, micro_batches, write_jsonl

pytestmark = pytest.mark.slow

PROCESSES, PER_DEVICE, EFFECTIVE_BATCH, STEPS = 2, 2, 8, 4
ACCUMULATION = EFFECTIVE_BATCH // (PER_DEVICE * PROCESSES)
PARAMS = {"NUM_PROCESSES": PROCESSES, "ACCELERATE_CONFIG": "ddp", "USE_LORA": False, "MAX_STEPS": STEPS,
          "SAVE_EVERY": 2, "PER_DEVICE_BATCH_SIZE": PER_DEVICE, "EFFECTIVE_BATCH_SIZE": EFFECTIVE_BATCH,
          "MAX_LENGTH": 96, "LEARNING_RATE": 0.01, "LR_SCHEDULER": "constant", "WARMUP_RATIO": 0.0,
          "MAX_NEW_TOKENS": 4, "SELECTION_EXAMPLES": 2, "COMPARE_EXAMPLES": 1, "RESUMABLE": True}
PREFIX = "  03_sft | "


def _run_folder(path: Path) -> Path:
    write_jsonl(path / "data" / "train.jsonl", ARITHMETIC_TRAIN)
    write_jsonl(path / "data" / "heldout.jsonl", ARITHMETIC_HELDOUT)
    return path


def _stage3(run_dir: Path, trace: Path, base: Path, **extra) -> list[str]:
    """Notebook 03 through the pipeline driver, CPU only, with its streamed progress lines returned."""
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CUDA_VISIBLE_DEVICES", "")
        env.setenv("ISM_SFT_TRACE_DIR", str(trace))
        run_pipeline(run_dir, {**PARAMS, "BASE_MODEL": str(base), **extra}, ["03_sft"], log=lines.append,
                     stream_progress=True)
    return lines


def _history(run_dir: Path, step: int) -> list[dict]:
    state = run_dir / "sft" / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    return json.loads(state.read_text())["log_history"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_base) -> dict:
    tmp = tmp_path_factory.mktemp("launch")
    run_dir, trace = _run_folder(tmp / "run"), tmp / "trace"
    start = time.perf_counter()
    lines = _stage3(run_dir, trace, tiny_base)
    print(f"stage 3 with a 2-process launch: {time.perf_counter() - start:.1f} s")
    return {"run_dir": run_dir.resolve(), "trace": trace, "lines": lines, "base": tiny_base,
            "history": _history(run_dir, STEPS)}


def _rows_per_step(trace: Path, rank: int, steps: int) -> list[list[int]]:
    batches = micro_batches(trace, rank)
    assert len(batches) >= steps * ACCUMULATION
    return [sum(batches[s * ACCUMULATION:(s + 1) * ACCUMULATION], []) for s in range(steps)]


def test_the_notebook_launches_two_processes_that_each_train_their_own_rows(launched):
    per_rank = [_rows_per_step(launched["trace"], rank, STEPS) for rank in range(PROCESSES)]
    assert not (launched["trace"] / f"rank{PROCESSES}.rows.jsonl").exists()
    for step in range(STEPS):
        rank0, rank1 = set(per_rank[0][step]), set(per_rank[1][step])
        assert not rank0 & rank1, f"step {step + 1}: both processes trained on {rank0 & rank1}"
        assert len(rank0 | rank1) == EFFECTIVE_BATCH
    lines = launched["lines"]
    assert any(line.startswith(f"{PREFIX}launching 2 training processes (ddp): accelerate launch --config_file "
                               "configs/accelerate/ddp.yaml --num_processes 2") for line in lines)
    # The launched processes' own progress reaches the driver's streamed lines, once per step (main process only).
    steps = [line for line in lines if line.startswith(f"{PREFIX}training: step ") and ", loss " in line]
    assert [line.split("training: step ")[1].split("/")[0] for line in steps] == [str(s + 1) for s in range(STEPS)]


def test_the_stage_records_once_after_the_launch_ended(launched):
    run_dir, trace, lines = launched["run_dir"], launched["trace"], launched["lines"]
    checkpoints = run_dir / "sft" / "checkpoints"
    written = {rank: {json.loads(line)["path"] for line in (trace / f"rank{rank}.writes.jsonl").read_text().splitlines()}
               for rank in range(PROCESSES)}
    assert str(checkpoints / f"checkpoint-{STEPS}" / "trainer_state.json") in written[0]
    for rank in range(PROCESSES):  # with RESUMABLE every process saves its random state into the checkpoints
        outside = sorted(p for p in written[rank] if not p.startswith(str(checkpoints)) and p != str(run_dir / "sft"))
        assert outside == [], f"launched process {rank} wrote records the stage writes"
    selection = json.loads((run_dir / "sft" / "selection.json").read_text())
    assert selection["best_checkpoint"] == str(checkpoints / f"checkpoint-{STEPS}")
    assert selection["training_processes"] == 2 and selection["accelerate_config"] == "ddp"
    # Selection and answers come after the launch: after its last checkpoint, and after its last relayed line.
    ended = (checkpoints / f"checkpoint-{STEPS}" / "trainer_state.json").stat().st_mtime
    for name in ("selection.json", "heldout_answers.jsonl"):
        assert (run_dir / "sft" / name).stat().st_mtime >= ended
    last_training = max(i for i, line in enumerate(lines) if line.startswith(f"{PREFIX}training: step"))
    assert min(i for i, line in enumerate(lines) if "fine-tuned answers" in line) > last_training
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]["sft"]
    assert "finished" in manifest and manifest["launch"]["num_processes"] == 2
    assert manifest["params"]["NUM_PROCESSES"] == 2 and manifest["params"]["ACCELERATE_CONFIG"] == "ddp"
    results = json.loads((run_dir / "results.json").read_text())["sft"]
    assert results["num_train_examples"] == len(ARITHMETIC_TRAIN) and results["best_checkpoint"]


def test_a_failing_launch_fails_the_notebook_with_the_process_error(tmp_path, tiny_base):
    """A base model whose tokenizer loads (the notebook's preview) but whose weights do not: the launched processes
    fail, and the notebook fails with their error rather than a bare exit status."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_base, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    run_dir = _run_folder(tmp_path / "run")
    with pytest.raises(NotebookFailed) as failed:
        _stage3(run_dir, tmp_path / "trace", broken)
    message = failed.value.evalue
    assert "the launched training (2 processes, ddp) failed in process 0" in message
    assert "Error while deserializing header" in message  # safetensors' own words, from the launched process
    assert not (run_dir / "sft" / "selection.json").exists()


def _processes_with(marker: str) -> list[int]:
    """Processes whose environment holds `marker` (the test's own trace folder): the driver and all it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # ended meanwhile, or another user's
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_pipeline_leaves_no_training_process(tmp_path, tiny_base):
    """SIGTERM to `python -m helpers run` while the launched processes train: the driver dies at once (no clean-up
    code runs), its kernel exits when it sees its parent gone, the launcher gets SIGTERM as its parent dies and stops
    its workers; a worker whose launcher is killed outright dies with it too."""
    run_dir, trace = _run_folder(tmp_path / "run"), tmp_path / "trace"
    marker = f"ISM_SFT_TRACE_DIR={trace}"
    settings = {**PARAMS, "BASE_MODEL": str(tiny_base), "MAX_STEPS": 2000, "SAVE_EVERY": 2000}
    command = [sys.executable, "-m", "helpers", "run", "--run-dir", str(run_dir), "--only", "03"]
    command += [word for name, value in settings.items() for word in ("-p", name, json.dumps(value))]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ISM_SFT_TRACE_DIR": str(trace)}
    driver = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (trace / "rank1.rows.jsonl").exists():  # both processes are training
            assert driver.poll() is None and time.monotonic() < deadline, "the launch never started training"
            time.sleep(0.5)
        running = _processes_with(marker)
        assert len(running) >= 5, "driver, kernel, launcher and two workers"
        driver.send_signal(signal.SIGTERM)
        driver.wait(60)
        deadline = time.monotonic() + 90
        while (left := _processes_with(marker)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == [], f"processes left running after the pipeline was killed: {left}"
        assert not (run_dir / "sft" / "selection.json").exists()
    finally:
        for pid in _processes_with(marker):  # never leave a stray process behind, even when the test fails
            os.kill(pid, signal.SIGKILL)


def test_a_resumable_launch_continues_from_its_newest_checkpoint(launched, tmp_path):
    """The last checkpoint removed (as if the run had stopped after step 2): the same stage started again resumes
    from checkpoint-2, so its processes fetch only the rows of steps 3 and 4, and reach the same losses."""
    run_dir, first = launched["run_dir"], launched["history"]
    checkpoints = run_dir / "sft" / "checkpoints"
    shutil.rmtree(checkpoints / f"checkpoint-{STEPS}")
    kept = (checkpoints / "checkpoint-2" / "trainer_state.json").stat().st_mtime_ns
    trace = tmp_path / "trace"
    _stage3(run_dir, trace, launched["base"])
    assert (checkpoints / "checkpoint-2" / "trainer_state.json").stat().st_mtime_ns == kept
    for rank in range(PROCESSES):  # two steps of micro-batches, plus at most the loader's one read ahead
        assert 2 * ACCUMULATION <= len(micro_batches(trace, rank)) <= 2 * ACCUMULATION + 1
    again = _history(run_dir, STEPS)
    for key in ("loss", "eval_loss"):
        got = {h["step"]: h[key] for h in again if key in h}
        want = {h["step"]: h[key] for h in first if key in h}
        assert sorted(got) == sorted(want)
        for step, value in want.items():
            assert got[step] == pytest.approx(value, abs=1e-4), f"{key} at step {step}"
    assert json.loads((run_dir / "sft" / "selection.json").read_text())["training_processes"] == 2
