"""Where every run folder of a submission stands: pending, running, requeued, done, failed (with the log's end).

Read from what the jobs write into the run folders (`RUN/slurm/<stage>.json`) and from the queue (`squeue`,
`scontrol show job` for the restart count). The records come first: a job that left the queue (Slurm forgets
finished jobs after MinJobAge, and clusters without accounting have no `sacct`) is still known by its record.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jobs import LOGS, read_stage_record
from .submit import read_submissions

Runner = Callable[[list[str]], str]
TAIL_LINES = 8


@dataclass
class StageState:
    stage: str
    job: str
    state: str  # pending, running, requeued, done, failed, cancelled, unknown
    detail: str = ""
    restarts: int = 0


def queue_states(ids: list[str], run: Runner) -> dict[str, dict[str, str]]:
    """Job id (`123` or `123_4`) -> squeue's state and reason, plus `scontrol`'s Restarts, for jobs still queued."""
    if not ids:
        return {}
    found: dict[str, dict[str, str]] = {}
    for line in run(["squeue", "-h", "-r", "-o", "%i|%T|%r"]).splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            found[parts[0]] = {"state": parts[1], "reason": parts[2]}
    for line in run(["scontrol", "show", "job", "-o"]).splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        job = fields.get("JobId", "")
        if fields.get("ArrayJobId") and fields.get("ArrayTaskId", "").isdigit():
            job = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
        if job:
            entry = found.setdefault(job, {"state": fields.get("JobState", ""), "reason": fields.get("Reason", "")})
            entry["restarts"] = fields.get("Restarts", "0")
    return {job: found[job] for job in ids if job in found}


def log_tail(run_dir: Path, stage: str, job: str, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of a job's error log (its traceback), else of its output log."""
    for suffix in ("err", "out"):
        path = run_dir / LOGS / f"{stage}.{job}.{suffix}"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        kept = [line for line in text.splitlines() if line.strip()]
        if kept:
            return kept[-lines:]
    return []


def stage_state(run_dir: Path, stage: str, job: str, queued: dict[str, dict[str, str]]) -> StageState:
    record = read_stage_record(run_dir, stage)
    mine = record.get("job") == job
    queue = queued.get(job, {})
    restarts = max(int(queue.get("restarts", 0) or 0), int(record.get("restarts", 0) or 0) if mine else 0)
    if mine and record.get("state") == "done" or (record.get("state") == "done" and not queue):
        return StageState(stage, job, "done", restarts=restarts)
    if queue:
        state = queue["state"].upper()
        if state in ("RUNNING", "COMPLETING", "CONFIGURING"):
            return StageState(stage, job, "requeued" if restarts else "running",
                              f"running again after {restarts} requeue(s)" if restarts else "", restarts)
        if state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED"):
            reason = queue.get("reason", "")
            if "DependencyNeverSatisfied" in reason:
                return StageState(stage, job, "cancelled", "an earlier stage failed", restarts)
            return StageState(stage, job, "requeued" if restarts else "pending", reason, restarts)
        if state in ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"):
            said = str(record.get("error", "")) if mine and record.get("state") == "failed" else ""
            return StageState(stage, job, "failed", said or f"Slurm: {state.lower()}", restarts)
        if state == "CANCELLED":
            return StageState(stage, job, "cancelled", queue.get("reason", ""), restarts)
        if state == "COMPLETED":
            return StageState(stage, job, "done", restarts=restarts)
    if mine and record.get("state") == "failed":
        return StageState(stage, job, "failed", str(record.get("error", "")), restarts)
    if mine and record.get("state") == "running":  # left the queue while its record says running: killed
        return StageState(stage, job, "failed", "the job left the queue while running (killed: time, memory or "
                                                "node); see its log", restarts)
    return StageState(stage, job, "cancelled" if not queue else "unknown",
                      "not run: an earlier stage failed or the job was cancelled", restarts)


def run_folder_states(folder: Path, run: Runner) -> dict[str, list[StageState]]:
    """Key (cell name or run folder) -> its stages' states, from the newest submission of each key and stage."""
    latest: dict[tuple[str, str], tuple[str, Path]] = {}
    order: list[str] = []
    for submission in read_submissions(folder):
        for batch in submission.get("batches", []):
            for key, job in batch.get("tasks", {}).items():
                latest[(key, batch["stage"])] = (job, Path(batch["run_dirs"][key]))
                if key not in order:
                    order.append(key)
    queued = queue_states([job for job, _ in latest.values()], run)
    states: dict[str, list[StageState]] = {}
    for (key, stage), (job, run_dir) in sorted(latest.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        states.setdefault(key, []).append(stage_state(run_dir, stage, job, queued))
    return states


def summary(stages: list[StageState]) -> tuple[str, str]:
    """One state per run folder: failed, running/requeued (the stage running), pending, cancelled or done."""
    for wanted in ("failed", "requeued", "running"):
        hit = next((s for s in stages if s.state == wanted), None)
        if hit:
            return wanted, f"{hit.stage} (job {hit.job}){': ' + hit.detail if hit.detail else ''}"
    if all(s.state == "done" for s in stages):
        return "done", ""
    pending = next((s for s in stages if s.state == "pending"), None)
    if pending:
        return "pending", f"{pending.stage} (job {pending.job}){': ' + pending.detail if pending.detail else ''}"
    hit = next(s for s in stages if s.state != "done")
    return hit.state, f"{hit.stage} (job {hit.job}): {hit.detail}"


def format_status(folder: Path, run: Runner, run_dirs: dict[str, Path] | None = None) -> tuple[str, dict[str, str]]:
    """A table (one line per run folder, the failing job's last log lines below it) and key -> state."""
    states = run_folder_states(folder, run)
    if not states:
        return f"no Slurm submission recorded in {folder}", {}
    lines, result = [], {}
    width = max(len(k) for k in states)
    for key, stages in states.items():
        state, detail = summary(stages)
        result[key] = state
        requeues = max(s.restarts for s in stages)
        note = f" [requeued {requeues}x]" if requeues and state != "requeued" else ""
        lines.append(f"{key:<{width}}  {state:<9}  {detail}{note}")
        if state == "failed":
            bad = next(s for s in stages if s.state == "failed")
            run_dir = Path(_run_dir_of(folder, key, bad.stage) or (run_dirs or {}).get(key, "."))
            lines.extend(f"    | {line}" for line in log_tail(run_dir, bad.stage, bad.job))
    counts = {s: list(result.values()).count(s) for s in dict.fromkeys(result.values())}
    lines.append("  ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines), result


def _run_dir_of(folder: Path, key: str, stage: str) -> Any:
    for submission in reversed(read_submissions(folder)):
        for batch in submission.get("batches", []):
            if batch["stage"] == stage and key in batch.get("run_dirs", {}):
                return batch["run_dirs"][key]
    return None
