"""One SFT run with TRL's `SFTTrainer`: base model + template, response-only loss, checkpoints, measurements.

The dataset handed to TRL is already tokenised by `helpers.sft.data` (ids + labels with the prompt at -100), which
TRL 1.x uses as is; TRL still truncates, drops fully masked rows and, with `PACKING`, packs with best-fit
decreasing. Checkpoints hold only the model (no optimizer state: 15 epochs of an 8B model would not fit otherwise),
plus the tokenizer with its chat template. A LoRA checkpoint holds the adapter; `materialise_checkpoint` merges it
into a standalone model when one is needed for generation.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..llm.models import load_tokenizer_and_model, resolve_model_path
from ..params import ParameterError
from ..phases import timed
from ..progress import plain_progress
from .config import SFTStageConfig
from .data import tokenize_dataset
from .devices import launched_world_size
from .process_trace import record_training_rows
from .templates import TemplateSpec, build_template, install_template

TEMPLATE_FILE = "sft_template.json"


@dataclass
class TrainOutcome:
    """What a training run produced and measured."""

    output_dir: Path
    checkpoints: list[Path]
    log_history: list[dict[str, Any]]
    template: TemplateSpec
    base_model_path: str
    use_lora: bool
    num_train_examples: int
    num_truncated: int
    train_tokens: int
    train_seconds: float
    peak_rss_gb: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def train_tokens_per_s(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def train_loss_final(self) -> float | None:
        losses = [h["loss"] for h in self.log_history if "loss" in h]
        return float(losses[-1]) if losses else None

    @property
    def heldout_loss(self) -> float | None:
        losses = [h["eval_loss"] for h in self.log_history if "eval_loss" in h]
        return float(losses[-1]) if losses else None

    def to_json(self) -> dict[str, Any]:
        """Everything but the trainer: how a launched training process hands its outcome to the stage."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(output_dir=str(self.output_dir), checkpoints=[str(c) for c in self.checkpoints],
                   template=asdict(self.template),
                   extra={k: v for k, v in self.extra.items() if k != "trainer"})
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainOutcome:
        return cls(**{**data, "output_dir": Path(data["output_dir"]),
                      "checkpoints": [Path(c) for c in data["checkpoints"]],
                      "template": TemplateSpec(**data["template"])})


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if os.uname().sysname == "Darwin" else 1024
    return peak * scale / 1024**3


def prepare_model(cfg: SFTStageConfig, dtype: str = "float32") -> tuple[Any, Any, TemplateSpec, str]:
    """Load the base model and its tokenizer, and give them the chosen chat template.

    Seeded first: a template token added to the vocabulary gets a randomly initialised embedding row, which must be
    the same in every run with the same SEED (and in every process of a multi-process launch).
    """
    from transformers import set_seed

    set_seed(cfg.seed)
    base_path = resolve_model_path(cfg.base_model, "BASE_MODEL")
    tokenizer, model = load_tokenizer_and_model(cfg.base_model, "BASE_MODEL", dtype=dtype)
    spec = build_template(cfg.chat_template, tokenizer)
    install_template(spec, tokenizer, model)
    return model, tokenizer, spec, base_path


def lora_config(cfg: SFTStageConfig, spec: TemplateSpec, tokenizer: Any) -> Any:
    """LoRA on all linear layers; the embedding matrix stays frozen.

    So a template token *added* to the vocabulary could not learn an embedding, and the model would never learn to
    stop: that combination is refused (peft's trainable embedding rows would be the fix, but TRL's fused LM head reads
    the raw head weight and bypasses them). Reused turn tokens (Gemma's, ChatML's) and the EOS of the Alpaca format
    are pre-trained rows, so the adapters only have to learn *when* to emit them.
    """
    from peft import LoraConfig  # heavy: peft (and torch) load only when a model is trained

    if spec.tokens_to_add:
        raise ParameterError("USE_LORA", f"the {spec.name!r} template needs new tokens {spec.tokens_to_add} for this "
                             "tokenizer, and LoRA keeps the embeddings frozen, so the model could not learn to stop",
                             "use CHAT_TEMPLATE='alpaca', or USE_LORA=False (full fine-tune)")
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def trl_config(cfg: SFTStageConfig, output_dir: Path, num_train: int, has_eval: bool, world_size: int = 1,
               **extra: Any) -> Any:
    """The `SFTConfig` for this stage's parameters."""
    from trl import SFTConfig  # heavy: TRL loads only when a model is trained

    by_steps = cfg.save_strategy == "steps"
    args: dict[str, Any] = dict(
        output_dir=str(output_dir), seed=cfg.seed, data_seed=cfg.seed,
        num_train_epochs=cfg.num_epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.per_device_batch_size, per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation(num_train, world_size),
        max_length=cfg.max_length, packing=cfg.packing, packing_strategy="bfd",
        bf16=cfg.bf16, activation_checkpointing=cfg.gradient_checkpointing,
        save_strategy=cfg.save_strategy, save_steps=cfg.save_every if by_steps else 500, save_only_model=not cfg.resumable,
        eval_strategy=cfg.save_strategy if has_eval else "no", eval_steps=cfg.save_every if by_steps else None,
        logging_steps=cfg.logging_steps, logging_first_step=True, report_to="none", prediction_loss_only=True,
        dataloader_num_workers=0, use_cpu=not _has_accelerator(),
    )
    args.update(extra)
    return SFTConfig(**args)


def _has_accelerator() -> bool:
    import torch  # heavy: see above

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _timing_callback() -> Any:
    from transformers import TrainerCallback  # heavy: see above

    class StepTimer(TrainerCallback):
        """Time spent in optimizer steps only (not in evaluation or checkpoint saving)."""

        def __init__(self) -> None:
            self.durations: list[float] = []
            self._t = 0.0

        @property
        def seconds(self) -> float:
            return sum(self.durations)

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.durations.append(time.perf_counter() - self._t)

    return StepTimer()


def _use_line_progress(trainer: Any) -> None:
    """Plain progress mode (the pipeline driver): one line per logged step on stderr instead of the notebook's
    HTML bar, which nobody sees while the driver runs the notebook."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    class LineProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self._start = time.perf_counter()
            if state.is_world_process_zero:  # one line per step, not one per process
                print(f"training: {state.max_steps} steps", file=sys.stderr, flush=True)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero:
                return
            logs = logs or {}
            parts = [f"step {state.global_step}/{state.max_steps}"]
            parts += [f"{key} {logs[key]:.4g}" for key in ("loss", "eval_loss", "learning_rate", "epoch")
                      if isinstance(logs.get(key), (int, float))]
            if state.global_step:
                seconds = time.perf_counter() - getattr(self, "_start", time.perf_counter())
                parts.append(f"{seconds / state.global_step:.1f} s/step")
            print("training: " + ", ".join(parts), file=sys.stderr, flush=True)

    trainer.remove_callback(NotebookProgressCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LineProgress())


def train_sft(cfg: SFTStageConfig, train_records: Any, heldout_records: Any | None, output_dir: str | Path,
              model_tokenizer: tuple[Any, Any, TemplateSpec, str] | None = None, evaluate_first: bool = True,
              **trl_overrides: Any) -> TrainOutcome:
    """Fine-tune the base model on `train_records` (official fields) and save checkpoints under `output_dir`."""
    from trl import SFTTrainer  # heavy: see above

    output_dir = Path(output_dir)
    model, tokenizer, spec, base_path = model_tokenizer or prepare_model(cfg)
    train_tok = tokenize_dataset(train_records, tokenizer, cfg.max_length, spec.end_of_turn, "tokenising train",
                                 spec.learns_assistant_header)
    heldout_tok = (tokenize_dataset(heldout_records, tokenizer, cfg.max_length, spec.end_of_turn,
                                    "tokenising held-out", spec.learns_assistant_header)
                   if heldout_records is not None else None)
    num_truncated = int(sum(train_tok["truncated"]))
    num_dropped = 0
    if cfg.long_examples == "drop" and num_truncated:
        train_tok = train_tok.filter(lambda row: not row["truncated"], desc="dropping over-long examples")
        num_dropped, num_truncated = num_truncated, 0
        if len(train_tok) == 0:
            raise ParameterError("MAX_LENGTH", f"all {num_dropped} training examples are longer than {cfg.max_length} "
                                 "tokens and LONG_EXAMPLES='drop' removed them", "raise MAX_LENGTH, or set "
                                 "LONG_EXAMPLES='truncate' (cut examples then lose their end-of-turn token)")
    world_size = launched_world_size() or 1
    # Every process decides from the same folder contents, before the main process changes them (barrier below).
    resume_from = resumable_checkpoint(output_dir, cfg)
    # The held-out loss before any step is evaluated inside `train()` (`eval_on_start`), not by a `trainer.evaluate()`
    # beforehand: that call prepares the model for evaluation only, and `train()` then never wraps it in
    # DistributedDataParallel, so each process would silently train its own copy on its own share of the data.
    # A resumed run has that evaluation in the checkpoint's history already.
    eval_on_start = evaluate_first and heldout_tok is not None and resume_from is None
    args = trl_config(cfg, output_dir, len(train_tok), heldout_tok is not None, world_size,
                      **{"eval_on_start": eval_on_start, **trl_overrides})
    peft_config = lora_config(cfg, spec, tokenizer) if cfg.use_lora else None
    timer = _timing_callback()
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_tok, eval_dataset=heldout_tok,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=[timer])
    record_training_rows(trainer)
    trainer.accelerator.wait_for_everyone()
    if plain_progress():
        _use_line_progress(trainer)
    if trainer.is_world_process_zero():
        if resume_from is None:
            clear_output_dir(output_dir, cfg)
        (output_dir / TEMPLATE_FILE).write_text(json.dumps(
            {**spec.to_dict(), "base_model": cfg.base_model, "base_model_path": base_path, "use_lora": cfg.use_lora},
            indent=2))
    trainer.accelerator.wait_for_everyone()
    with timed("training") as counts:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        counts["steps"] = result.global_step
    log_history = list(trainer.state.log_history)
    tokens = _trained_tokens(log_history, train_tok, result.global_step, args)
    checkpoints = list_checkpoints(output_dir)
    trainer.accelerator.wait_for_everyone()
    return TrainOutcome(output_dir, checkpoints, log_history, spec, base_path, cfg.use_lora, len(train_tok),
                        num_truncated, tokens, timer.seconds or float(result.metrics.get("train_runtime", 0.0)),
                        peak_rss_gb(), {"global_step": result.global_step, "trainer": trainer,
                                        "num_dropped": num_dropped,
                                        "resumed_from": str(resume_from) if resume_from else None,
                                        "step_seconds": list(timer.durations), "world_size": world_size})


def training_fingerprint(cfg: SFTStageConfig) -> str:
    """What must match for a checkpoint to be continued: everything that shapes training, not previews.

    The launch is fingerprinted as it ran (processes and sharding, from the launcher's environment), not as the
    parameters asked for it ('auto'); a training in one plain process keeps the fingerprint it always had."""
    ignored = {"RUN_DIR", "SELECTION", "SELECTION_EXAMPLES", "MAX_NEW_TOKENS", "GENERATION_BATCH_SIZE",
               "COMPARE_EXAMPLES", "KEEP_CHECKPOINTS", "JUDGE_MODEL", "JUDGE_BASE_URL", "JUDGE_API_KEY_ENV",
               "MAX_CONCURRENCY", "REQUEST_TIMEOUT", "REQUEST_ATTEMPTS", "NUM_PROCESSES", "ACCELERATE_CONFIG"}
    params: dict[str, Any] = {k: v for k, v in cfg.as_params().items() if k not in ignored}
    if (world_size := launched_world_size()) is not None:
        params["launch"] = {"world_size": world_size, "fsdp": os.environ.get("ACCELERATE_USE_FSDP", "false"),
                            "deepspeed": os.environ.get("ACCELERATE_USE_DEEPSPEED", "false")}
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


FINGERPRINT_FILE = "training_fingerprint.json"


def resumable_checkpoint(output_dir: Path, cfg: SFTStageConfig) -> Path | None:
    """The checkpoint to continue from: only a RESUMABLE run with an unchanged training fingerprint continues.

    Reads only, so every process of a multi-process launch can ask before the main process clears the folder.
    """
    stamp = output_dir / FINGERPRINT_FILE
    same = stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == training_fingerprint(cfg)
    resumable = [c for c in list_checkpoints(output_dir) if (c / "trainer_state.json").exists()
                 and any(c.glob("optimizer*")) and (c / "scheduler.pt").exists()]
    return resumable[-1] if cfg.resumable and same and resumable else None


def clear_output_dir(output_dir: Path, cfg: SFTStageConfig) -> None:
    """Remove the checkpoints a different training left behind (so selection never mixes two trainings) and stamp
    the folder with this training's fingerprint. Main process only."""
    for old in list_checkpoints(output_dir):
        shutil.rmtree(old, ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / FINGERPRINT_FILE).write_text(json.dumps(
        {"fingerprint": training_fingerprint(cfg), "params": cfg.as_params()}, indent=2, default=str))


def _trained_tokens(log_history: list[dict[str, Any]], train_tok: Any, steps: int, args: Any) -> int:
    """Tokens the model was trained on: TRL's running count, else an estimate from the data."""
    counts = [h["num_tokens"] for h in log_history if "num_tokens" in h]
    if counts:
        return int(max(counts))
    lengths = [len(ids) for ids in train_tok["input_ids"]]
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    return int(sum(lengths) / max(len(lengths), 1) * per_step * steps)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """`checkpoint-N` folders in step order."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(path: str | Path) -> int:
    return int(Path(path).name.split("-")[-1])


def is_adapter_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def materialise_checkpoint(checkpoint: str | Path, base_model_path: str | None = None, dtype: str = "float32",
                           target: str | Path | None = None) -> Path:
    """A standalone model folder for `checkpoint` (a LoRA adapter is merged into its base model once).

    The result reloads with plain `from_pretrained`, carries the chat template in its tokenizer and the end-of-turn
    stop ids in its generation config, so `helpers.llm.client.connect(model=<folder>, base_url="")` answers in the format
    the model was trained with.
    """
    checkpoint = Path(checkpoint)
    if not is_adapter_checkpoint(checkpoint):
        return checkpoint
    target = Path(target) if target else checkpoint / "merged"
    if (target / "config.json").exists():
        return target
    with timed(f"merge and save {checkpoint.name}"):
        model, tokenizer = load_merged(checkpoint, base_model_path, dtype)
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return target


def load_merged(checkpoint: str | Path, base_model_path: str | None = None, dtype: str = "float32") -> tuple[Any, Any]:
    """Base model + the checkpoint's LoRA adapter, merged, with the checkpoint's tokenizer and stop ids."""
    # heavy: peft and transformers load only when a LoRA checkpoint is merged
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = Path(checkpoint)
    info = _template_info(checkpoint)
    base_model_path = base_model_path or info.get("base_model_path")
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=dtype)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    spec = TemplateSpec(info.get("name", "custom"), tokenizer.chat_template, info.get("end_of_turn", tokenizer.eos_token))
    install_template(spec, tokenizer, model)
    model = PeftModel.from_pretrained(model, str(checkpoint)).merge_and_unload()
    return model, tokenizer


def _template_info(checkpoint: Path) -> dict[str, Any]:
    for folder in (checkpoint, checkpoint.parent):
        if (folder / TEMPLATE_FILE).exists():
            return json.loads((folder / TEMPLATE_FILE).read_text())
    return {}


def steps_per_epoch(num_examples: int, cfg: SFTStageConfig, world_size: int = 1) -> int:
    per_step = cfg.per_device_batch_size * cfg.gradient_accumulation(num_examples, world_size) * world_size
    return max(1, math.ceil(num_examples / per_step))
