"""`--executor slurm` for `python -m helpers run` and `python -m helpers.sweep`: plans of stage jobs, checked
against the stages' parameters and the cluster before anything is submitted.

A run is a chain of single jobs (one per selected stage, `afterok`); a sweep is stage 1 once per distinct stage-1
parameter set, then one job array per later stage over its cells, task i of each array waiting for task i of the one
before (`aftercorr`). Every job runs `run_pipeline(run_dir, params, notebooks=(stage,))` (`helpers.cluster.jobs`),
so a requeued job continues from its run folder. Stage 3 jobs get `RESUMABLE=True` unless the parameters say
otherwise, so a requeue continues training from the newest checkpoint instead of starting it again.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .cluster import (Plan, SlurmConfig, StageBatch, StageJob, StageTask, check_resources, format_status,
                      query_partitions, read_profile, render_plan, run_slurm_command, submit_plan)
from .cluster.config import TRAIN_STAGE
from .cluster.jobs import RECORDS, stage_done
from .cluster.status import queue_states
from .cluster.submit import read_submissions
from .layout import SKILLS_JSONL, STAGE1_LISTS
from .params import ParameterError, check_secret_parameters
from .pipeline import NOTEBOOKS, check_stages, split_parameters
from .runs import check_run_dir

STAGE1_NOTEBOOK, LATER_NOTEBOOKS = NOTEBOOKS[0], NOTEBOOKS[1:]  # a sweep shares stage 1 and runs the rest per cell

ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING",
                 "SUSPENDED"}  # a job in one of these may still run: its run folder is not submitted again
RECORD_FOLDER = "slurm"  # in a run folder or a sweep folder: submitit's files per stage and jobs.json


def slurm_config(params: Mapping[str, Any], profile: str | None = None) -> SlurmConfig:
    """The profile file's `SLURM_*` values, then those given as parameters (`-p`, `--set`, a run config)."""
    return SlurmConfig.from_params({**read_profile(profile), **params})


def job_params(stage: str, params: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """The parameters a stage's job runs with: stage 3 keeps its optimizer state in checkpoints (RESUMABLE) so a
    requeued job continues training; an explicit RESUMABLE=False is kept, with a warning."""
    out = dict(params)
    if stage == TRAIN_STAGE:
        if out.get("RESUMABLE") is False:
            log("warning: RESUMABLE=False: a requeued or timed-out stage 3 job trains again from the start")
        elif out.get("RESUMABLE") is None:
            out["RESUMABLE"] = True
    return out


def stage_gpus(cfg: SlurmConfig, stages: list[str], params: Mapping[str, Any]) -> dict[str, int]:
    """GPUs per stage; stage 3's NUM_PROCESSES, when a number, must fit the GPUs it asks for."""
    in_process = not params.get("STUDENT_BASE_URL")
    gpus = {stage: cfg.gpus_for(stage, params.get("NUM_PROCESSES", "auto"), in_process) for stage in stages}
    processes = params.get("NUM_PROCESSES", "auto")
    if TRAIN_STAGE in gpus and isinstance(processes, int) and 0 < gpus[TRAIN_STAGE] < processes:
        raise ParameterError("SLURM_GPUS", f"stage 3 asks for {gpus[TRAIN_STAGE]} GPU(s) but NUM_PROCESSES is "
                             f"{processes}", "give stage 3 as many GPUs as processes (SLURM_GPUS: {'03': N}) or "
                             "leave SLURM_GPUS at 'auto'")
    return gpus


def check_cluster(cfg: SlurmConfig, gpus: dict[str, int]) -> None:
    """The partitions, GPUs, CPUs and time limits against what sinfo reports (Slurm must answer)."""
    check_resources(cfg, list(gpus), gpus, query_partitions())


def _queued_keys(folder: Path) -> dict[str, str]:
    """Run folders (keys) with a job of an earlier submission still in the queue -> that job id."""
    latest: dict[str, list[str]] = {}
    for submission in read_submissions(folder):
        for batch in submission.get("batches", []):
            for key, job in batch.get("tasks", {}).items():
                latest.setdefault(key, []).append(job)
    if not latest:
        return {}
    states = queue_states([j for jobs in latest.values() for j in jobs], run_slurm_command)
    queued = {job for job, info in states.items() if info["state"].upper() in ACTIVE_STATES}
    return {key: next(j for j in jobs if j in queued) for key, jobs in latest.items() if any(j in queued for j in jobs)}


def plan_run(run_dir: str | Path, params: Mapping[str, Any], notebooks: list[str], cfg: SlurmConfig,
             log: Callable[[str], None] = print) -> tuple[Plan, dict[str, int]]:
    """One run folder's selected stages as a chain of jobs; every stage's parameters checked first."""
    params = dict(params)
    check_secret_parameters(params)
    run = check_run_dir(run_dir, "--run-dir")
    check_stages(split_parameters(params, notebooks), run)
    gpus = stage_gpus(cfg, notebooks, params)
    batches, before = [], None
    for stage in notebooks:
        if stage_done(run, stage, job_params(stage, params, log=lambda _: None)):
            log(f"{stage}: finished before in {run} with the same parameters, not submitted")
            continue
        job = StageJob(str(run), stage, job_params(stage, params, log), last=stage == notebooks[-1])
        batches.append(StageBatch(stage, stage, [StageTask(run.name, job)], gpus[stage],
                                  after=[before] if before else []))
        before = stage
    return Plan(batches, run / RECORD_FOLDER), gpus


def plan_sweep_jobs(plan: Any, cfg: SlurmConfig, finished: Callable[[Path, dict[str, Any]], bool],
                    rerun: bool = False, queued: Mapping[str, str] | None = None,
                    log: Callable[[str], None] = print) -> tuple[Plan, dict[str, int], list[Any]]:
    """A `helpers.sweep.SweepPlan` as jobs: stage 1 per distinct set (unless its lists exist), then one array per
    later stage over the cells that did not finish before (`finished(run_dir, params)`; all with `rerun`),
    skipping cells that still have a job of an earlier submission in the queue."""
    queued = queued or {}
    cells = []
    for cell in plan.cells:
        if cell.name in queued:
            log(f"cell {cell.name}: job {queued[cell.name]} of an earlier submission is still queued, not submitted")
        elif not rerun and finished(cell.run_dir, cell.record):
            log(f"cell {cell.name}: finished before with the same parameters, kept (--rerun runs it again)")
        else:
            cells.append(cell)
    stage1_params = {folder: s1 for folder, s1 in plan.stage1}
    for cell in cells:  # every stage's parameters, as the jobs will get them, before anything is submitted
        check_stages(split_parameters({**stage1_params[cell.stage1_dir], **cell.params}, NOTEBOOKS), cell.run_dir)
    stages = [STAGE1_NOTEBOOK, *LATER_NOTEBOOKS]
    all_params = {k: v for cell in cells for k, v in cell.params.items()}
    gpus = stage_gpus(cfg, stages, all_params)
    batches: list[StageBatch] = []
    stage1_names = []
    needed = {cell.stage1_dir for cell in cells}
    for folder, s1 in plan.stage1:
        if folder in needed and not (folder / SKILLS_JSONL).exists():
            name = f"{STAGE1_NOTEBOOK}:{folder.name}"
            job = StageJob(str(folder), STAGE1_NOTEBOOK, s1)
            batches.append(StageBatch(name, STAGE1_NOTEBOOK, [StageTask(f"_stage1/{folder.name}", job)],
                                      gpus[STAGE1_NOTEBOOK]))
            stage1_names.append(name)
    before: str | None = None
    for stage in LATER_NOTEBOOKS if cells else ():
        tasks = []
        for cell in cells:
            copies = ([(str(cell.stage1_dir / name), str(cell.run_dir / name)) for name in STAGE1_LISTS]
                      if stage == LATER_NOTEBOOKS[0] else [])
            record = {"cell": cell.name, "params": cell.record, "seed": cell.seed, "stages": list(LATER_NOTEBOOKS)}
            tasks.append(StageTask(cell.name, StageJob(str(cell.run_dir), stage, job_params(stage, cell.params,
                                                                                           log=lambda _: None),
                                                       copy_files=copies, cell=record,
                                                       last=stage == LATER_NOTEBOOKS[-1])))
        after = [before] if before else stage1_names
        batches.append(StageBatch(stage, stage, tasks, gpus[stage], after=after, corr=before is not None))
        before = stage
    if cells and TRAIN_STAGE in LATER_NOTEBOOKS:
        job_params(TRAIN_STAGE, cells[0].params, log)  # says once when RESUMABLE=False was asked for
    return Plan(batches, plan.out / RECORD_FOLDER), gpus, cells


def mark_submitted(cells: list[Any], rerun: bool) -> None:
    """Each submitted cell's cell.json says 'submitted' (collect and status read it); --rerun forgets finished
    stages."""
    for cell in cells:
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        if rerun:
            shutil.rmtree(cell.run_dir / RECORDS, ignore_errors=True)
        record = {"cell": cell.name, "params": cell.record, "seed": cell.seed, "status": "submitted",
                  "stages": list(LATER_NOTEBOOKS)}
        (cell.run_dir / "cell.json").write_text(json.dumps(record, indent=2, default=str))


def submit_or_show(plan: Plan, cfg: SlurmConfig, gpus: dict[str, int], dry_run: bool,
                   log: Callable[[str], None] = print, before_submit: Callable[[], None] | None = None) -> int:
    """Dry run: print the scripts and the graph (Slurm is not asked). Else check the cluster, then submit."""
    if not plan.batches:
        log("nothing to submit: every stage finished before (or is still queued)")
        return 0
    if dry_run:
        log(render_plan(plan, cfg))
        return 0
    check_cluster(cfg, {b.stage: gpus[b.stage] for b in plan.batches})
    if before_submit:
        before_submit()
    submit_plan(plan, cfg, log)
    return 0


def show_status(folder: str | Path, log: Callable[[str], None] = print) -> int:
    """Print the status table of a sweep folder or a run folder; 1 when a run folder failed."""
    folder = Path(folder)
    text, states = format_status(folder / RECORD_FOLDER, run_slurm_command)
    log(text)
    return 1 if "failed" in states.values() else 0


def queued_cells(out: Path) -> dict[str, str]:
    return _queued_keys(out / RECORD_FOLDER)


def submit_run(run_dir: str | Path | None, params: Mapping[str, Any], notebooks: list[str], profile: str | None,
               dry_run: bool) -> int:
    """`python -m helpers run --executor slurm`: the selected stages of one run folder as a chain of jobs."""
    if not run_dir:
        raise ParameterError("--run-dir", "is missing", "give the run folder, e.g. --run-dir runs/paper")
    slurm = {k: v for k, v in params.items() if str(k).startswith("SLURM_")}
    cfg = slurm_config(slurm, profile)
    plan, gpus = plan_run(run_dir, {k: v for k, v in params.items() if k not in slurm}, notebooks, cfg)
    live = {} if dry_run else _queued_keys(plan.folder)
    if live:  # two chains in one folder would pay every call twice (and the pipeline's lock refuses the second)
        raise ParameterError("--run-dir", f"job {next(iter(live.values()))} of an earlier submission to {run_dir} is "
                             "still queued or running", f"watch it (python -m helpers status --run-dir {run_dir}), "
                             "or scancel it and submit again")
    code = submit_or_show(plan, cfg, gpus, dry_run)
    if not dry_run and plan.batches:
        print(f"\nwatch: python -m helpers status --run-dir {run_dir}\nlogs:  {Path(run_dir) / 'logs'}")
    return code
