"""Stopping a child process together with every process it started (its process group).

Shared by the vLLM servers the kit starts and the `accelerate launch` of stage 3: both run in a process group of
their own, so one signal reaches the launcher and its workers, and nothing is left holding a GPU or a port.
"""
from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, grace_s: float, kill_wait_s: float | None = None) -> None:
    """SIGTERM to `proc`'s process group, SIGKILL after `grace_s`; then wait up to `kill_wait_s` (None: until it
    exits). Returns at once when the group is already gone."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
