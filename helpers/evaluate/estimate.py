"""Dry run of stage 4: who answers how many prompts, and how many requests each judge receives.

The counts follow the notebook: every answering model answers every item (none with CANDIDATE_OUTPUTS); the
pairwise judge sees every item once per judged model (student, base, the calibration row); MT-Bench asks both turns
and grades each turn; WildBench's WB-Score and WB-Reward judge every WildBench task once per model (only when
EVAL_SET is 'wildbench'); the shirker probe pays only for answers it replaced (the rest are the cached main
judgments). A set that cannot be read here (offline, no copy) is counted at its published size with replies of
typical length, and the line says so.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..judge.estimate import judge_for_estimate, pairwise_input_tokens, reply_cap, template_tokens
from ..judge.official_fastchat import ANSWER_MAX_TOKENS
from ..judge.official_wildbench import WildBenchJudge, pairwise_messages, score_messages
from ..llm.accounting import TYPICAL_REPLY_TOKENS, CostLine, Throughput, text_tokens, typical_reply
from ..params import ParameterError
from .calibration import CALIBRATION_MODEL, calibration_file
from .candidates import candidate_outputs
from .config import STAGE, EvalConfig
from .official_suite import mt_bench_questions, wildbench_items
from .sets import load_eval_set

# Published sizes, used only when a set cannot be read for the estimate: AlpacaEval 2.0 has 805 instructions,
# WildBench v2 1,024 tasks, FastChat's MT-Bench 80 two-turn questions.
PUBLISHED_SIZES = {"alpaca_eval": 805, "wildbench": 1024, "mt_bench": 80}


def _stand_in(tokens: int) -> str:
    return "x" * int(tokens * 4)


def _items(cfg: EvalConfig) -> tuple[list[dict[str, Any]], str]:
    try:
        return load_eval_set(cfg.eval_set, cfg.eval_source, cfg.n_eval or None), ""
    except ParameterError:
        n = cfg.n_eval or PUBLISHED_SIZES.get(cfg.eval_set, 0)
        item = {"instruction": _stand_in(60), "reference_output": _stand_in(TYPICAL_REPLY_TOKENS),
                "messages": [{"role": "user", "content": _stand_in(60)}] if cfg.eval_set == "wildbench" else [],
                "checklist": [_stand_in(15)] * 5 if cfg.eval_set == "wildbench" else [], "history": "", "id": "x"}
        note = f"{cfg.eval_set} not readable here: {n} items of typical length"
        return [dict(item, id=f"x{i}") for i in range(n)], note


def _questions(cfg: EvalConfig) -> tuple[list[dict[str, Any]], str]:
    try:
        return mt_bench_questions(cfg.mt_bench_source, cfg.n_mt_bench or None, cfg.fastchat_repo), ""
    except ParameterError:
        n = cfg.n_mt_bench or PUBLISHED_SIZES["mt_bench"]
        return ([{"id": i, "category": "writing", "turns": [_stand_in(60), _stand_in(40)], "references": []}
                 for i in range(n)], f"MT-Bench questions not readable here: {n} two-turn questions assumed")


def _published_outputs(path: Any, items: list[dict[str, Any]], parameter: str) -> list[str] | None:
    """A published outputs file's answers for the items, or None when it cannot be had here."""
    try:
        return candidate_outputs(path, items, parameter)[0]
    except ParameterError:
        return None


def _calibration_outputs(cfg: EvalConfig, items: list[dict[str, Any]]) -> list[str] | None:
    try:
        found = calibration_file(cfg.calibration_outputs, cfg.alpaca_eval_repo)
    except ParameterError:  # 'paper' without a clone and offline
        return None
    return _published_outputs(found[0], items, "CALIBRATION_OUTPUTS") if found else None


class _Lines:
    """Collects the stage's lines with the settings they share."""

    def __init__(self, cfg: EvalConfig, throughput: Throughput, note: str) -> None:
        self.cfg, self.throughput, self.lines = cfg, throughput, []
        self.note = note  # said once, on the first line of the stage

    def _note(self, *notes: str) -> str:
        text = "; ".join(n for n in (*notes, self.note) if n)
        self.note = ""
        return text

    def answers(self, part: str, model: str, prompts: Sequence[int], cap: int, in_process: bool) -> None:
        per = typical_reply(cap)
        self.lines.append(CostLine(STAGE, part, model, requests=len(prompts), input_tokens=sum(prompts),
                                   output_tokens=len(prompts) * per, output_cap_tokens=len(prompts) * cap,
                                   in_process=in_process, gpu_tokens=len(prompts) * per if in_process else 0,
                                   tokens_per_s=self.throughput.answer_tokens_per_s if in_process else None,
                                   note=self._note()))

    def judge(self, part: str, judge: Any, requests: int, input_tokens: int, note: str = "") -> None:
        cap = reply_cap(judge)
        self.lines.append(CostLine(STAGE, part, self.cfg.judge_model, requests=requests, input_tokens=input_tokens,
                                   output_tokens=requests * typical_reply(cap), output_cap_tokens=requests * cap,
                                   note=self._note(note)))


def _answerers(cfg: EvalConfig) -> dict[str, tuple[str, bool]]:
    """Role -> (model, in process) of the models that answer (none with CANDIDATE_OUTPUTS)."""
    if cfg.candidate_outputs:
        return {}
    student = cfg.student_model or "stage 3's best checkpoint"
    out = {"student": (student, not cfg.student_base_url)}
    if cfg.compare_base and cfg.base_model:
        out["base"] = (cfg.base_model, True)
    return out


def estimate_evaluation(cfg: EvalConfig, throughput: Throughput,
                        usage: dict[str, dict[str, Any]] | None = None) -> list[CostLine]:
    """Stage 4's lines; `usage` (an earlier run's accounting per role) replaces estimated tokens per request by
    its averages where one line is the role's only one (the judge's averages mix judges otherwise)."""
    items, note = _items(cfg)
    acc = _Lines(cfg, throughput, note)
    answerers = _answerers(cfg)
    prompts = [text_tokens(it["instruction"]) for it in items]
    for role, (model, local) in answerers.items():
        acc.answers(f"{role} answers", model, prompts, cfg.answer_max_tokens, local)
    if cfg.reference == "teacher":
        acc.answers("reference answers (teacher)", cfg.teacher_model, prompts, cfg.answer_max_tokens,
                    not cfg.teacher_base_url)
    stand_in = _stand_in(typical_reply(cfg.answer_max_tokens))
    references = ([it["reference_output"] for it in items] if cfg.reference != "teacher" else [stand_in] * len(items))
    instructions = [it["instruction"] for it in items]
    judged = {role: [stand_in] * len(items) for role in answerers}
    if cfg.candidate_outputs:
        judged["student"] = (_published_outputs(cfg.candidate_outputs, items, "CANDIDATE_OUTPUTS")
                             or [stand_in] * len(items))
    if cfg.calibration_outputs:
        judged[CALIBRATION_MODEL] = _calibration_outputs(cfg, items) or [stand_in] * len(items)
    pairwise, missing = judge_for_estimate(lambda: cfg.named_judge("PAIRWISE_JUDGE"), cfg.pairwise_judge)
    per_model = {m: pairwise_input_tokens(pairwise, instructions, outs, references) for m, outs in judged.items()}
    if items and judged:
        acc.judge("pairwise judge", pairwise, len(items) * len(judged), sum(per_model.values()),
                  "; ".join(n for n in (f"models judged: {', '.join(judged)}", missing) if n))
    _probe(cfg, acc, pairwise, items, per_model.get("student"))
    if cfg.run_mt_bench and answerers:
        _mt_bench(cfg, acc, answerers)
    tasks = [items[i] for i in wildbench_items(items)]
    outputs_by_model = {m: o for m, o in judged.items() if m != CALIBRATION_MODEL}
    if cfg.run_wildbench and tasks and outputs_by_model:
        _wildbench(cfg, acc, tasks, len(outputs_by_model), stand_in)
    judges = [line for line in acc.lines if not line.in_process and line.model == cfg.judge_model]
    for line in acc.lines:  # the accounting is per role: the judge's averages mix judges when it has several parts
        if not any(line is j for j in judges):
            line.with_run_averages((usage or {}).get(line.part.split(" ")[0]))
        elif len(judges) == 1:
            line.with_run_averages((usage or {}).get("judge"))
    return acc.lines


def _probe(cfg: EvalConfig, acc: _Lines, judge: Any, items: list[dict[str, Any]], student_tokens: int | None) -> None:
    """The shirker probe re-judges only the answers it replaced: the sets are nested (one seeded order), so each
    kind pays for the largest fraction's share; unchanged answers are the main judging's cached calls."""
    fractions = [f for f in cfg.shirker_probe_fractions if f > 0]
    if not (fractions and items and student_tokens is not None):
        return
    replaced = round(max(fractions) * len(items))
    requests = replaced * len(cfg.shirker_probe_kinds)
    acc.judge("shirker probe", judge, requests, round(requests * student_tokens / len(items)),
              "at most: only replaced answers that differ from the student's are new requests")


def _mt_bench(cfg: EvalConfig, acc: _Lines, answerers: dict[str, tuple[str, bool]]) -> None:
    questions, note = _questions(cfg)
    cap = ANSWER_MAX_TOKENS if cfg.mt_bench_sampling == "fastchat" else cfg.answer_max_tokens
    per = typical_reply(cap)
    first = [text_tokens(q["turns"][0]) for q in questions]
    second = [text_tokens(q["turns"][0]) + per + text_tokens(q["turns"][1]) for q in questions if len(q["turns"]) > 1]
    for role, (model, local) in answerers.items():
        acc.answers(f"{role} MT-Bench answers", model, first + second, cap, local)
    # the kit's rating judges with the run's JUDGE_MAX_TOKENS, as the notebook grades
    judge, missing = judge_for_estimate(lambda: cfg.rating_judge(cfg.mt_bench_judge), cfg.mt_bench_judge)
    one = template_tokens(judge) + per
    two = template_tokens(judge, two_turn=True) + 2 * per
    tokens = sum(one + t for t in first) + sum(two + t for t in second)
    acc.judge("MT-Bench judge", judge, (len(first) + len(second)) * len(answerers), tokens * len(answerers),
              "; ".join(n for n in (note, "every turn graded", missing) if n))


def _wildbench(cfg: EvalConfig, acc: _Lines, tasks: list[dict[str, Any]], models: int, answer: str) -> None:
    judge, missing = judge_for_estimate(lambda: cfg.rating_judge(cfg.wildbench_judge), cfg.wildbench_judge)
    if isinstance(judge, WildBenchJudge):
        tokens = sum(text_tokens(m["content"]) for t in tasks for m in score_messages(judge, t, answer))
    else:
        tokens = sum(template_tokens(judge) + text_tokens(t["instruction"] + answer) for t in tasks)
    acc.judge("WB-Score judge", judge, len(tasks) * models, tokens * models, missing)
    if cfg.run_wb_reward:
        reward, missing = judge_for_estimate(lambda: cfg.named_judge("WB_REWARD_JUDGE"), cfg.wb_reward_judge)
        if isinstance(reward, WildBenchJudge):
            tokens = sum(text_tokens(m["content"]) for t in tasks
                         for m in pairwise_messages(reward, t, answer, answer))
        else:
            tokens = sum(template_tokens(reward) + text_tokens(t["instruction"] + 2 * answer) for t in tasks)
        acc.judge("WB-Reward judge", reward, len(tasks) * models, tokens * models, missing)
