"""The tokens a judge's requests carry, counted from the judge's own prompt texts, without calling it.

A dry run needs the input side of every judge request: the judge's template (the kit's prompt files, alpaca_eval's
evaluator prompt, FastChat's or WildBench's templates, all read as the judging code reads them) plus the texts
filled in. Pairwise requests of the kit's and alpaca_eval's judges are rendered exactly as they would be sent; the
owners' rating templates are counted as template plus inserted texts.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..llm.accounting import text_tokens
from ..params import ParameterError
from .judging import Judge, judge_messages
from .named import owner_of
from .official_alpaca_eval import AlpacaEvalJudge, alpaca_eval_requests
from .official_fastchat import JUDGE_MAX_TOKENS as FASTCHAT_MAX_TOKENS
from .official_fastchat import FastChatJudgeSet
from .official_wildbench import JUDGE_MAX_TOKENS as WILDBENCH_MAX_TOKENS


def _messages_tokens(messages: Sequence[dict[str, str]]) -> int:
    return sum(text_tokens(m["content"]) for m in messages)


def reply_cap(judge: Any) -> int:
    """The judge's reply budget in tokens (what it is sent as max_tokens)."""
    if isinstance(judge, FastChatJudgeSet):
        judge = judge.plain
    return int(judge.sampling().get("max_tokens") or 1)


def template_tokens(judge: Any, two_turn: bool = False) -> int:
    """Tokens of the judge's own prompt text, before anything is filled in."""
    if isinstance(judge, FastChatJudgeSet):
        judge = judge.plain_multi_turn if two_turn else judge.plain
    if isinstance(judge, Judge):
        return text_tokens(judge.system + (judge.user_two_turn if two_turn and judge.user_two_turn else judge.user))
    if isinstance(judge, AlpacaEvalJudge):
        return text_tokens(judge.prompt_template)
    texts = [getattr(judge, name, "") for name in ("system_prompt", "prompt_template", "template")]
    return text_tokens("".join(t for t in texts if isinstance(t, str)))


def pairwise_input_tokens(judge: Any, instructions: Sequence[str], outputs: Sequence[str],
                          references: Sequence[str]) -> int:
    """Input tokens of one pairwise judging pass (one request per item), rendered as the judge sends them."""
    if isinstance(judge, AlpacaEvalJudge):
        requests, _ = alpaca_eval_requests(judge, instructions, outputs, references)
        return sum(_messages_tokens(r) for r in requests)
    if isinstance(judge, Judge):
        return sum(_messages_tokens(judge_messages(judge, {"instruction": i, "output_a": o, "output_b": r}))
                   for i, o, r in zip(instructions, outputs, references))
    base = template_tokens(judge)
    return sum(base + text_tokens(i) + text_tokens(o) + text_tokens(r)
               for i, o, r in zip(instructions, outputs, references))


@dataclass(frozen=True)
class MissingJudge:
    """A judge whose owner's prompt files are not at hand (offline, no clone): a dry run still counts its requests
    and reply budget, without its template."""

    name: str
    max_tokens: int

    def sampling(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens}


# The owners' reply budgets, known without their prompt files (alpaca_eval's evaluators ship with the package).
OWNER_REPLY_CAPS = {"fastchat": FASTCHAT_MAX_TOKENS, "wildbench": WILDBENCH_MAX_TOKENS}


def judge_for_estimate(load: Callable[[], Any], name: str) -> tuple[Any, str]:
    """(the judge `load()` returns, "") or, when its files cannot be had here, (a MissingJudge, a note saying so)."""
    try:
        return load(), ""
    except ParameterError as exc:
        owner = owner_of(name)
        if owner not in OWNER_REPLY_CAPS:
            raise
        note = f"{exc.name}'s files not at hand: {name}'s template not counted"
        return MissingJudge(name, OWNER_REPLY_CAPS[owner]), note
