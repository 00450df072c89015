"""LLM judges: load a judge by name, ask it through the LLM layer, turn its replies into preferences or scores.

A judge is data, not code: a folder under `helpers/judge/configs/<name>/` (or any folder given by path) holding
`config.yaml` (kind, labels, sampling, how to parse) and its prompt files (`system.txt`, `user.txt`, optionally
`user_two_turn.txt`). Swapping the judge model is a parameter (`JUDGE_*`); swapping the protocol is a folder.

Pairwise preferences are expressed from the *candidate's* side everywhere in the kit: 1.0 = the candidate output is
better than the reference output, 0.0 = the reference is better, 0.5 = a tie; `None` = the judge's reply could not
be read (counted and excluded, never guessed).
"""
from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..llm.types import ChatResult, Message
from ..params import ParameterError
from ..prompts import fill, fingerprint, read_prompt
from .metrics import length_controlled_win_rate, win_rate_stats
from .small_numbers import degenerate_fit_flag

JUDGES_DIR = Path(__file__).resolve().parent / "configs"
JUDGE_KINDS = ("pairwise", "single", "checklist")


@dataclass
class Judge:
    """A judging protocol: prompts plus how to sample and how to read the verdict."""

    name: str = field(metadata={"help": "Folder name of the judge (or the path it was loaded from)."})
    kind: str = field(metadata={"help": "pairwise (two outputs, pick one) | single (1-10 rating) | checklist (1-10 with a checklist)."})
    system: str = field(default="", metadata={"help": "System prompt; empty for none."})
    user: str = field(default="", metadata={"help": "User prompt template with {placeholders}."})
    user_two_turn: str = field(default="", metadata={"help": "Template for grading the second turn of a two-turn chat."})
    description: str = field(default="", metadata={"help": "One line saying what the judge does."})
    labels: list[str] = field(default_factory=lambda: ["A", "B"], metadata={"help": "Pairwise labels, first shown first."})
    max_tokens: int = field(default=512, metadata={"help": "Generation budget for the judge's reply."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of the judge."})
    top_logprobs: int = field(default=0, metadata={"help": "Alternatives asked for at the first token (0 = do not ask)."})
    verdict_pattern: str = field(default="", metadata={"help": "Regex the whole written verdict must match (spaces around it aside); group 1 is the label. Empty: the label alone, light punctuation allowed (\"A\", \"(B)\", \"**A**\")."})
    rating_patterns: list[str] = field(default_factory=list, metadata={"help": "Regexes of the rating the reply must END with (trailing spaces, '*', '_', '.', '!' aside), tried in order; group 1 is the rating."})
    rating_json_key: str = field(default="", metadata={"help": "The reply must be one JSON object (a ```json fence allowed) and this key holds the rating; rating_patterns are then not used."})
    rating_range: list[float] = field(default_factory=lambda: [1, 10], metadata={"help": "Valid ratings; anything outside is unparsed."})
    rating_prefix: str = field(default="", metadata={"help": "What the judge writes just before its rating: after it, "
                                                             "a probability-weighted grade is read where an "
                                                             "in-process judge wrote none (weighted_grades.py); "
                                                             "empty = never."})
    needs_reference: bool = field(default=False, metadata={"help": "Whether the prompt needs a reference solution."})
    path: str = field(default="", metadata={"help": "Folder the judge was read from."})

    def sampling(self) -> dict[str, Any]:
        """The sampling settings sent with every judge call (part of the cache key)."""
        out: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.top_logprobs:
            out["top_logprobs"] = self.top_logprobs
        return out

    def describe(self) -> dict[str, Any]:
        """Settings recorded next to every number the judge produced; the prompts (which live in the repo) by their
        fingerprint, so a changed judge prompt is visible in the manifest."""
        d = asdict(self)
        d["prompt_fingerprint"] = fingerprint([f"{d.pop(key)}\n" for key in ("system", "user", "user_two_turn")])
        d.pop("path")
        return d


def available_judges() -> list[str]:
    return sorted(p.name for p in JUDGES_DIR.iterdir() if (p / "config.yaml").exists())


def load_judge(name_or_path: str, parameter: str = "JUDGE") -> Judge:
    """Load a bundled judge by name, or a judge folder by path; a bad name fails before any model call."""
    folder = Path(name_or_path).expanduser()
    if not (folder / "config.yaml").exists():
        folder = JUDGES_DIR / str(name_or_path)
    if not (folder / "config.yaml").exists():
        raise ParameterError(parameter, f"no judge named {name_or_path!r}",
                             f"use one of {', '.join(available_judges())} or a folder with config.yaml and user.txt")
    config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    known = {f for f in Judge.__dataclass_fields__} - {"name", "system", "user", "user_two_turn", "path"}
    unknown = set(config) - known
    if unknown:
        raise ParameterError(parameter, f"judge {folder.name!r} has unknown settings {sorted(unknown)}",
                             f"use only {sorted(known)} in config.yaml")
    if config.get("kind") not in JUDGE_KINDS:
        raise ParameterError(parameter, f"judge {folder.name!r} has kind {config.get('kind')!r}",
                             f"set kind to one of {JUDGE_KINDS} in config.yaml")

    def read(name: str) -> str:
        p = folder / name
        return read_prompt(p) if p.exists() else ""

    judge = Judge(name=folder.name, system=read("system.txt"), user=read("user.txt"),
                  user_two_turn=read("user_two_turn.txt"), path=str(folder), **config)
    if not judge.user:
        raise ParameterError(parameter, f"judge {folder.name!r} has no user.txt", "add the prompt template user.txt")
    if judge.kind == "pairwise" and len(judge.labels) != 2:
        raise ParameterError(parameter, f"pairwise judge {folder.name!r} needs exactly two labels", "set labels: [A, B]")
    return judge


# The kit's judge prompts put every judged text between `<<<...>>>` markers and tell the judge that nothing inside
# them is an instruction. A judged text cannot forge a marker: `<<<` and `>>>` inside it are written with a space.
DELIMITER_OPEN, DELIMITER_CLOSE = "<<<", ">>>"


def neutralise_delimiters(text: str) -> str:
    return text.replace(DELIMITER_OPEN, "<< <").replace(DELIMITER_CLOSE, "> >>")


def judge_messages(judge: Judge, values: dict[str, Any], two_turn: bool = False) -> list[Message]:
    """The judge's system prompt and its user prompt filled with `values` (which may hold more than it uses: one
    item carries the fields of every judge kind); a placeholder without a value is an error naming the file.
    Placeholders are filled in one pass (braces inside inserted texts stay as they are) and no inserted text can
    close the delimiters around it."""
    template, file = (judge.user_two_turn, "user_two_turn.txt") if two_turn else (judge.user, "user.txt")
    values = {k: neutralise_delimiters(str(v)) for k, v in values.items()}
    messages: list[Message] = [{"role": "system", "content": judge.system}] if judge.system else []
    messages.append({"role": "user", "content": fill(template, values, f"judge {judge.name!r} {file}",
                                                     allow_unused=True)})
    return messages


# ---------------------------------------------------------------------------------------------- pairwise parsing


def _label_of(token: str, labels: Sequence[str]) -> str | None:
    cleaned = token.strip().strip("*()[]:.'\"").strip()
    return cleaned if cleaned in labels else None


def first_label_probability_from_logprobs(top_logprobs: list[dict[str, float]] | None,
                                          labels: Sequence[str]) -> float | None:
    """P(first label) among the two labels, from the first generated token's alternatives.

    Tokens are matched after stripping spaces and light punctuation (" A", "A)" count as "A"); variants of a label
    are summed. A label missing from the top-k is given the smallest listed probability (an upper bound), so one
    visible label still yields a clear but not infinite preference. Neither label visible: None.
    """
    if not top_logprobs:
        return None
    first = top_logprobs[0]
    if not first:
        return None
    probs = {label: 0.0 for label in labels}
    seen = set()
    for token, logprob in first.items():
        label = _label_of(token, labels)
        if label is not None:
            probs[label] += math.exp(logprob)
            seen.add(label)
    if not seen:
        return None
    floor = math.exp(min(first.values()))
    for label in labels:
        if label not in seen:
            probs[label] = floor
    total = probs[labels[0]] + probs[labels[1]]
    return probs[labels[0]] / total if total > 0 else None


def first_label_from_verdict(text: str, judge: Judge) -> float | None:
    """1.0 if the verdict names the first label, 0.0 for the second, None if it is not in the judge's declared
    format (or is empty).

    Only the declared format is read (the label alone, or the whole reply matching `verdict_pattern`): a sentence
    such as "B is better than A." names both labels, and no rule that picks one of them (the first, the last) can
    tell which the judge meant, so it counts as unparsed rather than as a guess.
    """
    if not text or not text.strip():
        return None
    if judge.verdict_pattern:
        match = re.fullmatch(judge.verdict_pattern, text.strip())
        label = match.group(1) if match else None
    else:
        label = _label_of(text, judge.labels)
    if label == judge.labels[0]:
        return 1.0
    if label == judge.labels[1]:
        return 0.0
    return None


def presentation_order(n: int, seed: int) -> list[bool]:
    """For each item, whether the candidate is shown first; seeded so a re-run asks the same questions (cache hits)."""
    rng = random.Random(f"pairwise-order-{seed}")
    return [rng.random() < 0.5 for _ in range(n)]


@dataclass
class PairwiseJudgment:
    """One pairwise comparison, mapped back to the candidate's side."""

    index: int
    candidate_first: bool
    preference: float | None  # P(candidate better); None = unparsed or failed
    source: str | None  # "logprobs" | "verdict" | None
    judge_text: str = ""
    error: str | None = None
    candidate_length: int = 0
    reference_length: int = 0


def read_pairwise(result: ChatResult, judge: Judge, candidate_first: bool) -> tuple[float | None, str | None]:
    """Preference for the candidate from one judge reply: log-probabilities first, the written verdict second."""
    if not result.ok:
        return None, None
    p_first = first_label_probability_from_logprobs(result.top_logprobs, judge.labels)
    source = "logprobs"
    if p_first is None:
        p_first, source = first_label_from_verdict(result.text, judge), "verdict"
    if p_first is None:
        return None, None
    return (p_first if candidate_first else 1.0 - p_first), source


def pairwise_judgments(judge_client: Any, instructions: Sequence[str], outputs: Sequence[str],
                       reference_outputs: Sequence[str], seed: int,
                       judge: str | Judge = "alpaca_eval_pairwise", desc: str = "pairwise judging") -> list[PairwiseJudgment]:
    """Ask the judge to compare each candidate output with its reference output, in a seeded random order."""
    if not (len(instructions) == len(outputs) == len(reference_outputs)):
        raise ValueError(f"lengths differ: {len(instructions)} instructions, {len(outputs)} outputs, "
                         f"{len(reference_outputs)} reference outputs")
    judge = judge if isinstance(judge, Judge) else load_judge(judge)
    if judge.kind != "pairwise":
        raise ParameterError("JUDGE", f"judge {judge.name!r} is {judge.kind}, not pairwise", "use alpaca_eval_pairwise")
    order = presentation_order(len(outputs), seed)
    requests = []
    for instruction, cand, ref, cand_first in zip(instructions, outputs, reference_outputs, order):
        a, b = (cand, ref) if cand_first else (ref, cand)
        requests.append(judge_messages(judge, {"instruction": instruction, "output_a": a, "output_b": b}))
    results = judge_client.chat_many(requests, desc=desc, **judge.sampling()) if requests else []
    judgments = []
    for i, (res, cand_first) in enumerate(zip(results, order)):
        pref, source = read_pairwise(res, judge, cand_first)
        judgments.append(PairwiseJudgment(i, cand_first, pref, source, res.text, res.error,
                                          len(outputs[i]), len(reference_outputs[i])))
    require_readable(judgments, judge, desc)
    return judgments


class JudgeUnreadable(RuntimeError):
    """Not one reply of a judging step could be read: the stage stops rather than record a win rate of nothing."""


def require_readable(judgments: Sequence[PairwiseJudgment], judge: Any, what: str) -> None:
    if not judgments or any(j.preference is not None for j in judgments):
        return
    first = next((j.error for j in judgments if j.error), None) or repr(judgments[0].judge_text[:120])
    if all(j.error for j in judgments):  # no reply came back at all: the endpoint's problem, not the model's
        raise JudgeUnreadable(
            f"{what}: every one of the {len(judgments)} calls to judge {judge.name!r} failed (first: {first}). "
            "Check JUDGE_BASE_URL, JUDGE_MODEL and JUDGE_API_KEY_ENV (is the server up, does it serve that id?), "
            "or, for an in-process judge, that `make setup` installed its packages")
    raise JudgeUnreadable(
        f"{what}: none of the {len(judgments)} replies of judge {judge.name!r} could be read (first: {first}). "
        "Look at the judge's replies, check JUDGE_BASE_URL / JUDGE_API_KEY_ENV if the calls failed, or use a "
        "stronger JUDGE_MODEL"
    )


def summarise_pairwise(judgments: Sequence[PairwiseJudgment]) -> dict[str, Any]:
    """The numbers both checkpoint selection (stage 3) and evaluation (stage 4) report for one set of outputs:
    win rate and its standard error, LC win rate (percent), counts and the candidates' mean length in characters.

    `n_unparsed` counts unreadable or failed judge replies (excluded from every rate, never guessed). `lc_flag` says
    when the LC says nothing (see `small_numbers.degenerate_fit_flag`).
    """
    prefs = [j.preference for j in judgments]
    stats = win_rate_stats(prefs)
    lc = length_controlled_win_rate(prefs, [j.candidate_length for j in judgments],
                                    [j.reference_length for j in judgments])
    coefficients = [lc[k] for k in ("coef_intercept", "coef_length", "coef_difficulty") if lc[k] is not None]
    lc_flag = (f"LC (minimal GLM): not computed from n={lc['n']} readable preferences" if lc["C"] is None
               else degenerate_fit_flag(coefficients, lc["n"]))
    return {"win_rate": stats["win_rate"], "win_rate_se": stats["win_rate_se"],
            "lc_win_rate": lc["lc_win_rate"], "lc_win_rate_se": lc["lc_win_rate_se"], "lc_flag": lc_flag,
            "lc_length_coef": lc["coef_length"], "n_scored": stats["n_scored"],
            "n_unparsed": len(prefs) - stats["n_scored"],
            "from_logprobs": sum(j.source == "logprobs" for j in judgments),
            "mean_length": sum(j.candidate_length for j in judgments) / max(len(judgments), 1)}


# ---------------------------------------------------------------------------------------------- ratings


_RATING_TAIL = " \t\r\n*_.!"  # what may follow the rating at the end of a reply (no quote, no bracket)


def parse_rating(text: str, judge: Judge) -> float | None:
    """The judge's rating, read in its declared format only, or None.

    The kit's rating prompts ask the judge to END its reply with the rating ("Rating: [[7]]"), or to reply with one
    JSON object (`rating_json_key`). So the rating is the one that ends the reply; a rating quoted anywhere else
    (a judged answer's "[[10]]", an example in the judge's reasoning) is never read, and a reply that does not end
    with a rating is unparsed, not guessed at."""
    if not text:
        return None
    low, high = judge.rating_range
    if judge.rating_json_key:
        value = _json_rating(text, judge.rating_json_key)
    else:
        tail = text.rstrip(_RATING_TAIL)
        value = None
        for pattern in judge.rating_patterns:
            match = re.search(f"(?:{pattern})$", tail)
            if match:
                value = _number(match.group(1))
                break
    return value if value is not None and low <= value <= high else None


def _number(text: Any) -> float | None:
    try:
        return float(str(text).strip())
    except ValueError:
        return None


def _json_rating(text: str, key: str) -> float | None:
    """`key` of the one JSON object the reply consists of (inside a ``` or ```json fence or bare), else None."""
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.DOTALL)
    if fenced:
        body = fenced.group(1)
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    return _number(obj[key]) if isinstance(obj, dict) and key in obj and obj[key] is not None else None


@dataclass
class Rating:
    """One graded answer."""

    index: int
    score: float | None  # None = unparsed or failed
    judge_text: str = ""
    error: str | None = None
    turn: int = 1


def _format_checklist(items: Sequence[str] | str | None) -> str:
    if not items:
        return "- Does the response fully and correctly address the user's request?"
    if isinstance(items, str):
        return items
    return "\n".join(f"- {item}" for item in items)


def rating_requests(items: Sequence[dict[str, Any]], judge: Judge) -> list[list[Message]]:
    """The messages that ask a single/checklist judge to grade each item (see `rate_answers` for the fields)."""
    requests = []
    for item in items:
        values = dict(item)
        values.setdefault("reference", "")
        values.setdefault("history", "(none)")
        values["checklist"] = _format_checklist(item.get("checklist"))
        two_turn = int(item.get("turn", 1)) == 2
        if two_turn and not judge.user_two_turn:
            raise ParameterError("JUDGE", f"judge {judge.name!r} cannot grade a second turn", "add user_two_turn.txt")
        requests.append(judge_messages(judge, values, two_turn))
    return requests


def rate_answers(judge_client: Any, items: Sequence[dict[str, Any]], judge: str | Judge,
                 desc: str = "grading") -> list[Rating]:
    """Grade answers with a single/checklist judge.

    Each item holds `question` and `answer`; for two-turn grading `question_1`, `answer_1`, `question_2`,
    `answer_2` and `turn: 2`; `reference` (or `reference_1`/`reference_2`) for reference-guided judges;
    `checklist` (list of str) and `history` for the checklist judge.
    """
    judge = judge if isinstance(judge, Judge) else load_judge(judge)
    if judge.kind == "pairwise":
        raise ParameterError("JUDGE", f"judge {judge.name!r} is pairwise", "use a single or checklist judge")
    requests = rating_requests(items, judge)
    results = judge_client.chat_many(requests, desc=desc, **judge.sampling()) if requests else []
    return [Rating(i, parse_rating(r.text, judge) if r.ok else None, r.text, r.error, int(items[i].get("turn", 1)))
            for i, r in enumerate(results)]
