"""The function a Slurm job runs: one stage of one run folder, resumable by running it again.

A requeued job (preemption, `scontrol requeue`, its time limit reached) starts this same pickled callable again with
the same job id; the stage then continues from what the run folder holds (cached calls, stage-2 progress files,
stage-3 checkpoints with RESUMABLE). A stage that already finished is not run again at all: its record
`RUN/slurm/<stage>.json` says `done` with the same parameters, so a requeue after training never retrains.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..jsonl import write_atomic

RECORDS = "slurm"  # inside a run folder: one record per stage (state, job, attempts)
LOGS = "logs"  # inside a run folder: one link per job to its Slurm log (stage.JOBID.out / .err)
LOCK_FILE = ".pipeline.lock"  # helpers.pipeline's per-folder lock
LOCK_WAIT_S = 300  # on NFS a killed node's lock lives until the server's lease ends (about 90 s on NFSv4)


def params_fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_record_path(run_dir: Path, stage: str) -> Path:
    return run_dir / RECORDS / f"{stage}.json"


def read_stage_record(run_dir: Path, stage: str) -> dict[str, Any]:
    try:
        data = json.loads(stage_record_path(run_dir, stage).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_stage_record(run_dir: Path, stage: str, record: dict[str, Any]) -> None:
    path = stage_record_path(run_dir, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=2, default=str))


def stage_done(run_dir: Path, stage: str, params: dict[str, Any]) -> bool:
    record = read_stage_record(run_dir, stage)
    return record.get("state") == "done" and record.get("fingerprint") == params_fingerprint(params)


def link_log(run_dir: Path, stage: str, job_id: str, target: Path, suffix: str) -> Path:
    """RUN/logs/<stage>.<job_id>.<suffix> -> the Slurm log (relative link, so the sweep folder may move)."""
    link = run_dir / LOGS / f"{stage}.{job_id}.{suffix}"
    link.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(target, link.parent)
    if not link.is_symlink() or os.readlink(link) != rel:
        link.unlink(missing_ok=True)
        link.symlink_to(rel)
    return link


def _resolve(dotted: str) -> Any:
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def _slurm_job_id() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")


def _wait_for_lock(run_dir: Path, wait_s: float) -> None:
    """A requeued job may start before the file system lets go of the killed job's lock (NFS): wait, then run."""
    lock = FileLock(str(run_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        return  # the pipeline refuses with its own message naming the folder
    lock.release()


def _watch_sigterm() -> list[int]:
    """A list that gets an entry when SIGTERM arrives; the handler before (submitit's) still runs."""
    seen: list[int] = []
    before = signal.getsignal(signal.SIGTERM)

    def note(signum: int, frame: Any) -> None:
        seen.append(signum)
        if callable(before):
            before(signum, frame)

    try:
        signal.signal(signal.SIGTERM, note)
    except ValueError:  # not the main thread (tests): no handler, no interruption noted
        pass
    return seen


@dataclass
class StageJob:
    """One stage of one run folder, as a Slurm job runs it.

    `runner` is the dotted name of the pipeline driver (`helpers.pipeline:run_pipeline`), resolved in the job: this
    package stays below the stages. `copy_files` are (source, destination) pairs copied when missing (a sweep's
    shared stage-1 lists). `cell` is the sweep cell's record (`cell.json`): the job keeps its status current, so
    `--collect-only` and the status see finished and failed cells while others still run.
    """

    run_dir: str
    stage: str
    params: dict[str, Any]
    runner: str = "helpers.pipeline:run_pipeline"
    copy_files: list[tuple[str, str]] = field(default_factory=list)
    cell: dict[str, Any] | None = None
    last: bool = False
    lock_wait_s: float = LOCK_WAIT_S

    def __call__(self) -> str:
        run_dir = Path(self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        job_id = _slurm_job_id()
        self._link_own_logs(run_dir, job_id)
        fingerprint = params_fingerprint(self.params)
        before = read_stage_record(run_dir, self.stage)
        if stage_done(run_dir, self.stage, self.params):
            print(f"{self.stage} in {run_dir} finished before (job {before.get('job')}): not run again", flush=True)
            if self.last:  # a job killed between its record and the cell's: the cell is finished all the same
                self._update_cell(run_dir, status="ok", error="", stage=None)
            return "done before"
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        record = {"state": "running", "stage": self.stage, "job": job_id, "fingerprint": fingerprint,
                  "restarts": restarts, "attempts": int(before.get("attempts", 0)) + 1,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": os.uname().nodename}
        write_stage_record(run_dir, self.stage, record)
        print(f"{self.stage} in {run_dir}: job {job_id}, attempt {record['attempts']}, Slurm restarts {restarts}",
              flush=True)
        for src, dst in self.copy_files:
            if Path(src).exists() and not Path(dst).exists():
                shutil.copy2(src, dst)
        self._update_cell(run_dir, status="running", stage=self.stage)
        _wait_for_lock(run_dir, self.lock_wait_s)
        stopping = _watch_sigterm()
        start = time.perf_counter()
        try:
            _resolve(self.runner)(run_dir, self.params, notebooks=(self.stage,), stream_progress=True)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
            # Slurm stops a requeued, preempted or cancelled job with SIGTERM (the notebook's kernel dies of it):
            # that is an interruption, not a failure of the stage.
            interrupted = bool(stopping) or isinstance(exc, (KeyboardInterrupt, SystemExit))
            record.update(state="interrupted" if interrupted else "failed", error=error,
                          ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), traceback=traceback.format_exc()[-4000:])
            write_stage_record(run_dir, self.stage, record)
            if not interrupted:
                self._update_cell(run_dir, status="failed", error=f"{self.stage}: {error}", stage=self.stage)
            raise
        record.update(state="done", ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      seconds=round(time.perf_counter() - start, 1))
        write_stage_record(run_dir, self.stage, record)
        if self.last:
            self._update_cell(run_dir, status="ok", error="", stage=None)
        return "done"

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit asks this on a time-out or a preemption signal: requeue the same job; it continues from the
        run folder (see the module docstring), so nothing else needs saving."""
        from submitit.helpers import DelayedSubmission

        print(f"{self.stage}: time limit or preemption: requeued, continues from {self.run_dir}", flush=True)
        return DelayedSubmission(self)

    def _link_own_logs(self, run_dir: Path, job_id: str) -> None:
        """The job links its own log into the run folder too (a job resubmitted under a new id has no link yet)."""
        folder = os.environ.get("SUBMITIT_FOLDER")
        if not folder or not job_id:
            return
        for suffix in ("out", "err"):
            target = Path(folder) / f"{job_id}_0_log.{suffix}"
            try:
                link_log(run_dir, self.stage, job_id, target, suffix)
            except OSError as exc:  # a file system without links: the log stays in the submitit folder
                print(f"could not link {target} into {run_dir / LOGS}: {exc}", file=sys.stderr)

    def _update_cell(self, run_dir: Path, status: str, stage: str | None, error: str | None = None) -> None:
        if self.cell is None:
            return
        path = run_dir / "cell.json"
        try:
            cell = json.loads(path.read_text())
        except (OSError, ValueError):
            cell = dict(self.cell)
        cell.update(status=status, stage=stage)
        if error is not None:
            cell["error"] = error
        if status == "ok":
            cell["seconds"] = round(sum(float(read_stage_record(run_dir, s).get("seconds", 0.0))
                                        for s in self.cell.get("stages", [])), 1)
        write_atomic(path, json.dumps(cell, indent=2, default=str))
