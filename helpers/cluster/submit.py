"""Submit a plan of stage jobs through submitit: one job (or job array) per stage, chained by dependencies.

A plan is a list of `StageBatch`es, each one stage over one or more run folders. A batch of several run folders is
one job array (`--array=0-N%SLURM_ARRAY_PARALLELISM`); a batch that follows another array of the same folders depends
on it task by task (`aftercorr`: task i of stage 3 starts when task i of stage 2 finished, so one failed cell blocks
only its own later stages), other dependencies are `afterok`. `--kill-on-invalid-dep=yes` removes the later stages of
a failed cell from the queue instead of leaving them pending forever; `--requeue` lets preemption requeue a job.

Every job runs python directly under `srun --cpus-per-task=N` (since Slurm 22.05 srun no longer inherits
--cpus-per-task, and a step pinned to one CPU would starve stage 3's training processes). Logs stay where sbatch
writes them (`<folder>/<stage>/<job>_0_log.out`, appended across requeues) and each run folder gets links
`logs/<stage>.<job>.out|.err` to its own jobs' logs.
"""
from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jsonl import write_atomic
from ..params import ParameterError
from .config import UNLIMITED_MINUTES, SlurmConfig, format_minutes
from .jobs import StageJob, link_log

JOBS_FILE = "jobs.json"  # in the plan's record folder: every submission, its job ids per stage and run folder
_SECRET_ASSIGNMENT = re.compile(r"(?i)\b\w*(key|token|secret|password)\w*=\S")


@dataclass
class StageTask:
    """One (run folder, stage) job; `key` names the run folder in records and the status (a cell's name)."""

    key: str
    job: StageJob


@dataclass
class StageBatch:
    """One stage over one or more run folders: a job, or a job array when it holds several tasks."""

    name: str  # unique in the plan, e.g. '02_generate' or '01_extract_skills:shared'
    stage: str
    tasks: list[StageTask]
    gpus: int
    after: list[str] = field(default_factory=list)  # names of batches this one waits for
    corr: bool = False  # wait task by task for after[0] (same run folders in the same order)


@dataclass
class Plan:
    batches: list[StageBatch]
    folder: Path  # OUT/slurm (or RUN/slurm): submitit's folders per stage, jobs.json


def _check_no_secrets(cfg: SlurmConfig, stage: str) -> None:
    for line in [*cfg.setup_lines(stage), *(f"--{k}={v}" for k, v in cfg.extra_parameters(stage).items())]:
        if _SECRET_ASSIGNMENT.search(line):
            raise ParameterError("SLURM_SETUP" if not line.startswith("--") else "SLURM_EXTRA",
                                 f"{line.split('=')[0]}=... would write a secret into every sbatch script",
                                 "export it in the shell you submit from: jobs inherit the environment "
                                 "(sbatch --export=ALL), scripts and logs never hold it")


def sbatch_parameters(cfg: SlurmConfig, batch: StageBatch, dependency: str | None) -> dict[str, Any]:
    """The submitit parameters of one batch (its `#SBATCH` lines and the srun line)."""
    stage = batch.stage
    _check_no_secrets(cfg, stage)
    minutes = cfg.time_minutes(stage)
    cpus = int(cfg.for_stage("cpus", stage))
    extra: dict[str, Any] = {"requeue": True, "kill-on-invalid-dep": "yes", **cfg.extra_parameters(stage)}
    if minutes is None:
        extra["time"] = "UNLIMITED"
    if dependency:
        extra["dependency"] = dependency
    params: dict[str, Any] = {
        "job_name": f"{cfg.job_name}-{stage}", "time": minutes or UNLIMITED_MINUTES, "cpus_per_task": cpus,
        "partition": str(cfg.for_stage("partition", stage) or "") or None,
        "account": str(cfg.for_stage("account", stage) or "") or None,
        "qos": str(cfg.for_stage("qos", stage) or "") or None,
        "mem": str(cfg.for_stage("mem", stage)) if str(cfg.for_stage("mem", stage)) != "" else None,
        "gres": f"gpu:{batch.gpus}" if batch.gpus else None,
        "setup": cfg.setup_lines(stage) or None, "array_parallelism": cfg.array_parallelism,
        "srun_args": ["--cpus-per-task", str(cpus)], "additional_parameters": extra,
    }
    return {k: v for k, v in params.items() if v is not None}


def _dependency(batch: StageBatch, ids: dict[str, str], sizes: dict[str, int]) -> str | None:
    if not batch.after:
        return None
    if batch.corr and sizes[batch.after[0]] > 1:
        return f"aftercorr:{ids[batch.after[0]]}"
    return "afterok:" + ":".join(ids[name] for name in batch.after)


def render_plan(plan: Plan, cfg: SlurmConfig) -> str:
    """The sbatch script of every batch and the dependency graph, as they would be submitted (nothing is)."""
    from submitit.slurm.slurm import _make_sbatch_string

    ids = {b.name: f"<{b.name}>" for b in plan.batches}
    sizes = {b.name: len(b.tasks) for b in plan.batches}
    out = ["# Dependency graph (job ids are given by sbatch on submission)"]
    for b in plan.batches:
        dep = _dependency(b, ids, sizes) or "none"
        what = f"array of {len(b.tasks)}" if len(b.tasks) > 1 else "job"
        partition = cfg.for_stage("partition", b.stage) or "default partition"
        out.append(f"{b.name}: {what} ({partition}, {b.gpus} GPU, {cfg.for_stage('cpus', b.stage)} CPU, "
                   f"{format_minutes(cfg.time_minutes(b.stage))}), after {dep}")
        out.extend(f"  [{i}] {t.key} -> {t.job.run_dir}" for i, t in enumerate(b.tasks))
    for b in plan.batches:
        folder = plan.folder / b.stage
        params = sbatch_parameters(cfg, b, _dependency(b, ids, sizes))
        command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
        script = _make_sbatch_string(command=command, folder=folder,
                                     map_count=len(b.tasks) if len(b.tasks) > 1 else None, **params)
        out += ["", f"# ---- {b.name}: sbatch script", script]
    return "\n".join(out)


def submit_plan(plan: Plan, cfg: SlurmConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Submit every batch in order (dependencies first), link each job's log into its run folder, and append the
    job ids to `<plan.folder>/jobs.json`. Returns this submission's record."""
    import submitit

    ids: dict[str, str] = {}
    sizes = {b.name: len(b.tasks) for b in plan.batches}
    record: dict[str, Any] = {"submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "batches": []}
    for b in plan.batches:
        folder = plan.folder / b.stage
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=cfg.max_requeues)
        dependency = _dependency(b, ids, sizes)
        executor.update_parameters(**sbatch_parameters(cfg, b, dependency))
        try:
            with executor.batch():
                jobs = [executor.submit(task.job) for task in b.tasks]
        except Exception as exc:  # sbatch refused (account, QOS, ...): say which stage, keep what went before
            _save(plan, record)
            raise ParameterError("--executor", f"slurm: sbatch refused {b.name}: {exc}".splitlines()[0],
                                 "fix the SLURM_* parameter it names; jobs already submitted are in "
                                 f"{plan.folder / JOBS_FILE} (scancel them or let them run)") from None
        ids[b.name] = jobs[0].job_id.split("_")[0] if len(jobs) > 1 else jobs[0].job_id
        tasks = {}
        for task, job in zip(b.tasks, jobs):
            tasks[task.key] = job.job_id
            for suffix in ("out", "err"):
                link_log(Path(task.job.run_dir), b.stage, job.job_id, folder / f"{job.job_id}_0_log.{suffix}", suffix)
        record["batches"].append({"name": b.name, "stage": b.stage, "job_id": ids[b.name], "dependency": dependency,
                                  "tasks": tasks, "run_dirs": {t.key: t.job.run_dir for t in b.tasks}})
        log(f"submitted {b.name}: job {ids[b.name]}" + (f" (array of {len(jobs)})" if len(jobs) > 1 else "")
            + (f", after {dependency}" if dependency else ""))
    _save(plan, record)
    return record


def _save(plan: Plan, record: dict[str, Any]) -> None:
    path = plan.folder / JOBS_FILE
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError):
        history = {"submissions": []}
    history["submissions"].append(record)
    write_atomic(path, json.dumps(history, indent=2))


def read_submissions(folder: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((folder / JOBS_FILE).read_text()).get("submissions", []))
    except (OSError, ValueError):
        return []
