"""The paper's own generation prompts, read at run time, and the facts of how the official code sends them.

With `PROMPT_SOURCE="official"` stage 2 replays an official prompt file (a JSON list of user turns) exactly as the
official generation script does. Nothing of the prompts is kept in the kit: the file, the conversation template that
supplies the system message, and the query-type text all come from the owners' repository through
`helpers.official.resolve` (a local clone named by INSTRUCT_SKILLMIX_REPO, or a download at the pinned commit).

Facts of the official code this module follows (princeton-pli/Instruct-SkillMix, `src/data_generation/`):
- each turn is filled with Python's `str.format(num_skills=, skills_str=, query_str=, query_type=)`, where
  `skills_str` is the skills joined by ", " and `num_skills` counts the comma-separated parts of that string;
- an OpenAI teacher's conversation starts with the system message of the FastChat conversation template that
  `get_conversation_template(<teacher id>)` picks, sent as it is written in the vendored `conversation.py` (its
  `{{currentDateTime}}` placeholder is not filled); the Claude engine drops the template and sends no system message;
- the OpenAI engine sends `max_tokens` (4,096) and no temperature; the Claude engine sends temperature 0.7;
- every reply has "### Query:" replaced by "### Instruction:" before it goes back into the conversation.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..official import OfficialFile, resolve
from ..params import ParameterError

PROMPT_SOURCES = ("kit", "official")
DEFAULT_OFFICIAL_VERSION = "generate_gpt-4-turbo-2024-04-09"
PROMPTS_DIR = "src/data_generation/prompts"
# The FastChat copy vendored in the official repository: the conversation templates the official run used.
CONVERSATION_PY = "FastChat/fastchat/conversation.py"
SHIRKER_SUFFIXES = ("brevity", "junk")
SYSTEM_TEMPLATE_CHOICES = ("auto", "none")  # or the name of a template registered in conversation.py
CLAUDE_ENGINE_TEMPERATURE = 0.7  # what the official Claude engine sends with every request
OFFICIAL_MAX_TOKENS = 4096  # what both official engines send
OFFICIAL_QUERY_MARK = "### Query:"
OFFICIAL_INSTRUCTION_MARK = "### Instruction:"


@dataclass(frozen=True)
class OfficialPromptFile:
    """One official prompt file: its user turns (with placeholders) and where it came from."""

    version: str
    turns: tuple[str, ...]
    file: OfficialFile

    def describe(self) -> dict[str, Any]:
        return {"prompt_version": self.version, "num_turns": len(self.turns), **self.file.describe()}


def prompt_path(version: str) -> str:
    return f"{PROMPTS_DIR}/{version}.json"


def load_prompt_file(version: str, local_repo: str | Path = "", parameter: str = "PROMPT_VERSION"
                     ) -> OfficialPromptFile:
    """Resolve and read `<prompts>/<version>.json`; a file that is not a list of strings is refused."""
    if not version or "/" in version or version.endswith(".json"):
        raise ParameterError(parameter, f"{version!r} is not an official prompt file name",
                             f"name a file of {PROMPTS_DIR}/ without '.json', e.g. {DEFAULT_OFFICIAL_VERSION!r}")
    file = resolve("instruct_skillmix", prompt_path(version), local_repo)
    try:
        turns = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ParameterError(parameter, f"{file.local_path} is not valid JSON ({exc})",
                             "point INSTRUCT_SKILLMIX_REPO at an unmodified clone") from None
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise ParameterError(parameter, f"{file.local_path} is not a JSON list of prompt turns",
                             "name a generation prompt file (a list of user turns)")
    return OfficialPromptFile(version, tuple(turns), file)


def prompt_teacher(version: str) -> str:
    """The teacher an official prompt file was written for: 'generate_<teacher>[_brevity|_junk]'."""
    name = version.removeprefix("generate_")
    for suffix in SHIRKER_SUFFIXES:
        name = name.removesuffix(f"_{suffix}")
    return name


def shirker_version(version: str, kind: str) -> str:
    """The official shirker prompt file beside a generation file, e.g. 'generate_<teacher>_junk'."""
    return f"generate_{prompt_teacher(version)}_{kind}"


# ---------------------------------------------------------------- which engine, which system message
def official_engine(teacher_model: str, version: str) -> str:
    """'openai' or 'claude': the official engine that would serve this teacher.

    The official script picks the engine from the teacher id. A teacher it did not serve (e.g. a model behind vLLM)
    is treated as the teacher the prompt file was written for, so the replay stays the paper's conversation.
    """
    for name in (teacher_model.removeprefix("azure-"), prompt_teacher(version)):
        if "claude" in name:
            return "claude"
        if name.startswith("gpt-"):
            return "openai"
    return "openai"


def official_template_name(teacher_model: str, version: str) -> str | None:
    """The FastChat template whose system message the official run sent (None: no system message).

    Mirrors the vendored adapter for the official teachers: ids containing "gpt-4-turbo-2024-04-09" use the template
    of that name, other GPT ids FastChat's "chatgpt" template; the Claude engine sends no system message.
    """
    if official_engine(teacher_model, version) == "claude":
        return None
    for name in (teacher_model.removeprefix("azure-"), prompt_teacher(version)):
        if "gpt-4-turbo-2024-04-09" in name:
            return "gpt-4-turbo-2024-04-09"
        if name.startswith("gpt-"):
            return "chatgpt"
    return None


def read_system_messages(source_text: str) -> dict[str, str]:
    """Every `register_conv_template(Conversation(name=..., system_message=...))` of a FastChat conversation.py.

    Read with `ast` (the file is never imported or executed); a template without a system message maps to "".
    """
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(source_text)):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_conv_template"
                and node.args and isinstance(node.args[0], ast.Call)):
            continue
        keywords = {kw.arg: kw.value for kw in node.args[0].keywords if kw.arg}
        try:
            name = ast.literal_eval(keywords["name"])
            system = ast.literal_eval(keywords["system_message"]) if "system_message" in keywords else ""
        except (KeyError, ValueError):
            continue
        if isinstance(name, str) and isinstance(system, str):
            out.setdefault(name, system)
    return out


@lru_cache(maxsize=8)
def _system_messages(local_path: str, sha256: str) -> dict[str, str]:
    return read_system_messages(Path(local_path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class SystemMessage:
    template: str | None  # None: no system message is sent
    text: str
    file: OfficialFile | None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"template": self.template, "chars": len(self.text)}
        if self.file is not None:
            out["conversation_py"] = self.file.describe()
        return out


def resolve_system_message(choice: str, teacher_model: str, version: str, local_repo: str | Path = "",
                           parameter: str = "OFFICIAL_SYSTEM_TEMPLATE") -> SystemMessage:
    """The system message to send: `choice` is 'auto' (the official run's), 'none', or a FastChat template name."""
    template = official_template_name(teacher_model, version) if choice == "auto" else (
        None if choice == "none" else choice)
    if template is None:
        return SystemMessage(None, "", None)
    file = resolve("instruct_skillmix", CONVERSATION_PY, local_repo)
    messages = _system_messages(str(file.local_path), file.sha256)
    if template not in messages:
        raise ParameterError(parameter, f"no conversation template {template!r} in {CONVERSATION_PY}",
                             f"use 'auto', 'none' or one of the registered names (e.g. {', '.join(list(messages)[:5])})")
    return SystemMessage(template, messages[template], file)


# ---------------------------------------------------------------- the per-example values
def fill_values(skills: list[str] | tuple[str, ...], query_str: str, query_type: str) -> dict[str, Any]:
    skills_str = ", ".join(skills)
    return {"num_skills": len(skills_str.split(",")), "skills_str": skills_str, "query_str": query_str,
            "query_type": query_type}


def plan_query_strings(query_type: dict[str, Any]) -> tuple[str, str]:
    """(query_str, query_type) for one planned query type: the official text when stage 1 imported an official
    queries.txt, else 'Name: definition'."""
    name = str(query_type.get("official_name") or query_type["name"])
    text = query_type.get("official_text") or f"{query_type['name']}: {query_type.get('definition') or ''}".rstrip()
    return name, str(text)


def format_turns(turns: tuple[str, ...], values: dict[str, Any]) -> list[str]:
    """Each turn filled with `str.format`, as the official script does (literal braces are doubled in the files)."""
    return [t.format(**values) for t in turns]
