"""What the cluster offers, asked of `sinfo` before anything is submitted, and the checks against it.

A grid of 18 cells that fails in its fourth stage because the partition has no GPUs wastes a day of queueing; these
checks fail in a second instead, naming the parameter and the fix.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..params import ParameterError
from .config import SlurmConfig, format_minutes, parse_time

Runner = Callable[[list[str]], str]


@dataclass(frozen=True)
class Partition:
    """One partition as `sinfo` reports it (node groups merged: the largest node counts)."""

    name: str
    default: bool
    max_gpus: int  # per node
    max_cpus: int  # per node
    time_limit: int | None  # minutes; None: unlimited
    up: bool


def run_slurm_command(argv: list[str]) -> str:
    """Run a Slurm client command; a missing client or a controller that does not answer is a ParameterError."""
    if shutil.which(argv[0]) is None:
        raise ParameterError("--executor", f"slurm: the Slurm command {argv[0]!r} is not on PATH",
                             "run on a login node of the cluster (or load its Slurm module), or use --executor local")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ParameterError("--executor", f"slurm: {' '.join(argv)} did not answer within 60 s",
                             "check that slurmctld is up (sinfo), then submit again") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no message"]
        raise ParameterError("--executor", f"slurm: {' '.join(argv)} failed ({why[0]})",
                             "check that Slurm is reachable from here (sinfo; SLURM_CONF), then submit again")
    return done.stdout


def _gpu_count(gres: str) -> int:
    """'gpu:2', 'gpu:a100:8(S:0-1)', 'gpu:h100:4,shard:8' -> the GPUs one node holds."""
    total = 0
    for item in gres.split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _time_limit(text: str) -> int | None:
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    return parse_time(text, "sinfo")


def query_partitions(run: Runner = run_slurm_command) -> dict[str, Partition]:
    """Every partition: its name, whether it is the default, the most GPUs and CPUs of one node, its time limit."""
    out = run(["sinfo", "-h", "-o", "%P|%G|%c|%l|%a"])
    merged: dict[str, Partition] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        name, gres, cpus, limit, avail = (line.split("|") + ["", "", "", "", ""])[:5]
        default = name.endswith("*")
        name = name.rstrip("*")
        cpus_n = int(re.sub(r"\D", "", cpus) or 0)
        part = Partition(name, default, _gpu_count(gres), cpus_n, _time_limit(limit), avail.strip() == "up")
        if name in merged:
            old = merged[name]
            part = Partition(name, old.default or default, max(old.max_gpus, part.max_gpus),
                             max(old.max_cpus, part.max_cpus), old.time_limit, old.up or part.up)
        merged[name] = part
    return merged


def check_resources(cfg: SlurmConfig, stages: Iterable[str], gpus: dict[str, int],
                    partitions: dict[str, Partition]) -> None:
    """Each stage's partition exists and can hold the stage's GPUs, CPUs and time limit."""
    if not partitions:
        raise ParameterError("SLURM_PARTITION", "sinfo lists no partition", "check the cluster (sinfo) and SLURM_CONF")
    default = next((p for p in partitions.values() if p.default), None)
    known = ", ".join(sorted(partitions))
    for stage in stages:
        wanted = str(cfg.for_stage("partition", stage) or "")
        if not wanted:
            if default is None:
                raise ParameterError("SLURM_PARTITION", "the cluster has no default partition",
                                     f"name one for {stage} (known: {known})")
            part = default
        elif wanted not in partitions:
            raise ParameterError("SLURM_PARTITION", f"unknown partition {wanted!r} for {stage}",
                                 f"use one of {known} (sinfo lists them)")
        else:
            part = partitions[wanted]
        if gpus.get(stage, 0) > part.max_gpus:
            fix = ("name a partition with GPUs for this stage (SLURM_PARTITION: {'" + stage[:2] + "': gpu-partition}),"
                   " or set SLURM_GPUS to 0 for it (CPU-only)") if part.max_gpus == 0 else \
                  f"ask for at most {part.max_gpus} (SLURM_GPUS), or name a partition with larger nodes"
            raise ParameterError("SLURM_GPUS", f"{stage} asks for {gpus[stage]} GPU(s) but partition {part.name!r} "
                                 f"has {part.max_gpus} per node", fix)
        cpus = cfg.for_stage("cpus", stage)
        if part.max_cpus and cpus > part.max_cpus:
            raise ParameterError("SLURM_CPUS", f"{stage} asks for {cpus} CPUs but the nodes of partition "
                                 f"{part.name!r} have at most {part.max_cpus}", f"ask for at most {part.max_cpus}")
        minutes = cfg.time_minutes(stage)
        if part.time_limit is not None and (minutes is None or minutes > part.time_limit):
            raise ParameterError("SLURM_TIME", f"{stage} asks for {format_minutes(minutes)} but partition "
                                 f"{part.name!r} allows {format_minutes(part.time_limit)}",
                                 "ask for at most the partition's limit: a stage that reaches it is requeued and "
                                 "continues from its run folder")
