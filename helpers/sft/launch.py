"""How stage 3 runs as several training processes under `accelerate launch`.

`launch_command` writes the command that trains a notebook's configuration with one of the shipped configs in
`configs/accelerate/`, for people who start stage 3 by hand.
"""
from __future__ import annotations

import shlex
from typing import Any

import yaml

from .. import layout
from ..params import check_choice, check_int
from .config import SFTStageConfig

ACCELERATE_CONFIGS = ("ddp", "fsdp", "deepspeed_zero3")


def launch_command(cfg: SFTStageConfig, accelerate_config: str = "fsdp", num_processes: int = 8) -> str:
    """The exact shell command (run from the project root) that trains `cfg` on `num_processes` GPUs.

    The `--set` overrides are the parameters that differ from the profile's YAML file, the file the script starts
    from, written so that the script reads back exactly `cfg` (a float keeps a YAML-readable exponent, an empty
    string stays empty).
    """
    check_choice("accelerate_config", accelerate_config, ACCELERATE_CONFIGS)
    check_int("num_processes", num_processes, 1)
    config_file = f"configs/sft/{cfg.profile}.yaml"
    baseline = SFTStageConfig.load(layout.PROJECT_ROOT / config_file).as_params()
    sets = [f"{k}={_override_value(v)}" for k, v in cfg.as_params().items() if v != baseline[k]]
    return shlex.join(["accelerate", "launch", "--config_file", f"configs/accelerate/{accelerate_config}.yaml",
                       "--num_processes", str(num_processes), "-m", "helpers.sft", "--config", config_file]
                      + (["--set", *sets] if sets else []))


def _override_value(value: Any) -> str:
    """`value` as `--set KEY=VALUE` reads it back with its type: empty stays empty, the rest is YAML (PyYAML reads
    `2e-05` as a string and `2.0e-05` as a float)."""
    if value == "":
        return ""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n...\n").strip()
