"""The Slurm executor's parameters: one dataclass, each field a `SLURM_*` name with its help and default.

Every resource may be one value for all stages or a mapping per stage, so that a cluster's CPU partition serves
stages 1-2 and its GPU partition stages 3-4:

    SLURM_PARTITION: {default: cpu, "03": gpu, "04": gpu}
    SLURM_TIME: {"03": "1-00:00:00"}          # stages not named keep the built-in default

Stage keys are the notebook names or their prefixes (`03_sft`, `"03"`, `3`, `sft`); `default` covers the stages not
named. The stages are named here only as strings (the pipeline owns them), so this module imports no stage.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..params import ParameterError

STAGES = ("01_extract_skills", "02_generate", "03_sft", "04_eval_ablations")
TRAIN_STAGE = "03_sft"  # launches its own processes: one per GPU of its allocation
ANSWER_STAGE = "04_eval_ablations"  # answers with the student in-process: one GPU
PREFIX = "SLURM_"
UNLIMITED_MINUTES = 365 * 24 * 60  # what submitit is told for an UNLIMITED job (its own time-out bookkeeping)

# Flags the executor sets itself: given in SLURM_EXTRA they would break the chain, the arrays or the logs.
MANAGED_FLAGS = {"array": "the executor builds the arrays", "dependency": "the executor chains the stages",
                 "output": "logs go to the run folder", "error": "logs go to the run folder",
                 "job-name": "use SLURM_JOB_NAME", "partition": "use SLURM_PARTITION", "time": "use SLURM_TIME",
                 "gres": "use SLURM_GPUS", "gpus": "use SLURM_GPUS", "gpus-per-node": "use SLURM_GPUS",
                 "cpus-per-task": "use SLURM_CPUS", "mem": "use SLURM_MEM", "account": "use SLURM_ACCOUNT",
                 "qos": "use SLURM_QOS", "open-mode": "logs are appended across requeues",
                 "signal": "the executor asks for USR2 before the time limit to requeue the job"}


def slurm_field(default: Any, help: str) -> Any:
    return field(default_factory=lambda: default, metadata={"help": help})


@dataclass
class SlurmConfig:
    """Where and with what each stage's job runs. Built from `SLURM_*` parameters (profile file, `-p`/`--set`)."""

    partition: Any = slurm_field("", "Partition (per stage or one for all); empty: the cluster's default partition.")
    account: Any = slurm_field("", "Account charged for the jobs (sbatch --account); empty: your default account.")
    qos: Any = slurm_field("", "Quality of service (sbatch --qos); empty: the partition's default.")
    time: Any = slurm_field({"01_extract_skills": "2:00:00", "02_generate": "12:00:00", "03_sft": "1-00:00:00",
                             "04_eval_ablations": "12:00:00"},
                            "Time limit per stage in Slurm's formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, "
                            "D-HH:MM:SS, UNLIMITED); quote it in YAML. A stage that reaches it is requeued and "
                            "continues from its run folder (SLURM_MAX_REQUEUES times).")
    gpus: Any = slurm_field("auto", "GPUs per stage (--gres=gpu:N); 'auto': 0 for stages 1-2, NUM_PROCESSES (1 when "
                                    "'auto') for stage 3, which starts one training process per GPU, 1 for stage 4's "
                                    "in-process answers (0 when STUDENT_BASE_URL names an endpoint). 0 on a "
                                    "CPU-only cluster.")
    cpus: Any = slurm_field(2, "CPUs per stage job (--cpus-per-task).")
    mem: Any = slurm_field("", "Memory per stage job as sbatch takes it (e.g. 64G; 0 = all of the node's); empty: "
                               "the partition's default.")
    extra: Any = slurm_field([], "Extra sbatch flags per stage or for all, e.g. ['--constraint=h100', "
                                 "'--mail-type=FAIL'].")
    setup: Any = slurm_field([], "Shell lines every job runs before the stage, e.g. ['module load cuda/12.4']; "
                                 "the kit's .venv python runs the job either way.")
    array_parallelism: int = slurm_field(8, "Most tasks of one stage's job array running at once (sbatch "
                                            "--array=...%N), so a grid does not take the whole partition.")
    max_requeues: int = slurm_field(3, "Times a job that reaches its time limit (or is preempted) is requeued to "
                                       "continue; after that it counts as failed.")
    job_name: str = slurm_field("ism", "Prefix of the job names (ism-02_generate, ...), as squeue shows them.")

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [PREFIX + f.name.upper() for f in fields(cls)]

    @classmethod
    def help(cls) -> dict[str, str]:
        return {PREFIX + f.name.upper(): f.metadata["help"] for f in fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {PREFIX + f.name.upper(): getattr(cls(), f.name) for f in fields(cls)}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SlurmConfig:
        """From `SLURM_*` names (other names are not looked at); unknown `SLURM_*` names fail with the known ones."""
        known = set(cls.parameter_names())
        for name in params:
            if name.startswith(PREFIX) and name not in known:
                raise ParameterError(name, "is not a Slurm parameter", f"use one of {', '.join(sorted(known))}")
        cfg = cls(**{f.name: params[PREFIX + f.name.upper()] for f in fields(cls) if PREFIX + f.name.upper() in params})
        return cfg.validate()

    def validate(self) -> SlurmConfig:
        for stage in STAGES:
            parse_time(self.for_stage("time", stage), "SLURM_TIME")
            self.extra_parameters(stage)
            self.setup_lines(stage)
            cpus = self.for_stage("cpus", stage)
            if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
                raise ParameterError("SLURM_CPUS", f"{cpus!r} is not a number of CPUs", "give a whole number >= 1")
            gpus = self.for_stage("gpus", stage)
            if gpus != "auto" and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0):
                raise ParameterError("SLURM_GPUS", f"{gpus!r} is not a number of GPUs", "give 0, a whole number or 'auto'")
            mem = str(self.for_stage("mem", stage))
            if mem and not re.fullmatch(r"\d+[KMGT]?B?", mem, re.IGNORECASE):
                raise ParameterError("SLURM_MEM", f"{mem!r} is not a memory size", "write it as sbatch does, e.g. 64G")
        for name in ("array_parallelism", "max_requeues"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "array_parallelism" else 0):
                raise ParameterError(PREFIX + name.upper(), f"{value!r} is not a count", "give a whole number >= 1")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(self.job_name)):
            raise ParameterError("SLURM_JOB_NAME", f"{self.job_name!r}", "use letters, digits, '.', '_' or '-'")
        return self

    def for_stage(self, name: str, stage: str) -> Any:
        """One field's value for one stage: the stage's own entry, else `default`, else the built-in default."""
        value = getattr(self, name)
        if not isinstance(value, Mapping):
            return value
        entries = {_stage_key(key, PREFIX + name.upper()): v for key, v in value.items()}
        if stage in entries:
            return entries[stage]
        if "default" in entries:
            return entries["default"]
        builtin = getattr(SlurmConfig(), name)
        return builtin.get(stage) if isinstance(builtin, Mapping) else builtin

    def time_minutes(self, stage: str) -> int | None:
        """The stage's time limit in minutes (None: UNLIMITED)."""
        return parse_time(self.for_stage("time", stage), "SLURM_TIME")

    def gpus_for(self, stage: str, num_processes: Any = "auto", answers_in_process: bool = True) -> int:
        """The stage's GPUs; 'auto' gives stage 4 none when the student answers from an endpoint."""
        value = self.for_stage("gpus", stage)
        if value != "auto":
            return int(value)
        if stage == TRAIN_STAGE:
            return num_processes if isinstance(num_processes, int) and not isinstance(num_processes, bool) else 1
        return 1 if stage == ANSWER_STAGE and answers_in_process else 0

    def extra_parameters(self, stage: str) -> dict[str, Any]:
        """SLURM_EXTRA of a stage as sbatch flag -> value (True for a flag without value)."""
        extra = self.for_stage("extra", stage)
        if isinstance(extra, str):
            extra = extra.split()
        if not isinstance(extra, (list, tuple)):
            raise ParameterError("SLURM_EXTRA", f"{extra!r} is not a list of flags", "write e.g. ['--constraint=h100']")
        flags: dict[str, Any] = {}
        for item in extra:
            match = re.fullmatch(r"--([A-Za-z][A-Za-z0-9-]*)(?:=(.+))?", str(item).strip())
            if not match:
                raise ParameterError("SLURM_EXTRA", f"{item!r} is not a long sbatch flag",
                                     "write each as --name=value or --name, e.g. --constraint=h100")
            key = match.group(1).lower()
            if key in MANAGED_FLAGS:
                raise ParameterError("SLURM_EXTRA", f"--{key} is set by the executor ({MANAGED_FLAGS[key]})",
                                     "remove it from SLURM_EXTRA")
            flags[key] = match.group(2) if match.group(2) is not None else True
        return flags

    def setup_lines(self, stage: str) -> list[str]:
        lines = self.for_stage("setup", stage)
        if isinstance(lines, str):
            lines = [lines]
        if not isinstance(lines, (list, tuple)) or not all(isinstance(line, str) for line in lines):
            raise ParameterError("SLURM_SETUP", f"{lines!r} is not a list of shell lines",
                                 "write e.g. ['module load cuda/12.4']")
        return list(lines)


def _stage_key(key: Any, parameter: str) -> str:
    """'03', 3, '03_sft', 'sft' or 'default' -> the stage's notebook name (or 'default')."""
    text = str(key).strip()
    if text == "default":
        return text
    if text.isdigit():
        text = text.zfill(2)
    for stage in STAGES:
        if stage == text or stage.startswith(text + "_") or stage.split("_", 1)[1].startswith(text):
            return stage
    raise ParameterError(parameter, f"{key!r} names no stage", f"use 'default' or one of {', '.join(STAGES)}")


_TIME_FORMATS = [  # Slurm's --time formats, in sbatch's words
    (r"(?P<m>\d+)", "MM"), (r"(?P<m>\d+):(?P<s>\d+)", "MM:SS"), (r"(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)", "HH:MM:SS"),
    (r"(?P<d>\d+)-(?P<h>\d+)", "D-HH"), (r"(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+)", "D-HH:MM"),
    (r"(?P<d>\d+)-(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)", "D-HH:MM:SS"),
]


def parse_time(value: Any, parameter: str = "SLURM_TIME") -> int | None:
    """A Slurm time limit in minutes, rounded up as Slurm does (None: UNLIMITED / INFINITE).

    A bare number is refused: YAML reads an unquoted `1:30:00` as the number 5400, which would silently become
    5400 minutes."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise ParameterError(parameter, f"got the number {value!r} (YAML reads an unquoted 1:30:00 as 5400)",
                             "quote the time limit, e.g. '1:30:00' or '90' (minutes)")
    text = str(value).strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    for pattern, _ in _TIME_FORMATS:
        match = re.fullmatch(pattern, text)
        if match:
            parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
            seconds = (parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60
                       + parts.get("s", 0))
            if seconds <= 0:
                raise ParameterError(parameter, f"{text!r} is no time at all", "give a positive time limit")
            return -(-seconds // 60)
    formats = ", ".join(name for _, name in _TIME_FORMATS)
    raise ParameterError(parameter, f"{text!r} is not a Slurm time limit", f"use one of {formats} or UNLIMITED")


def format_minutes(minutes: int | None) -> str:
    """Minutes as Slurm's D-HH:MM:SS (what sbatch is given, whatever format the parameter used)."""
    if minutes is None:
        return "UNLIMITED"
    days, rest = divmod(minutes, 1440)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00" if days else f"{rest // 60}:{rest % 60:02d}:00"


def split_slurm_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`SLURM_*` parameters, the others): one config or `-p` list may hold both."""
    slurm = {k: v for k, v in params.items() if str(k).startswith(PREFIX)}
    return slurm, {k: v for k, v in params.items() if k not in slurm}


def read_profile(path: str | Path | None) -> dict[str, Any]:
    """A Slurm profile: YAML of `SLURM_*: value` (e.g. configs/slurm/paper.yaml)."""
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ParameterError("--slurm-profile", f"{path!r} is not a file", "give a YAML file such as configs/slurm/paper.yaml")
    data = yaml.safe_load(file.read_text()) or {}
    if not isinstance(data, dict):
        raise ParameterError("--slurm-profile", f"{path} is not a mapping of SLURM_* names", "write NAME: value lines")
    other = [k for k in data if not str(k).startswith(PREFIX)]
    if other:
        raise ParameterError(str(other[0]), f"is in the Slurm profile {path}", "keep stage parameters in --config")
    return data


def slurm_parameter_rows() -> list[dict[str, str]]:
    """Rows for `python -m helpers params` (stages column: 'slurm')."""
    defaults = SlurmConfig.defaults()
    return [{"name": name, "stages": "slurm", "default": repr(defaults[name]), "help": text}
            for name, text in SlurmConfig.help().items()]
