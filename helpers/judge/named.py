"""Judges by name: the kit's own (a folder under judge/configs/) or an owner's, written `owner:name`.

    alpaca_eval:weighted_alpaca_eval_gpt4_turbo   AlpacaEval's evaluator, read from the alpaca_eval package
    fastchat:single-v1                            FastChat's MT-Bench judge prompts and GPT-4 reference answers
    wildbench:score.v2 / wildbench:pairwise.v2    WildBench's evaluation templates
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..params import ParameterError
from .judging import Judge, PairwiseJudgment, load_judge, pairwise_judgments, require_readable, summarise_pairwise
from .official_alpaca_eval import AlpacaEvalJudge, alpaca_eval_judgments, load_alpaca_eval_judge
from .official_fastchat import load_fastchat_judges
from .official_wildbench import load_wildbench_judge

OWNERS = ("alpaca_eval", "fastchat", "wildbench")


def owner_of(name: str) -> str | None:
    """The owner named by the prefix, or None for the kit's own judges."""
    prefix, sep, _ = str(name).partition(":")
    return prefix if sep and prefix in OWNERS else None


def load_named_judge(name: str, parameter: str = "JUDGE", fastchat_repo: str = "", wildbench_repo: str = "") -> Any:
    """The judge a parameter names; a bad name fails here, before any model call."""
    owner = owner_of(name)
    if owner is None:
        if ":" in str(name) and not str(name).startswith(("/", ".")):
            raise ParameterError(parameter, f"unknown judge owner in {name!r}",
                                 f"prefix an owner's judge with one of {', '.join(o + ':' for o in OWNERS)}")
        return load_judge(name, parameter)
    inner = str(name).split(":", 1)[1]
    if owner == "alpaca_eval":
        return load_alpaca_eval_judge(inner, parameter)
    if owner == "fastchat":
        return load_fastchat_judges(inner, fastchat_repo, parameter)
    return load_wildbench_judge(inner, wildbench_repo, parameter)


def describe_judge(judge: Any) -> dict[str, Any]:
    """What is recorded next to every number: the judge's name, settings and where its prompt came from."""
    if isinstance(judge, Judge):
        return {**judge.describe(), "prompt_source": {"kit": f"judge/configs/{judge.name}"}}
    return judge.describe()


def prompt_source_text(described: dict[str, Any]) -> str:
    """One line naming a judge's prompt source: the kit's folder, the package version, or repository@commit."""
    source = described.get("prompt_source") or {}
    if "kit" in source:
        return f"kit's own judge {source['kit']}"
    if "package" in source:
        return f"{source['package']} {source['version']} {source['prompt']}"
    return f"{source.get('repository')}@{str(source.get('commit'))[:12]} {source.get('path')} ({source.get('origin')})"


def judge_pairwise(judge_client: Any, instructions: Sequence[str], outputs: Sequence[str],
                   reference_outputs: Sequence[str], seed: int, judge: Any, desc: str = "pairwise judging",
                   parameter: str = "PAIRWISE_JUDGE") -> tuple[list[PairwiseJudgment], list[float] | None]:
    """Each output against its reference with any pairwise judge, the kit's or alpaca_eval's: the one place that
    dispatches on the judge's owner. Returns the judgments (the candidate's side) and, for alpaca_eval judges, its
    preferences in its own convention (what its annotations and LC need); None for the kit's judges. When not one
    reply can be read, it stops with `JudgeUnreadable` rather than let a win rate of nothing be recorded."""
    if isinstance(judge, str):
        judge = load_named_judge(judge, parameter)
    if isinstance(judge, AlpacaEvalJudge):
        judgments, preferences = alpaca_eval_judgments(judge_client, instructions, outputs, reference_outputs, judge,
                                                       desc)
        require_readable(judgments, judge, desc)
        return judgments, preferences
    return pairwise_judgments(judge_client, instructions, outputs, reference_outputs, seed, judge, desc), None


def compare_pairwise(judge_client: Any, instructions: Sequence[str], outputs: Sequence[str],
                     reference_outputs: Sequence[str], seed: int, judge: Any = "alpaca_eval_pairwise",
                     desc: str = "pairwise judging", parameter: str = "PAIRWISE_JUDGE"
                     ) -> tuple[dict[str, Any], list[PairwiseJudgment]]:
    """One set of outputs judged and summarised (win rate, its SE, LC, counts): what stage 3's checkpoint selection
    calls, so SELECTION_JUDGE may name any pairwise judge."""
    judgments, _ = judge_pairwise(judge_client, instructions, outputs, reference_outputs, seed, judge, desc, parameter)
    return summarise_pairwise(judgments), judgments
