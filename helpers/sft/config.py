"""The SFT stage's parameters: one dataclass, two named profiles (`demo`, `paper`), YAML files and overrides.

The notebook, the script entry point (`python -m helpers.sft`) and `accelerate launch` all build the same
`SFTStageConfig` from the same UPPER_CASE names, so a run configured in the notebook can be scaled out unchanged.
Precedence: profile defaults < config file < explicit overrides (notebook parameters or `--set KEY=VALUE`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..llm.models import EMBEDDED_STUDENT, EMBEDDED_TEACHER
from ..runs import run_dir_parameter
from ..params import ParameterError, check_choice, check_env_var_name, check_float, check_int
from .templates import TEMPLATE_NAMES

SELECTION_CRITERIA = ("heldout_loss", "judge", "last")
SAVE_STRATEGIES = ("epoch", "steps")
LONG_EXAMPLE_POLICIES = ("truncate", "drop")
PAPER_EFFECTIVE_BATCH_RULE = "paper_rule"  # 64, or 128 from 4,000 training examples on (the paper's two settings)


@dataclass
class SFTStageConfig:
    """Everything the SFT stage needs. Field names are the notebook's parameters, lower-cased."""

    run_dir: str = field(default="runs/demo", metadata={"help": "Run folder: reads data/, writes sft/."})
    seed: int = field(default=0, metadata={"help": "Seed for shuffling, initialisation of adapters and judging order."})
    profile: str = field(default="demo", metadata={"help": "Named defaults: 'demo' (CPU minutes) or 'paper' (7-8B, GPUs)."})
    base_model: str = field(default=EMBEDDED_STUDENT,
                            metadata={"help": "Base model: embedded name, local checkpoint folder or hub id."})
    train_data_path: str = field(default="", metadata={"help": "Training data; empty = RUN_DIR/data/train.jsonl."})
    heldout_data_path: str = field(default="", metadata={"help": "Held-out data; empty = RUN_DIR/data/heldout.jsonl."})
    max_train_examples: int = field(default=0, metadata={"help": "Use only the first N training examples (0 = all)."})
    max_heldout_examples: int = field(default=0, metadata={"help": "Use only the first N held-out examples (0 = all)."})
    chat_template: str = field(default="alpaca", metadata={"help": "'alpaca' (the paper's format) or 'chatml'."})
    num_epochs: float = field(default=15.0, metadata={"help": "Epochs over the training set (ignored if MAX_STEPS > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; -1 = run NUM_EPOCHS epochs."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "Learning-rate schedule (transformers name)."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Fraction of steps spent warming up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    per_device_batch_size: int = field(default=4, metadata={"help": "Sequences per device per forward pass."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps (ignored if EFFECTIVE_BATCH_SIZE set)."})
    effective_batch_size: Any = field(
        default=0, metadata={"help": "Sequences per optimizer step over all devices; 0 = PER_DEVICE_BATCH_SIZE x "
                                     "GRAD_ACCUM x devices; 'paper_rule' = 64, or 128 from 4,000 examples on."})
    max_length: int = field(default=1024, metadata={"help": "Longest training sequence in tokens (longer ones are cut)."})
    long_examples: str = field(
        default="truncate", metadata={"help": "Examples longer than MAX_LENGTH: 'truncate' (TRL's default; the cut "
                                              "example loses its end-of-turn token) or 'drop' (every kept example "
                                              "teaches the model to stop)."})
    packing: bool = field(default=False, metadata={"help": "Pack sequences with TRL's best-fit-decreasing packing."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    bf16: bool = field(default=False, metadata={"help": "Train in bfloat16 mixed precision (GPUs)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint: 'epoch' or 'steps'."})
    save_every: int = field(default=0, metadata={"help": "With SAVE_STRATEGY='steps': save every N optimizer steps."})
    logging_steps: int = field(default=1, metadata={"help": "Log the training loss every N steps."})
    selection: str = field(default="judge",
                           metadata={"help": "Checkpoint choice: 'judge' (paper: pairwise judge vs held-out references), "
                                             "'heldout_loss' (lowest held-out loss) or 'last'."})
    selection_examples: int = field(default=100, metadata={"help": "Held-out instructions answered per checkpoint."})
    max_new_tokens: int = field(default=512, metadata={"help": "Longest generated answer (selection and previews)."})
    generation_batch_size: int = field(default=8, metadata={"help": "Prompts per generate() call."})
    judge_model: str = field(default=EMBEDDED_TEACHER, metadata={"help": "Judge for SELECTION='judge'."})
    judge_base_url: str = field(default="", metadata={"help": "Judge endpoint; empty = embedded local model."})
    judge_api_key_env: str = field(default="", metadata={"help": "NAME of the env var holding the judge's API key."})
    max_concurrency: int = field(default=8, metadata={"help": "Concurrent judge requests."})
    compare_examples: int = field(default=3, metadata={"help": "Held-out instructions shown base vs fine-tuned."})
    keep_checkpoints: bool = field(default=True, metadata={"help": "Keep every checkpoint folder after selection."})
    resumable: bool = field(default=False, metadata={
        "help": "Keep optimizer and scheduler state in every checkpoint, so that a stopped or crashed run started "
                "again with the same parameters continues from its newest checkpoint (costs about twice the model "
                "size per checkpoint)."})

    # ------------------------------------------------------------------ derived values
    def __post_init__(self) -> None:
        self.run_dir = run_dir_parameter(self.run_dir)  # relative to the project root, whatever the working directory

    def gradient_accumulation(self, num_train_examples: int, world_size: int = 1) -> int:
        """Accumulation steps that give the requested effective batch on `world_size` devices."""
        target = self.target_effective_batch(num_train_examples)
        if not target:
            return self.grad_accum
        per_step = self.per_device_batch_size * max(world_size, 1)
        return max(1, round(target / per_step))

    def target_effective_batch(self, num_train_examples: int) -> int:
        if self.effective_batch_size == PAPER_EFFECTIVE_BATCH_RULE:
            return 128 if num_train_examples >= 4000 else 64
        return int(self.effective_batch_size or 0)

    def to_params(self) -> dict[str, Any]:
        """The notebook-style UPPER_CASE parameters (for the manifest and the printed configuration)."""
        return {f.name.upper(): getattr(self, f.name) for f in fields(self)}

    def validate(self) -> "SFTStageConfig":
        """Check every parameter; fail before loading any model."""
        check_choice("PROFILE", self.profile, PROFILES)
        check_choice("CHAT_TEMPLATE", self.chat_template, TEMPLATE_NAMES)
        check_choice("SELECTION", self.selection, SELECTION_CRITERIA)
        check_choice("SAVE_STRATEGY", self.save_strategy, SAVE_STRATEGIES)
        check_choice("LONG_EXAMPLES", self.long_examples, LONG_EXAMPLE_POLICIES)
        check_int("SEED", self.seed, 0)
        check_float("NUM_EPOCHS", self.num_epochs, 0.0)
        check_int("MAX_STEPS", self.max_steps, -1)
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_epochs <= 0):
            raise ParameterError("MAX_STEPS", "no training would happen", "set MAX_STEPS > 0 or NUM_EPOCHS > 0")
        check_float("LEARNING_RATE", self.learning_rate, 0.0, 1.0)
        check_float("WARMUP_RATIO", self.warmup_ratio, 0.0, 1.0)
        check_int("PER_DEVICE_BATCH_SIZE", self.per_device_batch_size, 1)
        check_int("GRAD_ACCUM", self.grad_accum, 1)
        if self.effective_batch_size != PAPER_EFFECTIVE_BATCH_RULE:
            check_int("EFFECTIVE_BATCH_SIZE", self.effective_batch_size, 0)
        check_int("MAX_LENGTH", self.max_length, 16)
        check_int("MAX_TRAIN_EXAMPLES", self.max_train_examples, 0)
        check_int("MAX_HELDOUT_EXAMPLES", self.max_heldout_examples, 0)
        check_int("LORA_R", self.lora_r, 1)
        check_int("SAVE_EVERY", self.save_every, 0)
        if self.save_strategy == "steps" and self.save_every < 1:
            raise ParameterError("SAVE_EVERY", "SAVE_STRATEGY='steps' needs a step interval",
                                 "set SAVE_EVERY to a number of optimizer steps, or SAVE_STRATEGY='epoch'")
        check_int("LOGGING_STEPS", self.logging_steps, 1)
        check_int("SELECTION_EXAMPLES", self.selection_examples, 1)
        check_int("MAX_NEW_TOKENS", self.max_new_tokens, 1)
        check_int("GENERATION_BATCH_SIZE", self.generation_batch_size, 1)
        check_int("MAX_CONCURRENCY", self.max_concurrency, 1)
        check_int("COMPARE_EXAMPLES", self.compare_examples, 0)
        check_env_var_name("JUDGE_API_KEY_ENV", self.judge_api_key_env)
        for name in ("PACKING", "USE_LORA", "BF16", "GRADIENT_CHECKPOINTING", "KEEP_CHECKPOINTS", "RESUMABLE"):
            if not isinstance(getattr(self, name.lower()), bool):
                raise ParameterError(name, f"expected True or False, got {getattr(self, name.lower())!r}",
                                     "use True or False")
        if not self.base_model:
            raise ParameterError("BASE_MODEL", "is empty", f"use {EMBEDDED_STUDENT!r}, a local folder or a hub id")
        return self


# The published recipe (Section 4 of the paper) and a CPU demo of the same mechanics.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {
        "num_epochs": 15.0, "max_steps": -1, "learning_rate": 2e-5, "lr_scheduler": "cosine", "warmup_ratio": 0.03,
        "per_device_batch_size": 4, "effective_batch_size": PAPER_EFFECTIVE_BATCH_RULE, "max_length": 1024,
        "long_examples": "truncate", "use_lora": False, "bf16": True, "gradient_checkpointing": True,
        "resumable": True,
        "save_strategy": "epoch",
        "selection": "judge", "selection_examples": 100, "max_new_tokens": 1024, "packing": False,
    },
    "demo": {
        "num_epochs": 1.0, "max_steps": 6, "learning_rate": 2e-4, "lr_scheduler": "cosine", "warmup_ratio": 0.03,
        "per_device_batch_size": 4, "grad_accum": 1, "effective_batch_size": 0, "max_length": 256,
        "long_examples": "drop", "use_lora": True, "lora_r": 16, "lora_alpha": 32, "bf16": False, "gradient_checkpointing": False,
        "save_strategy": "steps", "save_every": 3, "selection": "heldout_loss", "selection_examples": 4,
        "max_new_tokens": 48, "max_train_examples": 32, "max_heldout_examples": 8, "compare_examples": 2,
        "packing": False,
    },
}

_FIELD_NAMES = {f.name for f in fields(SFTStageConfig)}


def make_config(profile: str = "demo", **overrides: Any) -> SFTStageConfig:
    """Profile defaults, then `overrides` (UPPER or lower case names; None values mean 'keep the default')."""
    check_choice("PROFILE", profile, PROFILES)
    values: dict[str, Any] = {"profile": profile, **PROFILES[profile]}
    for key, value in overrides.items():
        name = key.lower()
        if name not in _FIELD_NAMES:
            raise ParameterError(key.upper(), "is not a parameter of the SFT stage",
                                 f"use one of {', '.join(sorted(n.upper() for n in _FIELD_NAMES))}")
        if value is not None:
            values[name] = value
    values["profile"] = profile
    return SFTStageConfig(**values)


def parse_override(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line; the value is read as YAML (so numbers and booleans keep their type)."""
    import yaml

    if "=" not in text:
        raise ParameterError("--set", f"{text!r} is not KEY=VALUE", "write e.g. --set MAX_STEPS=10")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> SFTStageConfig:
    """Read a YAML file of UPPER_CASE parameters (PROFILE picks the defaults) and apply overrides."""
    import yaml

    values: dict[str, Any] = {}
    if path:
        file = Path(path)
        if not file.exists():
            raise ParameterError("--config", f"{str(path)!r} does not exist", "pass one of configs/sft/*.yaml")
        values = yaml.safe_load(file.read_text()) or {}
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        for item in overrides or []:
            key, value = parse_override(item)
            values[key] = value
    profile = values.pop("PROFILE", values.pop("profile", "demo"))
    return make_config(profile, **values).validate()


def describe(config: SFTStageConfig, num_train_examples: int | None = None, world_size: int = 1) -> dict[str, Any]:
    """The effective configuration, with derived values spelt out (what the notebook prints)."""
    out = config.to_params()
    if num_train_examples is not None:
        accum = config.gradient_accumulation(num_train_examples, world_size)
        out["GRAD_ACCUM (effective)"] = accum
        out["EFFECTIVE_BATCH_SIZE (effective)"] = config.per_device_batch_size * accum * world_size
    return out


def replace(config: SFTStageConfig, **changes: Any) -> SFTStageConfig:
    return dataclasses.replace(config, **changes)
