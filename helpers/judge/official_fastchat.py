"""FastChat's MT-Bench judges and reference answers, read at run time through the resolver of official files.

`MT_BENCH_JUDGE="fastchat:single-v1"` grades as FastChat's `llm_judge` does: the prompts of `judge_prompts.jsonl`
(single-v1 for turn 1, single-v1-multi-turn for turn 2; the single-math-v1 pair with GPT-4's reference answers from
`reference_answer/gpt-4.jsonl` for math, reasoning and coding), temperature 0, up to 2,048 judge tokens, and the
rating read with FastChat's two regexes (first `[[x]]`, else first `[x]`; no match = unparsed, left out).
Answers are sampled with FastChat's per-category temperatures and 1,024 new tokens.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..llm.types import Message
from ..official import OfficialFile, resolve
from ..params import ParameterError

OWNER = "fastchat"
JUDGE_PROMPTS = "fastchat/llm_judge/data/judge_prompts.jsonl"
QUESTIONS = "fastchat/llm_judge/data/mt_bench/question.jsonl"
REFERENCE_ANSWERS = "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl"
NEED_REFERENCE = ("math", "reasoning", "coding", "arena-hard-200")
# Answer sampling of FastChat's gen_model_answer / gen_api_answer: temperature per category, 0.7 otherwise.
TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
                "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0}
DEFAULT_TEMPERATURE = 0.7
ANSWER_MAX_TOKENS = 1024
JUDGE_MAX_TOKENS = 2048
JUDGE_TEMPERATURE = 0.0
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
FAMILIES = {"single-v1": ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn")}


def answer_temperature(category: str) -> float:
    return TEMPERATURES.get(category, DEFAULT_TEMPERATURE)


@dataclass
class FastChatJudge:
    """One prompt of judge_prompts.jsonl."""

    name: str
    system_prompt: str
    prompt_template: str
    output_format: str
    source: dict[str, Any] = field(default_factory=dict)
    kind: str = "single"
    owner: str = OWNER

    def sampling(self) -> dict[str, Any]:
        return {"max_tokens": JUDGE_MAX_TOKENS, "temperature": JUDGE_TEMPERATURE}

    def messages(self, **values: Any) -> list[Message]:
        return [{"role": "system", "content": self.system_prompt},
                {"role": "user", "content": self.prompt_template.format(**values)}]

    def describe(self) -> dict[str, Any]:
        return {"name": f"{OWNER}:{self.name}", "kind": self.kind, "prompt_source": self.source,
                "sampling": self.sampling(), "output_format": self.output_format}


@dataclass
class FastChatJudgeSet:
    """The four prompts FastChat uses together for single-answer grading, and GPT-4's reference answers."""

    name: str
    plain: FastChatJudge
    math: FastChatJudge
    plain_multi_turn: FastChatJudge
    math_multi_turn: FastChatJudge
    references: dict[str, list[str]]
    kind: str = "single"
    owner: str = OWNER

    def pick(self, category: str, turn: int) -> FastChatJudge:
        guided = category in NEED_REFERENCE
        if turn == 1:
            return self.math if guided else self.plain
        return self.math_multi_turn if guided else self.plain_multi_turn

    def describe(self) -> dict[str, Any]:
        return {"name": f"{OWNER}:{self.name}", "kind": self.kind,
                "prompts": [j.name for j in (self.plain, self.math, self.plain_multi_turn, self.math_multi_turn)],
                "prompt_source": self.plain.source, "sampling": self.plain.sampling(),
                "reference_answers": REFERENCE_ANSWERS, "rating": "first [[x]], else first [x] (FastChat)"}


def _read_jsonl(file: OfficialFile) -> list[dict[str, Any]]:
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def load_fastchat_judges(name: str = "single-v1", repo: str = "", parameter: str = "MT_BENCH_JUDGE") -> FastChatJudgeSet:
    """FastChat's grading prompts named by their family (`single-v1`), from a clone or the pinned download."""
    family = next((f for f, members in FAMILIES.items() if name in members), None)
    if family is None:
        raise ParameterError(parameter, f"FastChat has no single-answer judge family {name!r}",
                             "use fastchat:single-v1 (it brings single-math-v1 and the multi-turn prompts)")
    prompts_file = resolve(OWNER, JUDGE_PROMPTS, repo)
    prompts = {row["name"]: row for row in _read_jsonl(prompts_file)}
    missing = [m for m in FAMILIES[family] if m not in prompts]
    if missing:
        raise ParameterError("FASTCHAT_REPO", f"{JUDGE_PROMPTS} lacks {missing}", "use FastChat at the pinned commit")
    source = prompts_file.describe()
    judges = [FastChatJudge(m, prompts[m]["system_prompt"], prompts[m]["prompt_template"],
                            prompts[m].get("output_format", "[[rating]]"), source) for m in FAMILIES[family]]
    references = {str(row["question_id"]): list(row["choices"][0]["turns"])
                  for row in _read_jsonl(resolve(OWNER, REFERENCE_ANSWERS, repo))}
    return FastChatJudgeSet(family, *judges, references=references)


def parse_rating(text: str) -> float | None:
    """FastChat's reading of a single-answer grade: the first `[[x]]`, else the first `[x]`; None when neither."""
    match = _RATING.search(text or "") or _RATING_BACKUP.search(text or "")
    if not match:
        return None
    try:
        return float(ast.literal_eval(match.group(1)))
    except (ValueError, SyntaxError):
        return None


def grading_values(question: Mapping[str, Any], answers: list[str], turn: int,
                   references: Mapping[str, list[str]]) -> dict[str, str]:
    """The placeholders FastChat fills for one question, turn and (for math/reasoning/coding) reference answer."""
    refs = list(references.get(str(question["id"]), [])) + ["", ""]
    if turn == 1:
        values = {"question": question["turns"][0], "answer": answers[0]}
    else:
        values = {"question_1": question["turns"][0], "question_2": question["turns"][1],
                  "answer_1": answers[0], "answer_2": answers[1]}
    if question.get("category") in NEED_REFERENCE:
        values["ref_answer_1"] = refs[0]
        if turn == 2:
            values["ref_answer_2"] = refs[1]
    return values
