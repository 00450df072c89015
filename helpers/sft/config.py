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
from ..params import (DEFAULT_REQUEST_ATTEMPTS, DEFAULT_REQUEST_TIMEOUT, REQUEST_ATTEMPTS_HELP, REQUEST_TIMEOUT_HELP,
                      ParameterError, check_choice, check_env_var_name, check_float, check_int, check_request_limits)
from .templates import TEMPLATE_NAMES

SELECTION_CRITERIA = ("heldout_loss", "judge", "last")
SELECTION_PROMPTS = ("template", "official")
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
    chat_template: str = field(default="alpaca", metadata={
        "help": "'alpaca' (the Alpaca text, EOS ends the answer), 'llama3_alpaca' (the paper's Llama-3 runs: the "
                "Alpaca text inside Llama-3 header tokens, <|eot_id|> learned), 'auto' (llama3_alpaca for a Llama-3 "
                "vocabulary, else alpaca) or 'chatml'."})
    num_epochs: float = field(default=15.0, metadata={"help": "Epochs over the training set (ignored if MAX_STEPS > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; -1 = run NUM_EPOCHS epochs."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "Learning-rate schedule (transformers name)."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Fraction of steps spent warming up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (the paper's torchtune runs: AdamW's default 0.01)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm; 0 = no clipping (the paper's torchtune runs clip nothing)."})
    num_examples: int = field(default=0, metadata={
        "help": "Training examples stage 2 planned (its NUM_EXAMPLES): the 'paper_rule' batch size reads this, not "
                "the count left after filtering. 0 = stage 2's planned count recorded in RUN_DIR, else the training "
                "examples loaded."})
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
    selection_temperature: float = field(default=0.0, metadata={
        "help": "Sampling temperature of the held-out answers that SELECTION='judge' compares; 0 = greedy "
                "(the paper sampled at 0.9)."})
    selection_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of those answers (the paper: 1.0)."})
    selection_prompt: str = field(default="template", metadata={
        "help": "How those answers are prompted: 'template' (the chat template trained) or 'official' (the official "
                "validation's plain Alpaca prompt file, read at run time, as raw text after BOS)."})
    instruct_skillmix_repo: str = field(default="", metadata={
        "help": "Root of a local clone of princeton-pli/Instruct-SkillMix for SELECTION_PROMPT='official'; empty = "
                "download the pinned file into the cache."})
    selection_judge: str = field(default="alpaca_eval_pairwise", metadata={
        "help": "Judge of SELECTION='judge': a judge of helpers/judge/configs (the kit's pairwise judge by default) "
                "or a name the judge loader knows, e.g. 'alpaca_eval:weighted_alpaca_eval_gpt4_turbo' (the paper's)."})
    generation_batch_size: int = field(default=8, metadata={"help": "Prompts per generate() call."})
    judge_model: str = field(default=EMBEDDED_TEACHER, metadata={"help": "Judge for SELECTION='judge'."})
    judge_base_url: str = field(default="", metadata={"help": "Judge endpoint; empty = embedded local model."})
    judge_api_key_env: str = field(default="", metadata={"help": "NAME of the env var holding the judge's API key."})
    max_concurrency: int = field(default=8, metadata={"help": "Concurrent judge requests."})
    request_timeout: float = field(default=DEFAULT_REQUEST_TIMEOUT, metadata={"help": REQUEST_TIMEOUT_HELP})
    request_attempts: int = field(default=DEFAULT_REQUEST_ATTEMPTS, metadata={"help": REQUEST_ATTEMPTS_HELP})
    compare_examples: int = field(default=3, metadata={"help": "Held-out instructions shown base vs fine-tuned."})
    keep_checkpoints: bool = field(default=True, metadata={"help": "Keep every checkpoint folder after selection."})
    resumable: bool = field(default=False, metadata={
        "help": "Keep optimizer and scheduler state in every checkpoint, so that a stopped or crashed run started "
                "again with the same parameters continues from its newest checkpoint (costs about twice the model "
                "size per checkpoint)."})

    # ------------------------------------------------------------------ derived values
    def gradient_accumulation(self, num_train_examples: int, world_size: int = 1) -> int:
        """Accumulation steps that give the requested effective batch on `world_size` devices."""
        target = self.target_effective_batch(num_train_examples)
        if not target:
            return self.grad_accum
        per_step = self.per_device_batch_size * max(world_size, 1)
        return max(1, round(target / per_step))

    def target_effective_batch(self, num_train_examples: int) -> int:
        """The paper's rule reads the PLANNED size (NUM_EXAMPLES) when known: a 4K run that lost a few examples to
        filtering still trains at 128."""
        if self.effective_batch_size == PAPER_EFFECTIVE_BATCH_RULE:
            return 128 if (self.num_examples or num_train_examples) >= 4000 else 64
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
        check_float("WEIGHT_DECAY", self.weight_decay, 0.0, 1.0)
        check_float("MAX_GRAD_NORM", self.max_grad_norm, 0.0)
        check_int("NUM_EXAMPLES", self.num_examples, 0)
        check_float("SELECTION_TEMPERATURE", self.selection_temperature, 0.0, 2.0)
        check_float("SELECTION_TOP_P", self.selection_top_p, 0.0, 1.0)
        check_choice("SELECTION_PROMPT", self.selection_prompt, SELECTION_PROMPTS)
        if self.selection_top_p == 0.0:
            raise ParameterError("SELECTION_TOP_P", "0 keeps no token", "use a value in (0, 1], e.g. 1.0")
        if not str(self.selection_judge).strip():
            raise ParameterError("SELECTION_JUDGE", "is empty", "use 'alpaca_eval_pairwise' or another judge name")
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
        self.request_timeout, self.request_attempts = check_request_limits(self.request_timeout, self.request_attempts)
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
        "selection": "judge", "selection_examples": 100, "max_new_tokens": 2048, "packing": False,
        # torchtune's recipe as the official runs used it: AdamW's default weight decay, no gradient clipping, the
        # Llama-3 Alpaca template; selection answers prompted and sampled as the official validation (its plain
        # Alpaca prompt file, 0.9 / 1.0 / 2,048 tokens) and judged by AlpacaEval's weighted judge.
        "weight_decay": 0.01, "max_grad_norm": 0.0, "chat_template": "auto",
        "selection_temperature": 0.9, "selection_top_p": 1.0, "selection_prompt": "official",
        "selection_judge": "alpaca_eval:weighted_alpaca_eval_gpt4_turbo",
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
