"""Where stage 3's training runs: the machine's visible GPUs, the optional DeepSpeed package, and whether this
process is one of an `accelerate launch`.

The GPU count is asked only where a parameter needs it (NUM_PROCESSES='auto', a sharded ACCELERATE_CONFIG), because
it imports torch.
"""
from __future__ import annotations

import importlib.util
import os


def visible_gpus() -> int:
    """CUDA devices this process may use (CUDA_VISIBLE_DEVICES applies); 0 on a CPU-only machine or torch build."""
    import torch  # heavy: only when a launch decision needs the count

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def launched_world_size() -> int | None:
    """The number of processes of the `accelerate launch` (torchrun) this process belongs to; None when it runs
    alone."""
    return int(os.environ["WORLD_SIZE"]) if "WORLD_SIZE" in os.environ else None
