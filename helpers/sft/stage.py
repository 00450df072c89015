"""Stage 3 end to end, and its script entry point.

    python -m helpers.sft --config configs/sft/demo.yaml --set RUN_DIR=runs/demo
    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 8 -m helpers.sft \\
        --config configs/sft/paper.yaml --set RUN_DIR=runs/paper BASE_MODEL=meta-llama/Meta-Llama-3-8B
    python -m helpers.sft --config configs/sft/paper.yaml --launch-command fsdp    # prints the exact command

The notebook and the script take the same UPPER_CASE parameters (see `helpers.sft.config`). Above one process
(NUM_PROCESSES, ACCELERATE_CONFIG) the stage starts that `accelerate launch` itself (`helpers.sft.launch`): the
launched processes only train, and the stage then selects, answers and records as after a training in its own
process. Under an `accelerate launch` started by hand every process trains; only the main process writes the run
folder, selects the checkpoint and generates answers.
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import layout
from ..judge.named import load_named_judge
from ..llm.device import (batch_size_for, best_device, describe_placement, is_accelerator, place,
                          release_accelerator_memory, resolve_dtype)
from ..llm.local_backend import release_models, transformers_version
from ..llm.models import resolve_model_path
from ..llm.vllm_engine import find_vllm_python, resolve_engine, stop_engines, vllm_version
from ..official import resolve
from ..params import ParameterError
from ..runs import Run
from .answers import Answer, engine_answers, eos_stop_rate, generate_answers, load_for_generation
from .config import ACCELERATE_CONFIGS, SFTStageConfig
from .data import load_records, resolve_data_paths, tokenize_record
from .launch import OUTCOME_FILE, die_with_parent, launch_command, run_launched, write_failure
from .process_trace import process_rank, record_writes_under
from .select import Selection, heldout_losses, select_by_heldout_loss, select_by_judge, write_selection
from .templates import TemplateSpec, build_template, install_template, record_to_messages
from .train import TrainOutcome, load_merged, materialise_checkpoint, prepare_model, train_sft

STAGE = layout.SFT
OFFICIAL_EVAL_PROMPT = "src/eval_configs/templates/prompt.txt"  # the plain Alpaca prompt of the official validation
GENERATE_STAGE = "generate"  # stage 2's name in results.json


@dataclass
class SFTData:
    train: Any
    heldout: Any | None
    train_path: Path
    heldout_path: Path | None
    # Set when stage 2 produced no usable held-out example (it happens with the tiny embedded teacher): the
    # stage then keeps the last checkpoint instead of failing, and says so.
    selection_note: str | None = None


@dataclass
class SFTStageResult:
    """Everything the notebook shows after the stage ran."""

    outcome: TrainOutcome
    selection: Selection
    records: dict[str, Any]
    instructions: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    base_answers: list[Answer] = field(default_factory=list)
    tuned_answers: list[Answer] = field(default_factory=list)


def load_data(cfg: SFTStageConfig) -> SFTData:
    """Training and held-out records, capped by MAX_TRAIN_EXAMPLES / MAX_HELDOUT_EXAMPLES; fails fast when empty."""
    train_path, heldout_path = resolve_data_paths(cfg.run_dir, cfg.train_data_path, cfg.heldout_data_path)
    train = load_records(train_path, "TRAIN_DATA_PATH", cfg.skip_invalid_examples)
    if cfg.max_train_examples:
        train = train.select(range(min(cfg.max_train_examples, len(train))))
    heldout, note = None, None
    if heldout_path:
        try:
            heldout = load_records(heldout_path, "HELDOUT_DATA_PATH", cfg.skip_invalid_examples)
        except ParameterError as exc:
            if cfg.heldout_data_path or "empty" not in exc.problem:
                raise  # a file the user named must be usable
            note = (f"stage 2 produced no usable held-out example ({heldout_path}); SELECTION={cfg.selection!r} "
                    "cannot run, so the last checkpoint is kept")
    if heldout is not None and cfg.max_heldout_examples:
        heldout = heldout.select(range(min(cfg.max_heldout_examples, len(heldout))))
    if cfg.selection != "last" and heldout is None and note is None:
        raise ParameterError("SELECTION", f"{cfg.selection!r} needs a held-out set and none was found",
                             "set HELDOUT_DATA_PATH, run stage 2 (it writes data/heldout.jsonl), or SELECTION='last'")
    return SFTData(train, heldout, train_path, heldout_path, note if cfg.selection != "last" else None)


@dataclass(frozen=True)
class SelectionPrompt:
    """SELECTION_PROMPT='official': the official validation's prompt file, filled per instruction."""

    template: str
    source: dict[str, Any]

    def __call__(self, instruction: str) -> str:
        return self.template.format(instruction=instruction)


def selection_prompt(cfg: SFTStageConfig) -> SelectionPrompt | None:
    """Fetched before training, so a missing file stops the stage before any model is loaded."""
    if cfg.selection_prompt != "official":
        return None
    file = resolve("instruct_skillmix", OFFICIAL_EVAL_PROMPT, cfg.instruct_skillmix_repo)
    return SelectionPrompt(file.read_text(), file.describe())


@dataclass(frozen=True)
class AnswerModel:
    """A model stage 3 asks: `load(dtype)` gives (model, tokenizer) in memory for transformers; `folder()` gives a
    complete checkpoint folder for a vLLM engine (None: the model exists only in memory, transformers answers).
    `tokenizer()` gives the tokenizer that renders the prompts and the stop ids for the engine (None: the folder's)."""

    load: Callable[[str], tuple[Any, Any]]
    folder: Callable[[], str] | None = None
    tokenizer: Callable[[], tuple[Any, list[int]]] | None = None


def _answer_with_checkpoint(cfg: SFTStageConfig, base_model_path: str, prompt: SelectionPrompt | None = None):
    def answer(checkpoint: Path, instructions: list[str]) -> list[str]:
        model = AnswerModel(lambda dtype: _load_checkpoint(checkpoint, base_model_path, dtype),
                            lambda: str(materialise_checkpoint(checkpoint, base_model_path)))
        answers = _answers(model, instructions, cfg, f"answering with {checkpoint.name}",
                           {**selection_sampling(cfg), "prompt_fn": prompt})
        return [a.text for a in answers]

    return answer


def _load_checkpoint(checkpoint: Path, base_model_path: str, dtype: str = "float32") -> tuple[Any, Any]:
    if (checkpoint / "adapter_config.json").exists():
        return load_merged(checkpoint, base_model_path, dtype)
    return load_for_generation(checkpoint, dtype)


def _base_answer_model(cfg: SFTStageConfig, base_path: str, spec: TemplateSpec) -> AnswerModel:
    """The untuned base model asked through the trained template. An engine serves the base folder only when the
    template adds no token (an added token exists only in the in-memory model, with its seeded embedding row)."""
    def templated() -> tuple[Any, list[int]]:
        from transformers import AutoTokenizer  # heavy: transformers loads only when a tokenizer is needed

        tokenizer = AutoTokenizer.from_pretrained(base_path)
        end_id = install_template(spec, tokenizer)
        return tokenizer, sorted({end_id, tokenizer.eos_token_id} - {None})  # the stops install_template sets

    folder = None if spec.tokens_to_add else (lambda: base_path)
    return AnswerModel(lambda dtype: prepare_model(cfg, dtype)[:2], folder, templated)


def answer_engine(cfg: SFTStageConfig) -> dict[str, Any]:
    """Where and how stage 3's answers are decoded (device, precision, engine and its version), for the manifest."""
    device = best_device()
    engine = resolve_engine(cfg.local_engine, device)
    python = find_vllm_python()
    version = vllm_version(python) if engine == "vllm" and python else transformers_version()
    return {**describe_placement(device, resolve_dtype(cfg.local_dtype, device)), "engine": engine,
            "engine_version": version,
            "batch_size": cfg.generation_batch_size or batch_size_for(device)}


def run_sft_stage(cfg: SFTStageConfig, run: Run | None = None, judge_client: Any = None,
                  data: SFTData | None = None) -> SFTStageResult | None:
    """Train, select the best checkpoint, answer held-out instructions, record everything in the run folder.

    Returns None on non-main processes of a multi-process launch (they only take part in training).
    """
    cfg.validate()
    data = data or load_data(cfg)
    if data.selection_note:
        print(f"NOTE: {data.selection_note}")
        cfg = replace(cfg, selection="last")
    resolve_model_path(cfg.base_model, "BASE_MODEL")  # a bad BASE_MODEL fails here, before anything heavy
    judge = load_named_judge(cfg.selection_judge, "SELECTION_JUDGE") if cfg.selection == "judge" else None
    prompt = selection_prompt(cfg) if cfg.selection == "judge" else None
    cfg = with_planned_examples(cfg)  # on every process: the batch rule must give all ranks the same batch
    plan = cfg.launch_plan()  # None: train here; a launch this machine cannot run fails now, before any model
    main = process_rank() == 0
    if cfg.selection == "judge" and judge_client is None and main:
        judge_client = cfg.connect(cfg.judge(), STAGE)
    if main:  # other processes of a multi-process launch only train: they never touch the run folder
        run = run or Run(cfg.run_dir)
        run.begin_stage(STAGE, cfg.as_params(), seeds={"seed": cfg.seed})
    sft_dir = (run.path if run else Path(cfg.run_dir).expanduser().resolve()) / layout.SFT_CHECKPOINTS
    held = data.heldout
    n_answer = min(cfg.selection_examples, len(held)) if held is not None else 0
    instructions = _instructions(held, n_answer)
    references = [str(r["output"]) for r in held.select(range(n_answer))] if n_answer else []

    if is_accelerator(best_device()):
        release_models()  # an in-process judge must not hold the GPU while training (on a CPU it stays loaded)
    stop_engines()  # nor an engine, on any device
    if plan is None:
        outcome = train_here(cfg, data, sft_dir)
        if not main:
            return None
    else:
        outcome = run_launched(cfg, plan)
        outcome.extra["accelerate_config"] = plan.accelerate_config
        run.set_stage_info("launch", {"num_processes": plan.num_processes, "accelerate_config": plan.accelerate_config,
                                      "command": launch_command(cfg, plan.accelerate_config, plan.num_processes)})
    spec, base_path = outcome.template, outcome.base_model_path

    selection = _select(cfg, outcome, judge_client, instructions, references, base_path, judge, prompt)
    best_dir = Path(selection.best_checkpoint)
    tuned = _answers(AnswerModel(lambda dtype: load_for_generation(best_dir, dtype), lambda: str(best_dir)),
                     instructions, cfg, "fine-tuned answers")
    # The base model answers after training (not before), so a multi-GPU run never holds two copies at once.
    n_compare = min(cfg.compare_examples, n_answer)
    base_answers = (_answers(_base_answer_model(cfg, base_path, spec), instructions[:n_compare], cfg,
                             "base model answers") if n_compare else [])
    if not cfg.keep_checkpoints:
        _remove_other_checkpoints(outcome.checkpoints, best_dir)
    write_selection(run, selection)
    _save_answers(run, instructions, references, tuned)
    records = _record_all(run, cfg, outcome, selection, tuned)
    run.set_stage_info("template", spec.to_dict())
    run.set_stage_info("answers", answer_engine(cfg))
    run.set_stage_info("data", {"train": str(data.train_path), "heldout": str(data.heldout_path)})
    if data.selection_note:
        run.set_stage_info("selection_fallback", data.selection_note)
    run.end_stage(STAGE)
    return SFTStageResult(outcome, selection, records, instructions, references, base_answers, tuned)


def train_here(cfg: SFTStageConfig, data: SFTData, sft_dir: Path) -> TrainOutcome:
    """Train in this process: alone, or as one process of an `accelerate launch`."""
    prepared = prepare_model(cfg)
    outcome = train_sft(cfg, data.train, data.heldout, sft_dir, model_tokenizer=prepared)
    outcome.extra.pop("trainer", None)
    del prepared
    gc.collect()
    return outcome


def train_launched(cfg: SFTStageConfig, report: Path) -> None:
    """One process of the launch `run_sft_stage` started (`--train-only`): it trains, and the main process writes
    the outcome into `report`. Nothing else is written: the launching stage selects, answers and records."""
    die_with_parent()
    try:
        cfg.validate()
        data = load_data(cfg)
        cfg = with_planned_examples(cfg)
        outcome = train_here(cfg, data, Path(cfg.run_dir).expanduser().resolve() / layout.SFT_CHECKPOINTS)
        if process_rank() == 0:
            (report / OUTCOME_FILE).write_text(json.dumps(outcome.to_json(), default=str))
    except BaseException as exc:
        write_failure(report, exc, process_rank())
        raise


def preview_example(cfg: SFTStageConfig, record: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The template applied to one record, tokenised as in training (tokenizer only: no model is loaded).

    Returns (template spec, tokenised example, tokenizer) for `helpers.sft.data.masked_view`.
    """
    from transformers import AutoTokenizer  # heavy: transformers loads only when a tokenizer is needed

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.base_model, "BASE_MODEL"))
    spec = build_template(cfg.chat_template, tokenizer)
    install_template(spec, tokenizer)
    return spec, tokenize_record(tokenizer, record, cfg.max_length, spec.end_of_turn,
                                 spec.learns_assistant_header), tokenizer


def selection_sampling(cfg: SFTStageConfig) -> dict[str, Any]:
    """How the answers judged for checkpoint selection are decoded (greedy when SELECTION_TEMPERATURE is 0)."""
    return {"temperature": cfg.selection_temperature, "top_p": cfg.selection_top_p, "seed": cfg.seed}


def _answers(model: AnswerModel, instructions: list[str], cfg: SFTStageConfig, desc: str,
             sampling: dict[str, Any] | None = None) -> list[Answer]:
    """Answer on the best device with LOCAL_ENGINE, then free the model's memory: an engine is stopped and an
    in-process model dropped, so the next checkpoint (or training) finds the GPU free."""
    if not instructions:
        return []
    device = best_device()
    dtype = resolve_dtype(cfg.local_dtype, device)
    if resolve_engine(cfg.local_engine, device) == "vllm" and model.folder is not None:
        tokenizer, stop_ids = model.tokenizer() if model.tokenizer is not None else (None, None)
        try:
            return engine_answers(model.folder(), instructions, cfg.max_new_tokens, desc, dtype=dtype, device=device,
                                  tokenizer=tokenizer, stop_ids=stop_ids, **(sampling or {}))
        finally:
            stop_engines()
    loaded, tokenizer = model.load(dtype)
    loaded = _to_accelerator(loaded, device)
    answers = generate_answers(loaded, tokenizer, instructions, cfg.max_new_tokens,
                               cfg.generation_batch_size or batch_size_for(device), desc, **(sampling or {}))
    del loaded
    release_accelerator_memory()
    return answers


def _to_accelerator(model: Any, device: str | None = None) -> Any:
    """The model on `device` (the best one by default); on a CPU with the chosen thread count."""
    return place(model, device or best_device())


def _instructions(held: Any, n: int) -> list[str]:
    return [record_to_messages(dict(r))[0]["content"] for r in held.select(range(n))] if n else []


def planned_examples(run_dir: str | Path) -> int:
    """Stage 2's planned training examples (its NUM_EXAMPLES) as recorded in the run folder; 0 when unknown.

    Reads the results file without opening a `Run`, which would create folders: every process of a
    multi-process launch calls this.
    """
    path = Path(run_dir).expanduser().resolve() / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    return int(results.get(GENERATE_STAGE, {}).get("num_planned") or 0)


def with_planned_examples(cfg: SFTStageConfig) -> SFTStageConfig:
    """PLANNED_EXAMPLES=0 on the run's own data: take stage 2's planned count, so the batch rule sees the plan."""
    if cfg.planned_examples or cfg.train_data_path:
        return cfg
    return replace(cfg, planned_examples=planned_examples(cfg.run_dir))


def _select(cfg: SFTStageConfig, outcome: TrainOutcome, judge_client: Any, instructions: list[str],
            references: list[str], base_path: str, judge: Any = None,
            prompt: SelectionPrompt | None = None) -> Selection:
    """Apply SELECTION; the chosen checkpoint is returned as a standalone model folder."""
    checkpoints = outcome.checkpoints
    if not checkpoints:
        raise RuntimeError("training saved no checkpoint: check SAVE_STRATEGY / SAVE_EVERY against the number of steps")
    losses = {c.name: heldout_losses(outcome.log_history).get(int(c.name.split("-")[-1])) for c in checkpoints}
    scores: dict[str, Any] = {name: {"heldout_loss": loss} for name, loss in losses.items()}
    if cfg.selection == "heldout_loss":
        best, _ = select_by_heldout_loss(checkpoints, outcome.log_history)
    elif cfg.selection == "judge":
        tie = {k: v for k, v in losses.items() if v is not None}
        best, judged = select_by_judge(checkpoints, _answer_with_checkpoint(cfg, base_path, prompt), judge_client,
                                       instructions, references, cfg.seed, tie_break=tie,
                                       judge=judge or cfg.selection_judge)
        for name, stats in judged.items():
            scores[name].update(stats)
    else:
        best = checkpoints[-1]
    best_dir = materialise_checkpoint(best, base_path)
    details = {"checkpoint": best.name, "base_model": cfg.base_model, "use_lora": cfg.use_lora,
               "training_processes": outcome.extra.get("world_size", 1)}
    if "accelerate_config" in outcome.extra:
        details["accelerate_config"] = outcome.extra["accelerate_config"]
    if cfg.selection == "judge":
        details["selection_decoding"] = {**selection_sampling(cfg), "max_new_tokens": cfg.max_new_tokens,
                                         "prompt": prompt.source if prompt else "chat template",
                                         "judge": cfg.selection_judge}
    return Selection(str(best_dir), cfg.selection, scores, outcome.template.name, details)


def _remove_other_checkpoints(checkpoints: list[Path], keep: Path) -> None:
    for checkpoint in checkpoints:
        if checkpoint not in (keep, keep.parent):
            shutil.rmtree(checkpoint, ignore_errors=True)


def _save_answers(run: Run, instructions: list[str], references: list[str], answers: list[Answer]) -> Path:
    path = run.artifact(layout.SFT_HELDOUT_ANSWERS)
    with path.open("w") as fh:
        for ins, ref, ans in zip(instructions, references, answers):
            fh.write(json.dumps({"instruction": ins, "output": ans.text, "stopped_by_eos": ans.stopped,
                                 "new_tokens": ans.new_tokens, "reference": ref}, ensure_ascii=False) + "\n")
    return path


def _record_all(run: Run, cfg: SFTStageConfig, outcome: TrainOutcome, selection: Selection,
                answers: list[Answer]) -> dict[str, Any]:
    values = {
        "train_loss_final": outcome.train_loss_final,
        "heldout_loss": outcome.heldout_loss,
        "train_tokens_per_s": round(outcome.train_tokens_per_s, 2),
        "peak_rss_gb": round(outcome.peak_rss_gb, 3),
        "best_checkpoint": selection.best_checkpoint,
        "num_train_examples": outcome.num_train_examples,
        "num_truncated_examples": outcome.num_truncated,
        "num_dropped_examples": outcome.extra.get("num_dropped", 0),
        "eos_stop_rate": eos_stop_rate(answers),
        "train_seconds": round(outcome.train_seconds, 2),
    }
    for name, value in values.items():
        run.record(name, value, stage=STAGE)
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.sft", description="Stage 3: vanilla SFT with TRL.")
    parser.add_argument("--config", help="YAML file of UPPER_CASE parameters (configs/sft/*.yaml)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", action="extend",
                        help="override parameters, e.g. --set RUN_DIR=runs/x MAX_STEPS=10")
    parser.add_argument("--launch-command", choices=ACCELERATE_CONFIGS, metavar="ACCELERATE_CONFIG",
                        help="print the `accelerate launch` command for this configuration with "
                             "configs/accelerate/<ACCELERATE_CONFIG>.yaml (ddp, fsdp, deepspeed_zero3) and exit")
    parser.add_argument("--num-processes", type=int, default=8, help="GPUs for --launch-command (default 8)")
    parser.add_argument("--train-only", metavar="FOLDER", type=Path,
                        help="as one process of the launch the stage starts itself: train, write the outcome into "
                             "FOLDER, and leave selection, answers and records to the stage")
    args = parser.parse_args(argv)
    cfg = SFTStageConfig.load(args.config, args.set)
    if args.launch_command:
        print(launch_command(cfg, args.launch_command, args.num_processes))
        return 0
    record_writes_under(cfg.run_dir)
    if args.train_only:
        train_launched(cfg, args.train_only)
        return 0
    result = run_sft_stage(cfg)
    if result is not None:
        print(json.dumps(result.records, indent=2))
    return 0

