"""What NUM_PROCESSES and ACCELERATE_CONFIG decide on a given machine, and the launch's plumbing, without a launch:
the plan and its refusals, the training fingerprint, the error a failed launch raises, stopping a process group."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time

import pytest

from helpers.params import ParameterError
from helpers.sft import config as sft_config
from helpers.sft.config import LaunchPlan, SFTStageConfig
from helpers.sft.launch import LaunchFailed, failure, launch_command, stop, write_failure
from helpers.sft.train import training_fingerprint


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has `gpus` GPUs and, or not, deepspeed; and that this process is not launched."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)

    def set_machine(gpus: int, deepspeed: bool = False) -> None:
        monkeypatch.setattr(sft_config, "visible_gpus", lambda: gpus)
        monkeypatch.setattr(sft_config, "deepspeed_installed", lambda: deepspeed)

    return set_machine


@pytest.mark.parametrize("gpus, processes, config, plan", [
    (0, "auto", "auto", None),                       # a CPU: one process in the kernel, as before
    (1, "auto", "auto", None),                       # one GPU: the same
    (8, "auto", "auto", LaunchPlan(8, "fsdp", 8)),   # the paper's node: FSDP over all GPUs
    (0, 2, "auto", LaunchPlan(2, "ddp", 0)),         # gloo processes on CPU
    (8, 2, "ddp", LaunchPlan(2, "ddp", 8)),
    (1, 1, "fsdp", LaunchPlan(1, "fsdp", 1)),        # FSDP on one GPU is a launch too
    (1, 1, "ddp", None),                             # DDP with one process is one plain process
    (4, "auto", "deepspeed_zero3", LaunchPlan(4, "deepspeed_zero3", 4)),
])
def test_the_plan_on_a_machine(machine, gpus, processes, config, plan):
    machine(gpus, deepspeed=True)
    cfg = SFTStageConfig(num_processes=processes, accelerate_config=config).validate()
    assert cfg.launch_plan() == plan


@pytest.mark.parametrize("gpus, processes, config, deepspeed, parameter, words", [
    (0, "auto", "fsdp", False, "ACCELERATE_CONFIG", "none is visible"),
    (0, 2, "deepspeed_zero3", True, "ACCELERATE_CONFIG", "none is visible"),
    (2, 2, "deepspeed_zero3", False, "ACCELERATE_CONFIG", "deepspeed package"),
    (2, 4, "auto", False, "NUM_PROCESSES", "4 processes but 2 GPUs"),
    (0, 0, "auto", False, "NUM_PROCESSES", "below the minimum 1"),
    (0, "two", "auto", False, "NUM_PROCESSES", "whole number"),
    (0, "auto", "zero3", False, "ACCELERATE_CONFIG", "'zero3'"),
])
def test_a_launch_the_machine_cannot_run_fails_validation(machine, gpus, processes, config, deepspeed, parameter,
                                                          words):
    machine(gpus, deepspeed)
    with pytest.raises(ParameterError) as err:
        SFTStageConfig(num_processes=processes, accelerate_config=config).validate()
    assert err.value.name == parameter and words in str(err.value)


def test_defaults_ask_nothing_of_the_machine(machine, monkeypatch):
    """'auto' is valid everywhere: validating it must not import torch for a GPU count (the driver checks every
    stage before stage 1)."""
    monkeypatch.setattr(sft_config, "visible_gpus", lambda: pytest.fail("GPU count asked for the defaults"))
    SFTStageConfig().validate()


def test_inside_a_launch_the_stage_never_launches_again(machine, monkeypatch):
    machine(8)
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert SFTStageConfig(num_processes=8, accelerate_config="fsdp").validate().launch_plan() is None


def test_fingerprint_of_one_process_ignores_the_launch_parameters_and_a_launch_counts(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    plain = {training_fingerprint(SFTStageConfig(num_processes=n, accelerate_config=c))
             for n, c in (("auto", "auto"), (1, "ddp"), (1, "auto"))}
    assert len(plain) == 1
    launched = {}
    for world in ("2", "4"):
        monkeypatch.setenv("WORLD_SIZE", world)
        launched[world] = training_fingerprint(SFTStageConfig())
    assert len({*plain, *launched.values()}) == 3


def test_the_printed_command_keeps_the_stage_precision():
    demo = SFTStageConfig(num_processes=2, accelerate_config="ddp")  # the demo profile: BF16 False
    words = shlex.split(launch_command(demo, "ddp", 2))
    assert words[words.index("--mixed_precision") + 1] == "no"  # the shipped configs say bf16
    assert words[words.index("--set") + 1:][-2:] == ["NUM_PROCESSES=2", "ACCELERATE_CONFIG=ddp"]


def test_a_failed_launch_raises_the_failing_process_error(tmp_path):
    plan = LaunchPlan(2, "ddp", 0)
    write_failure(tmp_path, RuntimeError("rank one broke"), 1)
    err = failure(tmp_path, 1, [], plan)
    assert isinstance(err, LaunchFailed)
    assert str(err) == "the launched training (2 processes, ddp) failed in process 1: RuntimeError: rank one broke"
    write_failure(tmp_path, ParameterError("MAX_LENGTH", "too short", "raise it"), 0)
    err = failure(tmp_path, 1, [], plan)  # the main process's error first, with its parameter and fix
    assert isinstance(err, ParameterError) and (err.name, err.fix) == ("MAX_LENGTH", "raise it")
    assert "process 0" in err.problem


def test_a_launch_that_died_without_an_error_says_its_status_and_last_lines(tmp_path):
    err = failure(tmp_path, -9, ["loading", "step 3"], LaunchPlan(2, "ddp", 0))
    assert "exited with status -9" in str(err) and str(err).endswith("loading\nstep 3")


def test_stop_ends_the_whole_process_group():
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"], start_new_session=True)
    time.sleep(0.5)
    stop(proc, grace_s=10)
    assert proc.poll() is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # the background sleep would keep the group alive
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("a process of the group outlived stop()")
