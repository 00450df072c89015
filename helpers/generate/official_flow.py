"""Stage 2 as the official script runs it: its sampling of skills and query types, its turn-by-turn replay of an
official prompt file, its extraction of the final pair, and its shirker requests.

Used when `PROMPT_SOURCE="official"`; `official_prompts` supplies the texts. Every rule below is a fact of the
official code (`src/data_generation/1_generate_data.py`, `2_generate_junk_data.py`, `engine.py`), re-implemented:

- Sampling: numpy's legacy global generator seeded with SEED; for each example the WHOLE skill list (every line of
  skills.txt, duplicates included) is shuffled in place and its first k entries taken; then the query-type list is
  doubled until it is at least as long as the plan, shuffled and cut; then each example's skills are shuffled once
  more, in example order (the order the official script reaches with one thread; with several threads its in-pair
  order depends on thread timing).
- Replay: all turns are sent, in order, in one chat; each reply has "### Query:" replaced by "### Instruction:"
  before it joins the conversation.
- Extraction: for a GPT prompt file, the instruction from the fourth reply (the refine turn) and the response from
  the fifth (the final rewrite), each falling back to the other reply; for a Claude file, the latest of the last
  three replies that holds an `### Instruction:` (or `### Query:`) section and a `### Response:` section.
- A failed extraction asks the final turn again (the official script reruns it; earlier replies are kept).
- Shirkers: the first round(fraction x n) training examples, in order, get the reply to the shirker file's single
  turn in a fresh conversation (with the same system message); one pair of surrounding quotes is removed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .official_prompts import (
    CLAUDE_ENGINE_TEMPERATURE,
    OFFICIAL_INSTRUCTION_MARK,
    OFFICIAL_QUERY_MARK,
    OfficialPromptFile,
    SystemMessage,
    fill_values,
    format_turns,
    load_prompt_file,
    official_engine,
    plan_query_strings,
    prompt_teacher,
    resolve_system_message,
    shirker_version,
)
from .flow import FinalPair
from .prompt_versions import read_prompt
from .sampling import ExamplePlan, attempt_salt
from .shirkers import shirker_count
from ..llm.types import ChatResult, Conversation, Message
from ..params import ParameterError


# ---------------------------------------------------------------- the plan
def draw_official_plan(skills: list[str], query_types: list[dict[str, Any]], num_examples: int, k: int, seed: int,
                       split: str = "train") -> list[ExamplePlan]:
    """The skill mixes and query types the official script would draw with `--seed SEED --num_data N --k K`."""
    if k > len(skills):
        raise ValueError(f"cannot draw {k} skills from {len(skills)}")
    if num_examples and not query_types:
        raise ValueError("no query types to draw from")
    rng = np.random.RandomState(seed)
    pool = list(skills)
    combos: list[list[str]] = []
    for _ in range(num_examples):
        rng.shuffle(pool)
        combos.append(pool[:k])
    types = list(query_types)
    while types and len(types) < num_examples:
        types += types
    rng.shuffle(types)
    types = types[:num_examples]
    for combo in combos:
        rng.shuffle(combo)
    return [ExamplePlan(f"{split}-{i:05d}", split, i, tuple(combos[i]), dict(types[i]), seed)
            for i in range(num_examples)]


# ---------------------------------------------------------------- extraction
def _pair_from_gpt_replies(replies: list[str]) -> tuple[str | None, str | None, int | None, int | None]:
    """Instruction from reply 3 (else 4), response from reply 4 (else 3), by the official GPT rules."""
    def response_of(text: str) -> str:
        if "Instruction" not in text and "Response" not in text:
            return text
        return text.split("Response:")[1].strip()  # IndexError when there is no 'Response:' section

    def instruction_of(text: str) -> str:
        head = text.split("Response")[0]
        return head.split("Instruction:")[1].replace("### Refined", "").replace("###", "").strip()

    def first(fn, order: tuple[int, int]) -> tuple[str | None, int | None]:
        for i in order:
            try:
                return fn(replies[i]), i
            except IndexError:
                continue
        return None, None

    response, resp_turn = first(response_of, (4, 3))
    instruction, inst_turn = first(instruction_of, (3, 4))
    if not instruction:  # the official script fails on an empty instruction (it indexes its first character)
        return None, response, None, resp_turn
    if instruction[0] == '"' and instruction[-1] == '"':
        instruction = instruction[1:-1]
    return instruction, response, inst_turn, resp_turn


class _Unreadable(Exception):
    """A section the official Claude rules find but cannot split (the official script then drops the attempt)."""


# The second separator the official Claude rules try when the capitalised one is absent (spelling as there).
_FALLBACK_SEPARATOR = {"instruction": "intruction:", "query": "query:", "response": "response:"}


def _section(text: str, label: str, stop_at_response: bool) -> str | None:
    """The official Claude rule: the text after '<Label>:' in the first '###' section whose lower-cased text holds
    '<label>:' (for instructions, sections from the first one naming the response on are not searched)."""
    for part in text.split("###")[1:]:
        lower = part.lower()
        if stop_at_response and "response:" in lower:
            return None
        if f"{label}:" in lower:
            for separator in (f"{label.capitalize()}:", _FALLBACK_SEPARATOR[label]):
                pieces = part.split(separator)
                if len(pieces) > 1:
                    return pieces[1].strip()
            raise _Unreadable(label)
    return None


def _claude_instruction(text: str) -> str | None:
    found = _section(text, "instruction", True)
    return found if found is not None else _section(text, "query", True)


def _pair_from_claude_replies(replies: list[str]) -> tuple[str | None, str | None, int | None, int | None]:
    last = len(replies) - 1
    instruction = response = None
    inst_turn = resp_turn = None
    try:
        for i in range(last, max(last - 2, 0) - 1, -1):
            if instruction is None and (found := _claude_instruction(replies[i])) is not None:
                instruction, inst_turn = found, i
        for i in range(last, max(last - 2, 0) - 1, -1):
            if response is None and (found := _section(replies[i], "response", False)) is not None:
                response, resp_turn = found, i
    except _Unreadable:
        return None, None, None, None
    return instruction, response, inst_turn, resp_turn


@dataclass
class OfficialPair:
    instruction: str | None
    response: str | None
    instruction_turn: int | None
    response_turn: int | None

    @property
    def reason(self) -> str | None:
        if self.instruction is None and self.response is None:
            return "no instruction and no response found (official rules)"
        if self.instruction is None:
            return "no instruction found (official rules)"
        if self.response is None:
            return "no response found (official rules)"
        return None


def extract_official_pair(replies: list[str], extractor: str) -> OfficialPair:
    """The final pair by the official rules of `extractor` ('gpt' or 'claude')."""
    if extractor == "gpt":
        if len(replies) < 5:
            return OfficialPair(None, None, None, None)
        return OfficialPair(*_pair_from_gpt_replies(replies))
    return OfficialPair(*_pair_from_claude_replies(replies))


def clean_shirker_reply(text: str) -> str:
    """One pair of surrounding double quotes removed, nothing else (the official shirker post-processing)."""
    if text and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


# ---------------------------------------------------------------- the flow object stage 2 drives
@dataclass(frozen=True)
class OfficialFlow:
    """Everything stage 2 needs to replay one official prompt file for one teacher (the `flow.Flow` interface)."""

    prompts: OfficialPromptFile
    system: SystemMessage
    engine: str  # "openai" or "claude"
    shirker_prompts: OfficialPromptFile | None = None

    @staticmethod
    def skill_pool(skills: list[str]) -> list[str]:
        """Every line as given, duplicates included, as the official script samples."""
        return [s for s in skills if s]

    draw = staticmethod(draw_official_plan)

    @classmethod
    def from_config(cls, config: Any) -> OfficialFlow:
        return load_official_flow(config.official_prompt_version, config.teacher_model,
                                  config.instruct_skillmix_repo, config.official_system_template,
                                  config.shirker_kind if config.shirker_fraction > 0 else None)

    @property
    def name(self) -> str:
        return self.prompts.version

    @property
    def extractor(self) -> str:
        return "claude" if "claude" in prompt_teacher(self.prompts.version) else "gpt"

    def fingerprint(self) -> str:
        """Changes with any text sent (prompt file, system message, shirker file), so stale progress is not reused."""
        h = hashlib.sha256()
        for part in (self.prompts.file.sha256, self.system.template or "", self.system.text, self.engine):
            h.update(f"{part}\n".encode())
        return h.hexdigest()[:16]

    def sampling(self, temperature: float | None, max_tokens: int, backend_kind: str) -> dict[str, Any]:
        """What goes with each request: the user's TEMPERATURE if set, else what the official engine sends (none
        for OpenAI, 0.7 for Claude). A local model has no server default, so it samples at the API default 1.0."""
        if temperature is None and self.engine == "claude":
            temperature = CLAUDE_ENGINE_TEMPERATURE
        if temperature is None and backend_kind == "local":
            temperature = 1.0
        return {"temperature": temperature, "max_tokens": max_tokens}

    def first_messages(self) -> list[Message]:
        return [{"role": "system", "content": self.system.text}] if self.system.template else []

    def user_turns(self, plan: ExamplePlan) -> list[str]:
        query_str, query_type = plan_query_strings(plan.query_type)
        return format_turns(self.prompts.turns, fill_values(plan.skills, query_str, query_type))

    async def converse(self, client: Any, plan: ExamplePlan, attempt: int, repeat: str = "",
                       **sampling: Any) -> Conversation:
        """All turns in one chat. Attempt > 1 asks only the final turn again (earlier replies come from the cache);
        `repeat` (see `sampling.repeat_salts`) makes a plan that repeats an earlier one's prompt a sample of its own."""
        turns = self.user_turns(plan)
        conv = Conversation(messages=self.first_messages())
        for i, text in enumerate(turns):
            conv.messages.append({"role": "user", "content": text})
            salt = attempt_salt(repeat, attempt if i == len(turns) - 1 else 1)
            result = await client.achat(conv.messages, salt=salt, **sampling)
            result = _with_text(result, result.text.replace(OFFICIAL_QUERY_MARK, OFFICIAL_INSTRUCTION_MARK))
            conv.results.append(result)
            if not result.ok:
                break
            conv.messages.append({"role": "assistant", "content": result.text})
        return conv

    def extract(self, conv: Conversation) -> OfficialPair:
        if len(conv.results) < len(self.prompts.turns):
            return OfficialPair(None, None, None, None)
        return extract_official_pair(conv.assistant_texts, self.extractor)

    def read_pair(self, conv: Conversation) -> FinalPair:
        pair = self.extract(conv)
        return FinalPair(pair.instruction, pair.response, pair.reason, pair.response_turn,
                         f"turn {pair.instruction_turn}", f"turn {pair.response_turn}")

    def query_fields(self, plan: ExamplePlan) -> dict[str, Any]:
        query_str = plan.query_type.get("official_name") or plan.query_type["name"]
        return {"query_type": query_str, "query_str": query_str}

    def shirker_rules(self, examples: list[dict[str, Any]], fraction: float) -> dict[str, Any]:
        """The official shirkers: the FIRST round(fraction x n) examples, this flow's shirker file, quotes removed."""
        first = [ex["example_id"] for ex in examples[:shirker_count(len(examples), fraction)]]
        return {"chosen_ids": first, "messages_fn": self.shirker_messages, "clean_fn": clean_shirker_reply}

    def shirker_messages(self, instruction: str) -> list[Message]:
        if self.shirker_prompts is None:
            raise ValueError("no shirker prompt file was resolved")
        return self.first_messages() + [
            {"role": "user", "content": self.shirker_prompts.turns[0].format(instruction=instruction)}]

    def describe(self) -> dict[str, Any]:
        out = {"prompt_source": "official", "prompt_file": self.prompts.describe(), "engine": self.engine,
               "extractor": self.extractor, "system_message": self.system.describe()}
        if self.shirker_prompts is not None:
            out["shirker_prompt_file"] = self.shirker_prompts.describe()
        return out

    def provenance(self) -> dict[str, Any]:
        file = self.prompts.describe()
        return {"prompt_source": "official", "prompt_version": self.name, "prompt_repository": file["repository"],
                "prompt_path": file["path"], "prompt_commit": file["commit"], "prompt_sha256": file["sha256"],
                "system_template": self.system.template}

    @property
    def num_turns(self) -> int:
        return len(self.prompts.turns)

    @property
    def system_prompt(self) -> str | None:
        return self.system.text

    def estimate_turns(self, plan: ExamplePlan) -> list[str]:
        return self.user_turns(plan)

    def shirker_prompt(self) -> str:
        return self.shirker_prompts.turns[0] if self.shirker_prompts is not None else read_prompt("shirker_junk.txt")


def _with_text(result: ChatResult, text: str) -> ChatResult:
    if text == result.text:
        return result
    data = result.to_dict()
    data["text"] = text
    return ChatResult(**data)


def load_official_flow(version: str, teacher_model: str, local_repo: str = "", system_choice: str = "auto",
                       shirker_kind: str | None = None) -> OfficialFlow:
    """Resolve every official file the run needs, before any model call (ParameterError when one is missing)."""
    prompts = load_prompt_file(version, local_repo)
    system = resolve_system_message(system_choice, teacher_model, version, local_repo)
    shirkers = None
    if shirker_kind:
        name = shirker_version(version, shirker_kind)
        try:
            shirkers = load_prompt_file(name, local_repo, parameter="SHIRKER_KIND")
        except ParameterError as exc:
            raise ParameterError("SHIRKER_KIND", f"the official shirker file {name}.json is not available ({exc.problem})",
                                 "set SHIRKER_FRACTION=0, or use a PROMPT_VERSION with official shirker files "
                                 "(the GPT-4-Turbo one), or PROMPT_SOURCE='kit'") from None
    return OfficialFlow(prompts, system, official_engine(teacher_model, version), shirkers)


def transcript_json(conv: Conversation) -> str:
    return json.dumps(conv.messages, ensure_ascii=False)
