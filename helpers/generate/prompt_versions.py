"""Prompt files and turn sequences for stage 2, one per PROMPT_VERSION.

The prompts live as text files beside `versions.yaml` so that a researcher can read, diff and change them without
touching code; this module only fills in the per-example values and turns a version into the list of user turns
that `ChatClient.aconverse` sends in ONE conversation. Reading, strict filling and fingerprints go through
`helpers.prompts`, like every other prompt of the kit.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .flow import FinalPair
from .parse import parse_final_pair
from .sampling import ExamplePlan, attempt_salt, draw_plan, unique_skills
from ..llm.types import ChatResult, Conversation, Message, Turn
from ..params import ParameterError
from ..prompts import fill, fingerprint, placeholders
from ..prompts import read_prompt as read_prompt_file

PROMPTS_DIR = Path(__file__).with_name("prompts")
WHEN_CHOICES = ("always", "previous_truncated")
YIELDS_CHOICES = ("pair", "loose_pair", "rewrite", "none")
PLAN_FIELDS = ("num_skills", "skills_str", "query_name", "query_type")  # what `plan_values` fills in


@dataclass(frozen=True)
class TurnSpec:
    """One user turn of a version: which file, when it is sent, and what its reply may contain."""

    name: str
    file: str
    when: str = "always"
    yields: str = "pair"


@dataclass(frozen=True)
class PromptVersion:
    """One kit turn sequence, and the flow stage 2 drives with it (the `flow.Flow` interface)."""

    name: str
    description: str
    turns: tuple[TurnSpec, ...]

    @staticmethod
    def skill_pool(skills: list[str]) -> list[str]:
        """The distinct skills, so each is equally likely."""
        return unique_skills(skills)

    @staticmethod
    def draw(skills: list[str], query_types: list[dict[str, Any]], num_examples: int, k: int, seed: int,
             split: str = "train") -> list[ExamplePlan]:
        return draw_plan(skills, query_types, num_examples, k, seed, split)

    @classmethod
    def from_config(cls, config: Any) -> PromptVersion:
        return get_version(config.prompt_version)

    def sampling(self, temperature: float | None, max_tokens: int, backend_kind: str) -> dict[str, Any]:
        """TEMPERATURE and GENERATE_MAX_TOKENS as given (TEMPERATURE None: not sent)."""
        return {"temperature": temperature, "max_tokens": max_tokens}

    async def converse(self, client: Any, plan: ExamplePlan, attempt: int, repeat: str = "",
                       **sampling: Any) -> Conversation:
        return await client.aconverse(build_turns(plan, self), salt=attempt_salt(repeat, attempt), **sampling)

    def shirker_rules(self, examples: list[dict[str, Any]], fraction: float) -> dict[str, Any]:
        return {}

    def read_pair(self, conv: Conversation) -> FinalPair:
        specs = sent_turn_specs(self, conv.results)
        parsed = parse_final_pair(conv.assistant_texts, [s.yields for s in specs])
        if not parsed.ok:
            return FinalPair(parsed.instruction, parsed.response, parsed.reason, parsed.response_turn)
        return FinalPair(parsed.instruction, parsed.response, None, parsed.response_turn,
                         specs[parsed.instruction_turn].name, specs[parsed.response_turn].name)

    def query_fields(self, plan: ExamplePlan) -> dict[str, Any]:
        return {"query_type": plan.query_type["name"]}

    def fingerprint(self) -> str:
        return version_fingerprint(self)

    def provenance(self) -> dict[str, Any]:
        return {"prompt_source": "kit", "prompt_version": self.name, "prompt_fingerprint": self.fingerprint()}

    def describe(self) -> dict[str, Any]:
        return self.provenance()

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def system_prompt(self) -> str | None:
        return None

    def estimate_turns(self, plan: ExamplePlan) -> list[str]:
        return [turn if isinstance(turn, str) else read_prompt(spec.file)
                for spec, turn in zip(self.turns, build_turns(plan, self))]

    def shirker_prompt(self) -> str:
        return read_prompt("shirker_junk.txt")


def _read_yaml(prompts_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((prompts_dir / "versions.yaml").read_text()) or {}


@lru_cache(maxsize=8)
def load_versions(prompts_dir: Path = PROMPTS_DIR) -> dict[str, PromptVersion]:
    """All turn sequences defined in `versions.yaml`, checked so a typo fails at load time, not mid-run."""
    data = _read_yaml(prompts_dir)
    versions: dict[str, PromptVersion] = {}
    for name, spec in (data.get("versions") or {}).items():
        turns = tuple(TurnSpec(**t) for t in spec["turns"])
        for t in turns:
            if t.when not in WHEN_CHOICES or t.yields not in YIELDS_CHOICES:
                raise ValueError(f"versions.yaml: turn {t.name!r} of {name!r} has when={t.when!r} yields={t.yields!r}")
            if not (prompts_dir / t.file).exists():
                raise FileNotFoundError(f"versions.yaml: {name!r} needs missing prompt file {t.file!r}")
            unknown = set(placeholders(read_prompt(t.file, prompts_dir))) - set(PLAN_FIELDS)
            if unknown:
                raise ValueError(f"generate/prompts/{t.file}: unknown placeholder(s) {sorted(unknown)}; "
                                 f"an example provides {list(PLAN_FIELDS)}")
        if not turns or turns[0].when != "always":
            raise ValueError(f"versions.yaml: {name!r} must start with a turn sent always")
        versions[name] = PromptVersion(name, spec.get("description", ""), turns)
    return versions


def prompt_version_names() -> list[str]:
    return list(load_versions())


def get_version(name: str, parameter: str = "PROMPT_VERSION") -> PromptVersion:
    versions = load_versions()
    if name not in versions:
        raise ParameterError(parameter, f"unknown prompt version {name!r}",
                             f"use one of {', '.join(repr(v) for v in versions)} or add one to generate/prompts/versions.yaml")
    return versions[name]


def shirker_kinds() -> list[str]:
    return list((_read_yaml(PROMPTS_DIR).get("shirkers") or {}))


@lru_cache(maxsize=32)
def read_prompt(file: str, prompts_dir: Path = PROMPTS_DIR) -> str:
    """A prompt file of this folder (read once per process: every example of a run sends the same texts)."""
    return read_prompt_file(prompts_dir / file)


def query_type_text(query_type: dict[str, Any]) -> str:
    """The task type as the first prompt shows it: name, definition and a few example queries."""
    lines = [f"{query_type['name']}: {query_type.get('definition') or ''}".strip().rstrip(":")]
    for ex in (query_type.get("examples") or [])[:3]:
        lines.append(f'- "{ex}"')
    return "\n".join(lines)


def plan_values(plan: ExamplePlan) -> dict[str, Any]:
    return {
        "num_skills": len(plan.skills),
        "skills_str": ", ".join(plan.skills),
        "query_name": plan.query_type["name"],
        "query_type": query_type_text(plan.query_type),
    }


def _conditional(text: str) -> Turn:
    def turn(results: list[ChatResult]) -> str | None:
        return text if results and results[-1].truncated else None

    return turn


def build_turns(plan: ExamplePlan, version: PromptVersion) -> list[Turn]:
    """The user turns of one example's conversation, in order (conditional turns as callables)."""
    values = plan_values(plan)
    turns: list[Turn] = []
    for spec in version.turns:
        text = fill(read_prompt(spec.file), values, f"generate/prompts/{spec.file}", allow_unused=True)
        turns.append(text if spec.when == "always" else _conditional(text))
    return turns


def sent_turn_specs(version: PromptVersion, results: list[ChatResult]) -> list[TurnSpec]:
    """Which turn produced each reply: replays the `when` rules so skipped turns are accounted for."""
    sent: list[TurnSpec] = []
    for spec in version.turns:
        if len(sent) >= len(results):
            break
        if spec.when == "previous_truncated" and not (sent and results[len(sent) - 1].truncated):
            continue
        sent.append(spec)
    return sent


def shirker_messages(instruction: str, kind: str) -> list[Message]:
    """The single-turn request for a low-quality answer: the teacher sees only the instruction."""
    files = _read_yaml(PROMPTS_DIR).get("shirkers") or {}
    if kind not in files:
        raise ParameterError("SHIRKER_KIND", f"unknown kind {kind!r}", f"use one of {', '.join(repr(k) for k in files)}")
    return [{"role": "user", "content": fill(read_prompt(files[kind]), {"instruction": instruction},
                                             f"generate/prompts/{files[kind]}")}]


def version_fingerprint(version: PromptVersion) -> str:
    """Changes when any prompt text of the version changes, so stale progress is never reused."""
    return fingerprint((f"{spec}\n{read_prompt(spec.file)}\n" for spec in version.turns), 16)
