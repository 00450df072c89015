"""WildBench's own evaluation templates (v2), read at run time, and the two numbers the paper reports from them.

* `WILDBENCH_JUDGE="wildbench:score.v2"`: checklist-guided 1-10 score per task (`eval_template.score.v2.md`);
  WB-Score = weighted macro average over task groups of (mean score - 5) * 2, times 10 on the leaderboard.
* `WB_REWARD_JUDGE="wildbench:pairwise.v2"`: the candidate against a reference model's answer
  (`eval_template.pairwise.v2.md`, answers A/B in a seeded random order). WB-Reward: +100 for "much better" (A++ /
  B++ on the candidate's side), +50 slightly better, 0 tie, -50, -100, averaged over the tasks; with K = -1 (the
  paper's setting) no length margin turns a slight win into a tie. The paper's reference model is
  gpt-4-turbo-2024-04-09.

Both templates take the conversation history ("USER: ...\\n\\nASSISTANT: ...\\n\\n"), the last user query and the
task's checklist as a markdown list, as WildBench's scripts fill them, each text cut at 1,000 words (their
`--max_words_to_eval 1000`); the judge runs at temperature 0 with 1,024 tokens. As in WildBench's tables, a task where
an answer is empty or had to be cut is not judged: it is left out of WB-Score and of the per-group rewards, and
counts as 0 in the overall WB-Reward (whose denominator is all tasks). One difference: the kit does not send
OpenAI's `response_format: json_object`; the reply's JSON object is read wherever it stands.
"""
from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..llm.types import Message
from ..official import resolve
from ..params import ParameterError
from .metrics import WILDBENCH_GROUP_WEIGHTS

OWNER = "wildbench"
TEMPLATES = {"score.v2": "evaluation/eval_template.score.v2.md",
             "pairwise.v2": "evaluation/eval_template.pairwise.v2.md"}
KINDS = {"score.v2": "checklist", "pairwise.v2": "pairwise"}
JUDGE_MAX_TOKENS = 1024
MAX_WORDS = 1000
TRUNCATION_MARK = "... (truncated)"
EMPTY_RESPONSE = "[This model response is empty.]"
PAPER_REFERENCE_MODEL = "gpt-4-turbo-2024-04-09"
# Reward of each verdict for the response shown as A (B's is the negative).
CHOICE_REWARD_FOR_A = {"A++": 100.0, "A+": 50.0, "A=B": 0.0, "B+": -50.0, "B++": -100.0}


@dataclass
class WildBenchJudge:
    name: str
    template: str
    source: dict[str, Any] = field(default_factory=dict)
    kind: str = "checklist"
    owner: str = OWNER

    def sampling(self) -> dict[str, Any]:
        return {"max_tokens": JUDGE_MAX_TOKENS, "temperature": 0.0}

    def describe(self) -> dict[str, Any]:
        return {"name": f"{OWNER}:{self.name}", "kind": self.kind, "prompt_source": self.source,
                "sampling": self.sampling()}


def load_wildbench_judge(name: str, repo: str = "", parameter: str = "WILDBENCH_JUDGE") -> WildBenchJudge:
    if name not in TEMPLATES:
        raise ParameterError(parameter, f"WildBench has no template {name!r}",
                             f"use one of {', '.join(f'{OWNER}:{t}' for t in TEMPLATES)}")
    file = resolve(OWNER, TEMPLATES[name], repo)
    return WildBenchJudge(name, file.read_text(), file.describe(), KINDS[name])


def history_text(messages: Sequence[Mapping[str, str]]) -> str:
    """Earlier turns of a WildBench conversation, as WildBench writes them into the template."""
    out = ""
    for m in messages:
        if m["role"] == "user":
            out += "USER: " + m["content"] + "\n\n"
        elif m["role"] == "assistant":
            out += "ASSISTANT: " + m["content"] + "\n\n"
    return out


def checklist_text(checklist: Sequence[str]) -> str:
    return "".join(f"- {item}\n" for item in checklist)


def shorten(text: str, max_words: int = MAX_WORDS) -> str:
    """WildBench's cut: the first `max_words` space-separated words and a truncation mark."""
    words = text.split(" ")
    return " ".join(words[:max_words]) + TRUNCATION_MARK if max_words > 0 and len(words) > max_words else text


def not_judged(*outputs: str) -> str | None:
    """Why WildBench's tables leave a task out: an empty or a cut answer (None: it is judged)."""
    if any(not o.strip() for o in outputs):
        return "empty"
    if any(shorten(o) != o for o in outputs):
        return "truncated"
    return None


def _shown(text: str) -> str:
    return shorten(text) if text.strip() else EMPTY_RESPONSE


def _context(judge: WildBenchJudge, item: Mapping[str, Any]) -> str:
    return (judge.template.replace("{$history}", shorten(history_text((item.get("messages") or [])[:-1])))
            .replace("{$user_query}", shorten(item["instruction"])))


def score_messages(judge: WildBenchJudge, item: Mapping[str, Any], output: str) -> list[Message]:
    prompt = (_context(judge, item).replace("{$model_output}", _shown(output))
              .replace("{$checklist}", checklist_text(item.get("checklist") or [])))
    return [{"role": "user", "content": prompt}]


def pairwise_messages(judge: WildBenchJudge, item: Mapping[str, Any], a: str, b: str) -> list[Message]:
    prompt = (_context(judge, item).replace("{$candidate_A}", _shown(a)).replace("{$candidate_B}", _shown(b))
              .replace("{$checklist}", checklist_text(item.get("checklist") or [])))
    return [{"role": "user", "content": prompt}]


def parse_json_reply(text: str) -> dict[str, Any] | None:
    """The judge's JSON object (possibly inside a ```json fence, with trailing commas), or None."""
    if not text:
        return None
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    body = re.sub(r",\s*}", "}", text[start:end + 1].replace("\n", " "))
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def parse_score(text: str) -> float | None:
    parsed = parse_json_reply(text)
    try:
        score = float(parsed["score"]) if parsed else None
    except (KeyError, TypeError, ValueError):
        return None
    return score if score is not None and 1 <= score <= 10 else None


def parse_choice(text: str) -> str | None:
    parsed = parse_json_reply(text)
    choice = str(parsed.get("choice", "")).strip() if parsed else ""
    return choice if choice in CHOICE_REWARD_FOR_A else None


def candidate_reward(choice: str | None, candidate_is_a: bool, candidate_length: int = 0,
                     reference_length: int = 0, k: int = -1) -> float | None:
    """The candidate's reward for one verdict; with K >= 0 a slight win by a response longer than the other by more
    than K characters counts as a tie (WildBench's length margin; K = -1 turns it off)."""
    if choice is None:
        return None
    reward = CHOICE_REWARD_FOR_A[choice] * (1 if candidate_is_a else -1)
    if k >= 0 and abs(reward) == 50.0:
        winner_longer = (candidate_length - reference_length) if reward > 0 else (reference_length - candidate_length)
        if winner_longer > k:
            return 0.0
    return reward


def candidate_shown_as_a(item_id: str, seed: int) -> bool:
    return random.Random(f"wildbench-pairwise-{seed}-{item_id}").random() < 0.5


def wb_reward(rewards: Sequence[float | None], groups: Sequence[Sequence[str]],
              skipped: Sequence[str | None] | None = None,
              weights: Mapping[str, float] = WILDBENCH_GROUP_WEIGHTS) -> dict[str, Any]:
    """WB-Reward (-100..100) and its task-macro version (per-group means weighted, divided by the sum of all five
    weights as WildBench's tables do). Tasks not judged (`skipped`: empty or cut answers) add 0 to the overall sum
    but count in its denominator, and stay out of the groups, as in WildBench's tables; unparsed verdicts (None)
    are left out of both and counted."""
    skipped = list(skipped) if skipped is not None else [None] * len(rewards)
    judged = [(r, g) for r, g, s in zip(rewards, groups, skipped) if s is None and r is not None]
    n_skipped = sum(s is not None for s in skipped)
    denominator = len(judged) + n_skipped
    per_group: dict[str, list[float]] = {}
    for r, g in judged:
        for group in set(g):
            per_group.setdefault(group, []).append(r)
    group_means = {g: sum(v) / len(v) for g, v in per_group.items()}
    macro = sum(group_means[g] * weights.get(g, 0.0) for g in group_means) / sum(weights.values()) if judged else None
    return {"wb_reward": sum(r for r, _ in judged) / denominator if judged else None,
            "wb_reward_task_macro": macro, "n_judged": len(judged), "n_skipped": n_skipped,
            "n_unparsed": len(rewards) - len(judged) - n_skipped, "per_group": group_means}
