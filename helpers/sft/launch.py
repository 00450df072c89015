"""How stage 3 trains in several processes: `accelerate launch` started by the stage itself.

Above one process (NUM_PROCESSES) or with a sharding config (ACCELERATE_CONFIG), `run_sft_stage` calls
`run_launched`: it starts `accelerate launch ... -m helpers.sft ... --train-only FOLDER` with the stage's
parameters, relays its output, and reads back the outcome the main training process wrote into FOLDER; selection,
answers and records then happen in the calling process, exactly as after a training in that process.
`launch_command` prints the same command for people who start stage 3 by hand.
"""
from __future__ import annotations

import codecs
import collections
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..processes import stop_process_group
from .. import layout
from ..params import ParameterError, check_choice, check_int
from .config import ACCELERATE_CONFIGS, LaunchPlan, SFTStageConfig
from .train import TrainOutcome


class LaunchFailed(RuntimeError):
    """The launched training exited without finishing; says which process failed and how."""


OUTCOME_FILE = "outcome.json"


def launch_command(cfg: SFTStageConfig, accelerate_config: str = "fsdp", num_processes: int = 8) -> str:
    """The exact shell command (run from the project root) that trains `cfg` on `num_processes` GPUs.

    The `--set` overrides are the parameters that differ from the profile's YAML file, the file the script starts
    from, written so that the script reads back exactly `cfg` (a float keeps a YAML-readable exponent, an empty
    string stays empty). The configs train in bf16; `--mixed_precision no` is added when BF16 is False.
    """
    return shlex.join(launch_words(cfg, accelerate_config, num_processes))


def launch_words(cfg: SFTStageConfig, accelerate_config: str, num_processes: int,
                 launcher: Sequence[str] = ("accelerate", "launch"), port: int | None = None) -> list[str]:
    check_choice("accelerate_config", accelerate_config, ACCELERATE_CONFIGS)
    check_int("num_processes", num_processes, 1)
    config_file = f"configs/sft/{cfg.profile}.yaml"
    baseline = SFTStageConfig.load(layout.PROJECT_ROOT / config_file).as_params()
    sets = [f"{k}={_override_value(v)}" for k, v in cfg.as_params().items() if v != baseline[k]]
    options = ["--config_file", f"configs/accelerate/{accelerate_config}.yaml", "--num_processes", str(num_processes)]
    options += [] if cfg.bf16 else ["--mixed_precision", "no"]
    options += ["--main_process_port", str(port)] if port else []
    return [*launcher, *options, "-m", "helpers.sft", "--config", config_file] + (["--set", *sets] if sets else [])


def _override_value(value: Any) -> str:
    """`value` as `--set KEY=VALUE` reads it back with its type: empty stays empty, the rest is YAML (PyYAML reads
    `2e-05` as a string and `2.0e-05` as a float)."""
    if value == "":
        return ""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n...\n").strip()


def run_launched(cfg: SFTStageConfig, plan: LaunchPlan) -> TrainOutcome:
    """Train `cfg` in the processes of `plan` and return what they trained, as `train_sft` would in this process.

    The launched processes only train (the main one saves the checkpoints); their output is copied to this process's
    stderr as it arrives, so the notebook (and the pipeline driver's progress lines) shows it. When this process is
    interrupted the launch is stopped; when it dies, the launcher gets SIGTERM and stops its workers (each also dies
    with its launcher), so no orphan keeps a GPU.
    """
    with tempfile.TemporaryDirectory(prefix="ism-sft-launch-") as folder:
        report = Path(folder)
        words = launch_words(cfg, plan.accelerate_config, plan.num_processes,
                             (sys.executable, "-m", "accelerate.commands.launch"), _free_port())
        words += ["--train-only", str(report)]
        print(f"launching {plan.num_processes} training processes ({plan.accelerate_config}): "
              f"{launch_command(cfg, plan.accelerate_config, plan.num_processes)}", file=sys.stderr, flush=True)
        proc = subprocess.Popen(words, cwd=layout.PROJECT_ROOT, env=_launch_env(plan), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent(signal.SIGTERM))
        try:
            tail = _relay(proc)
            code = proc.wait()
        except BaseException:
            stop(proc)
            raise
        if code != 0 or not (report / OUTCOME_FILE).exists():
            raise failure(report, code, tail, plan)
        return TrainOutcome.from_json(json.loads((report / OUTCOME_FILE).read_text()))


def _launch_env(plan: LaunchPlan) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not plan.gpus:  # gloo processes sharing the CPU cores instead of each taking all of them
        env["ACCELERATE_USE_CPU"] = "true"
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // plan.num_processes)))
    return env


def _free_port() -> int:
    """A port for the launch's rendezvous, so that two stages launched at once (a sweep) do not collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _relay(proc: subprocess.Popen, keep: int = 40) -> list[str]:
    """Copy the launch's output to stderr as it arrives (a bar's carriage returns included); keep its last lines."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    tail: collections.deque[str] = collections.deque(maxlen=keep)
    partial = ""
    while chunk := os.read(proc.stdout.fileno(), 65536):
        text = decoder.decode(chunk)
        sys.stderr.write(text)
        sys.stderr.flush()
        *lines, partial = (partial + text).replace("\r", "\n").split("\n")
        tail.extend(line for line in lines if line.strip())
    return [*tail, partial] if partial.strip() else list(tail)


def stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM to the launcher's process group (the launcher then stops its workers), SIGKILL after `grace_s`."""
    stop_process_group(proc, grace_s)


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive `sig` when this process dies (Linux); None elsewhere."""
    prctl = _prctl()
    return (lambda: prctl(PR_SET_PDEATHSIG, int(sig))) if prctl else None


def die_with_parent() -> None:
    """Make this process end (SIGKILL) when its parent ends: a training worker must not outlive its launcher."""
    parent = os.getppid()
    prctl = _prctl()
    if prctl:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the launcher died before the line above
            os._exit(1)


PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


def write_failure(report: Path, exc: BaseException, rank: int) -> None:
    """What a launched process failed with, for the stage to raise (a ParameterError keeps its parameter and fix)."""
    info = {"rank": rank, "type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ParameterError):
        info.update(parameter=exc.name, problem=exc.problem, fix=exc.fix)
    (report / f"failure.rank{rank}.json").write_text(json.dumps(info))


def failure(report: Path, code: int, tail: list[str], plan: LaunchPlan) -> Exception:
    """The error the stage raises for a launch that failed: the failing process's own error where it wrote one
    (the main process's first), else the launch's exit status and last output lines."""
    found = sorted(report.glob("failure.rank*.json"), key=lambda p: int(p.stem.removeprefix("failure.rank")))
    where = f"the launched training ({plan.num_processes} processes, {plan.accelerate_config})"
    if found:
        info = json.loads(found[0].read_text())
        if "parameter" in info:
            return ParameterError(info["parameter"], f"{info['problem']} (in {where}, process {info['rank']})",
                                  info["fix"])
        return LaunchFailed(f"{where} failed in process {info['rank']}: {info['type']}: {info['message']}")
    last = "\n".join(tail[-12:])
    return LaunchFailed(f"{where} exited with status {code} before it finished; its last output:\n{last}")
