"""Dry run of stage 3: training tokens and GPU-hours, the selection answers, and the selection judge's requests.

Counts follow the stage: NUM_EPOCHS over the training set (or MAX_STEPS x the effective batch), one checkpoint per
epoch or per SAVE_EVERY steps, and with SELECTION='judge' every checkpoint answers the held-out instructions
(SELECTION_EXAMPLES of them) and the judge compares each answer with its reference; then the best checkpoint answers
them once more and the base model answers COMPARE_EXAMPLES. Token counts come from the run's data when stage 2 has
written it, else from stage 2's plan with a typical example length. The held-out loss passes (forward only) are
counted at a third of a training token each.
"""
from __future__ import annotations

import math
from typing import Any

from ..judge.estimate import judge_for_estimate, pairwise_input_tokens, reply_cap
from ..judge.named import load_named_judge
from ..llm.accounting import TYPICAL_REPLY_TOKENS, CostLine, Throughput, text_tokens, typical_reply
from ..params import ParameterError
from .config import SFTStageConfig
from .stage import STAGE, load_data

TYPICAL_INSTRUCTION_TOKENS = 80  # ~60 words, stage 2's assumption for an instruction
FORWARD_SHARE = 1 / 3  # a forward pass costs about a third of a training step (forward + backward)


def _texts(records: Any, limit: int | None = None) -> tuple[list[str], list[str]]:
    rows = [records[i] for i in range(len(records) if limit is None else min(limit, len(records)))]
    return [str(r["instruction"]) for r in rows], [str(r["output"]) for r in rows]


def _data(cfg: SFTStageConfig, planned: tuple[int, int]) -> dict[str, Any]:
    """The training and held-out texts stage 2 wrote, or stand-ins of typical length for the planned counts."""
    try:
        data = load_data(cfg)
    except ParameterError:
        n_train, n_held = planned
        stand_in = ("x" * int(TYPICAL_INSTRUCTION_TOKENS * 4), "x" * int(TYPICAL_REPLY_TOKENS * 4))
        return {"n_train": n_train, "example_tokens": min(cfg.max_length, sum(map(text_tokens, stand_in))),
                "instructions": [stand_in[0]] * n_held, "references": [stand_in[1]] * n_held,
                "basis": f"stage 2's plan ({n_train} + {n_held} examples of a typical length)"}
    instructions, outputs = _texts(data.train)
    lengths = [min(cfg.max_length, text_tokens(i) + text_tokens(o)) for i, o in zip(instructions, outputs)]
    held = _texts(data.heldout) if data.heldout is not None else ([], [])
    return {"n_train": len(lengths), "example_tokens": sum(lengths) / max(len(lengths), 1),
            "instructions": held[0], "references": held[1], "basis": f"the run's data ({data.train_path.name})"}


def _schedule(cfg: SFTStageConfig, n_train: int) -> tuple[float, int]:
    """(sequences trained on, checkpoints saved)."""
    batch = cfg.per_device_batch_size * cfg.gradient_accumulation(n_train)
    steps_per_epoch = max(1, math.ceil(n_train / max(batch, 1)))
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.num_epochs)
    if cfg.save_strategy == "epoch":
        checkpoints = max(1, math.ceil(steps / steps_per_epoch))
    else:
        checkpoints = max(1, steps // max(int(cfg.save_every or steps), 1))
    return float(steps * batch if cfg.max_steps > 0 else n_train * cfg.num_epochs), checkpoints


def estimate_sft(cfg: SFTStageConfig, planned: tuple[int, int], throughput: Throughput,
                 measured_train_tokens_per_s: float | None = None) -> list[CostLine]:
    """Stage 3's lines: training (GPU-hours), answering (GPU-hours) and, with SELECTION='judge', the judge's
    requests. `planned` = (training, held-out) examples stage 2 will write, used when its data is not there yet."""
    data = _data(cfg, planned)
    sequences, checkpoints = _schedule(cfg, data["n_train"])
    n_answer = min(cfg.selection_examples, len(data["instructions"]))
    train_tps = measured_train_tokens_per_s or throughput.train_tokens_per_s
    heldout_tokens = (checkpoints + 1) * sum(min(cfg.max_length, text_tokens(i) + text_tokens(r))
                                             for i, r in zip(data["instructions"], data["references"]))
    trained = round(sequences * data["example_tokens"] + FORWARD_SHARE * heldout_tokens)
    lines = [CostLine(STAGE, "training", cfg.base_model, in_process=True, gpu_tokens=trained, tokens_per_s=train_tps,
                      basis=data["basis"] if not measured_train_tokens_per_s else
                      f"{data['basis']}; throughput measured in RUN_DIR's earlier run",
                      note=f"{sequences:,.0f} sequences x {data['example_tokens']:,.0f} tokens, {checkpoints} "
                           "checkpoints, held-out loss at each")]
    judged = cfg.selection == "judge"
    answers = (checkpoints if judged else 0) * n_answer + n_answer + min(cfg.compare_examples, n_answer)
    per_answer = typical_reply(cfg.max_new_tokens)
    lines.append(CostLine(STAGE, "held-out answers", cfg.base_model, requests=answers, in_process=True,
                          output_tokens=answers * per_answer, output_cap_tokens=answers * cfg.max_new_tokens,
                          gpu_tokens=answers * per_answer, tokens_per_s=throughput.answer_tokens_per_s,
                          basis=data["basis"], note="each checkpoint, the best once more, and the base model"))
    if judged and n_answer:
        judge, missing = judge_for_estimate(lambda: load_named_judge(cfg.selection_judge, "SELECTION_JUDGE"),
                                            cfg.selection_judge)
        instructions, references = data["instructions"][:n_answer], data["references"][:n_answer]
        stand_ins = ["x" * (per_answer * 4)] * n_answer
        cap = reply_cap(judge)
        requests = checkpoints * n_answer
        lines.append(CostLine(STAGE, "selection judge", cfg.judge_model, requests=requests,
                              input_tokens=checkpoints * pairwise_input_tokens(judge, instructions, stand_ins,
                                                                               references),
                              output_tokens=requests * typical_reply(cap), output_cap_tokens=requests * cap,
                              basis=data["basis"],
                              note="; ".join(n for n in (f"{checkpoints} checkpoints x {n_answer} held-out answers",
                                                         missing) if n)))
    return lines
