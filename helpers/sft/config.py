"""Stage 3's parameters: one dataclass; the recipe values live in the profiles `configs/sft/<PROFILE>.yaml`.

The notebook, the script (`python -m helpers.sft --config FILE --set NAME=VALUE`) and `accelerate launch` build
the same `SFTStageConfig` from the same UPPER_CASE names, so a run configured in the notebook scales out unchanged.
Every recipe field defaults to None, which means "the profile's value": `demo` (CPU minutes) or `paper` (the
published recipe). Precedence: profile < config file < explicit values (notebook parameters or `--set`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import StageConfig, param, shared
from ..layout import HELDOUT_JSONL, TRAIN_JSONL
from ..llm.endpoint import Endpoint
from ..llm.vllm_engine import resolve_engine
from ..params import ParameterError, check_choice, check_float, check_int
from .devices import deepspeed_installed, launched_world_size, visible_gpus
from .templates import TEMPLATE_NAMES

SELECTION_CRITERIA = ("heldout_loss", "judge", "last")
SELECTION_PROMPTS = ("template", "official")  # the chat template trained, or the official validation's prompt file
SAVE_STRATEGIES = ("epoch", "steps")
LONG_EXAMPLE_POLICIES = ("truncate", "drop")
PAPER_EFFECTIVE_BATCH_RULE = "paper_rule"  # 64, or 128 from 4,000 training examples on (the paper's two settings)
ACCELERATE_CONFIGS = ("ddp", "fsdp", "deepspeed_zero3")  # configs/accelerate/<name>.yaml
SHARDED_CONFIGS = ("fsdp", "deepspeed_zero3")  # launched even for one process: the sharding is the point
BOOLEANS = ("PACKING", "USE_LORA", "BF16", "GRADIENT_CHECKPOINTING", "KEEP_CHECKPOINTS", "RESUMABLE",
            "SKIP_INVALID_EXAMPLES")


@dataclass(frozen=True)
class LaunchPlan:
    """NUM_PROCESSES and ACCELERATE_CONFIG resolved on this machine: the processes stage 3 starts itself."""

    num_processes: int
    accelerate_config: str
    gpus: int


def recipe(help: str) -> Any:
    """A field whose value comes from the profile unless it is given."""
    return param(None, help + " (None: the PROFILE's value)")


@dataclass
class SFTStageConfig(StageConfig):
    """Everything the SFT stage needs. Field names are the notebook's parameters, lower-cased."""

    profile_dir: ClassVar[str] = "sft"

    run_dir: str = shared("run_dir")
    seed: int = shared("seed")
    profile: str = param("demo", "The recipe's values for every parameter left at None: 'demo' (CPU minutes) or "
                                 "'paper' (the published recipe, 7-8B model on GPUs); see configs/sft/.")
    base_model: str = shared("base_model")
    train_data_path: str = param("", "Training data (JSONL, a datasets folder or the official JSON list); empty: "
                                     f"RUN_DIR/{TRAIN_JSONL}.")
    heldout_data_path: str = param("", f"Held-out data; empty: RUN_DIR/{HELDOUT_JSONL}.")
    skip_invalid_examples: bool = param(False, "False: a record without a non-empty 'instruction' and 'output' (or a "
                                               "line that is not a record) stops the stage, naming file and line; "
                                               "True: such records are left out and counted in a warning.")
    chat_template: str | None = recipe(
        "'alpaca' (the Alpaca text, EOS ends the answer), 'llama3_alpaca' (the paper's Llama-3 runs: the Alpaca "
        "text inside Llama-3 header tokens, <|eot_id|> learned), 'auto' (llama3_alpaca for a Llama-3 vocabulary, "
        "else alpaca) or 'chatml'.")
    max_steps: int | None = recipe("Optimizer steps; -1 = run NUM_EPOCHS epochs.")
    num_epochs: float | None = recipe("Epochs over the training set (ignored if MAX_STEPS > 0).")
    learning_rate: float | None = recipe("Peak learning rate.")
    lr_scheduler: str | None = recipe("Learning-rate schedule (transformers name).")
    warmup_ratio: float | None = recipe("Fraction of steps spent warming up.")
    per_device_batch_size: int | None = recipe("Sequences per device per forward pass.")
    grad_accum: int | None = recipe("Gradient accumulation steps (ignored if EFFECTIVE_BATCH_SIZE is set).")
    effective_batch_size: Any = recipe("Sequences per optimizer step over all devices; 0 = PER_DEVICE_BATCH_SIZE x "
                                       "GRAD_ACCUM x devices; 'paper_rule' = 64, or 128 from 4,000 examples on.")
    max_length: int | None = recipe("Longest training sequence in tokens.")
    max_train_examples: int | None = recipe("Use only the first N training examples (0 = all).")
    max_heldout_examples: int | None = recipe("Use only the first N held-out examples (0 = all).")
    long_examples: str | None = recipe("Examples longer than MAX_LENGTH: 'truncate' (TRL's default; the cut example "
                                       "loses its end-of-turn token) or 'drop' (every kept example teaches the model "
                                       "to stop).")
    use_lora: bool | None = recipe("Train LoRA adapters (peft) instead of all weights.")
    lora_r: int | None = recipe("LoRA rank.")
    lora_alpha: int | None = recipe("LoRA scaling numerator.")
    packing: bool | None = recipe("Pack sequences with TRL's best-fit-decreasing packing.")
    bf16: bool | None = recipe("Train in bfloat16 mixed precision (GPUs).")
    gradient_checkpointing: bool | None = recipe("Recompute activations to save memory.")
    save_strategy: str | None = recipe("When to save a checkpoint: 'epoch' or 'steps'.")
    save_every: int | None = recipe("With SAVE_STRATEGY='steps': save every N optimizer steps.")
    selection: str | None = recipe("Checkpoint choice: 'judge' (the paper: pairwise judge against the held-out "
                                   "references), 'heldout_loss' (lowest held-out loss) or 'last'.")
    selection_examples: int | None = recipe("Held-out instructions each checkpoint answers for selection.")
    max_new_tokens: int | None = recipe("Longest generated answer (selection and the base/fine-tuned comparison).")
    resumable: bool | None = recipe("Keep optimizer and scheduler state in every checkpoint, so that a stopped run "
                                    "started again with the same parameters continues from its newest checkpoint "
                                    "(costs about twice the model size per checkpoint).")
    compare_examples: int | None = recipe("Held-out instructions shown base vs fine-tuned.")
    weight_decay: float | None = recipe("AdamW weight decay (the paper's torchtune runs: AdamW's default 0.01).")
    max_grad_norm: float | None = recipe("Gradient clipping norm; 0 = no clipping (the paper's torchtune runs clip "
                                         "nothing).")
    planned_examples: int = param(0, "Training examples stage 2 planned (its NUM_EXAMPLES): the 'paper_rule' batch "
                                     "size reads this, not the count left after filtering. 0 = stage 2's planned "
                                     "count recorded in RUN_DIR, else the training examples loaded.")
    selection_temperature: float | None = recipe("Sampling temperature of the held-out answers SELECTION='judge' "
                                                 "compares; 0 = greedy (the paper sampled at 0.9).")
    selection_top_p: float | None = recipe("Nucleus sampling of those answers (the paper: 1.0).")
    selection_prompt: str | None = recipe("How those answers are prompted: 'template' (the chat template trained) or "
                                          "'official' (the official validation's plain Alpaca prompt file, read at "
                                          "run time, as raw text after BOS).")
    selection_judge: str | None = recipe("Judge of SELECTION='judge': a judge of helpers/judge/configs or an owner's "
                                         "judge, e.g. 'alpaca_eval:weighted_alpaca_eval_gpt4_turbo' (the paper's).")
    instruct_skillmix_repo: str = shared("instruct_skillmix_repo")
    lora_dropout: float = param(0.0, "LoRA dropout.")
    logging_steps: int = param(1, "Log the training loss every N steps.")
    generation_batch_size: int = param(0, "Prompts per generate() call of the transformers engine (0 = by device: "
                                          "16 on a CPU, 64 on a GPU).")
    keep_checkpoints: bool = param(True, "Keep every checkpoint folder after selection.")
    num_processes: Any = param("auto", "Training processes: 'auto' = one per visible GPU (1 without a GPU). Above 1, "
                                       "or with ACCELERATE_CONFIG 'fsdp' / 'deepspeed_zero3', the stage starts them "
                                       "itself with `accelerate launch` and then selects and answers in this process.")
    accelerate_config: str = param("auto", "How launched processes share the model (configs/accelerate/<name>.yaml): "
                                           "'ddp' (a full copy per process; gloo on CPU), 'fsdp' (sharded, GPUs only), "
                                           "'deepspeed_zero3' (sharded, needs the deepspeed package) or 'auto' (fsdp on "
                                           "GPUs, ddp on CPU).")
    judge_model: str = shared("judge_model")
    judge_base_url: str = shared("judge_base_url")
    judge_api_key_env: str = shared("judge_api_key_env")
    max_concurrency: int = shared("max_concurrency")
    request_timeout: float = shared("request_timeout")
    request_attempts: int = shared("request_attempts")
    local_dtype: str = shared("local_dtype")
    local_engine: str = shared("local_engine")
    judge_max_requests_per_minute: float | None = shared("judge_max_requests_per_minute")
    judge_max_tokens_per_minute: float | None = shared("judge_max_tokens_per_minute")
    judge_batch: bool = shared("judge_batch")
    dry_run: bool = shared("dry_run")

    # ------------------------------------------------------------------ derived values
    def gradient_accumulation(self, num_train_examples: int, world_size: int = 1) -> int:
        """Accumulation steps that give the requested effective batch on `world_size` devices."""
        target = self.target_effective_batch(num_train_examples)
        if not target:
            return self.grad_accum
        per_step = self.per_device_batch_size * max(world_size, 1)
        return max(1, round(target / per_step))

    def target_effective_batch(self, num_train_examples: int) -> int:
        """The paper's rule reads the PLANNED size (PLANNED_EXAMPLES) when known: a 4K run that lost a few examples
        to filtering still trains at 128."""
        if self.effective_batch_size == PAPER_EFFECTIVE_BATCH_RULE:
            return 128 if (self.planned_examples or num_train_examples) >= 4000 else 64
        return int(self.effective_batch_size or 0)

    def launch_plan(self) -> LaunchPlan | None:
        """The `accelerate launch` stage 3 starts, or None when it trains in this process: one process without a
        sharding config, or this process is already one of a launch (`accelerate launch` sets WORLD_SIZE)."""
        if launched_world_size() is not None:
            return None
        gpus = visible_gpus()
        processes = (gpus or 1) if self.num_processes == "auto" else int(self.num_processes)
        config = ("fsdp" if gpus else "ddp") if self.accelerate_config == "auto" else self.accelerate_config
        if config in SHARDED_CONFIGS and not gpus:
            raise ParameterError("ACCELERATE_CONFIG", f"{config!r} shards the model over GPUs and none is visible "
                                 "(accelerate enables FSDP and DeepSpeed only on GPUs)",
                                 "use 'ddp' on CPU (gloo processes) or 'auto', or run on a GPU node")
        if config == "deepspeed_zero3" and not deepspeed_installed():
            raise ParameterError("ACCELERATE_CONFIG", "'deepspeed_zero3' needs the deepspeed package, which is not "
                                 "installed", "pip install deepspeed on the GPU node (with the CUDA torch build), "
                                 "or use 'fsdp'")
        if gpus and processes > gpus:
            raise ParameterError("NUM_PROCESSES", f"{processes} processes but {gpus} GPUs are visible",
                                 f"use at most {gpus}, or 'auto' (one per GPU)")
        if processes == 1 and self.accelerate_config not in SHARDED_CONFIGS:  # 'auto' on one GPU: no launch
            return None
        return LaunchPlan(processes, config, gpus)

    def judge(self) -> Endpoint:
        return Endpoint.from_params(self, "JUDGE")

    def describe(self, num_train_examples: int | None = None, world_size: int = 1) -> dict[str, Any]:
        """The effective configuration, with derived values spelt out (what the notebook prints)."""
        out = self.as_params()
        if num_train_examples is not None:
            accum = self.gradient_accumulation(num_train_examples, world_size)
            out["GRAD_ACCUM (effective)"] = accum
            out["EFFECTIVE_BATCH_SIZE (effective)"] = self.per_device_batch_size * accum * world_size
        return out

    # ------------------------------------------------------------------ checks
    def check_values(self) -> None:
        """Check every parameter; fail before loading any model."""
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
        check_int("GENERATION_BATCH_SIZE", self.generation_batch_size, 0)
        if self.local_engine == "vllm":
            resolve_engine(self.local_engine, "cpu")  # vLLM must be installed: fail now, not after training
        check_int("MAX_CONCURRENCY", self.max_concurrency, 1)
        check_int("COMPARE_EXAMPLES", self.compare_examples, 0)
        check_float("WEIGHT_DECAY", self.weight_decay, 0.0, 1.0)
        check_float("MAX_GRAD_NORM", self.max_grad_norm, 0.0)
        check_int("PLANNED_EXAMPLES", self.planned_examples, 0)
        check_float("SELECTION_TEMPERATURE", self.selection_temperature, 0.0, 2.0)
        check_float("SELECTION_TOP_P", self.selection_top_p, 0.0, 1.0)
        check_choice("SELECTION_PROMPT", self.selection_prompt, SELECTION_PROMPTS)
        if self.selection_top_p == 0.0:
            raise ParameterError("SELECTION_TOP_P", "0 keeps no token", "use a value in (0, 1], e.g. 1.0")
        if not str(self.selection_judge).strip():
            raise ParameterError("SELECTION_JUDGE", "is empty", "use 'alpaca_eval_pairwise' or another judge name")
        self.judge().validate()
        self._check_launch()
        for name in BOOLEANS:
            if not isinstance(getattr(self, name.lower()), bool):
                raise ParameterError(name, f"expected True or False, got {getattr(self, name.lower())!r}",
                                     "use True or False")
        if not self.base_model:
            raise ParameterError("BASE_MODEL", "is empty", "use 'gemma-3-270m', a local folder or a hub id")

    def _check_launch(self) -> None:
        """NUM_PROCESSES and ACCELERATE_CONFIG; against this machine (GPUs, deepspeed) only when a launch is asked
        for explicitly, so that the default 'auto' costs no torch import."""
        if self.num_processes != "auto":
            check_int("NUM_PROCESSES", self.num_processes, 1)
        check_choice("ACCELERATE_CONFIG", self.accelerate_config, ("auto", *ACCELERATE_CONFIGS))
        if self.accelerate_config in SHARDED_CONFIGS or (self.num_processes != "auto" and self.num_processes > 1):
            self.launch_plan()
