"""The paper's released skill and query-type lists, named as `official:<teacher>` in SKILLS_PATH / QUERY_TYPES_PATH.

`SKILLS_PATH="official:gpt-4-turbo-2024-04-09"` reads `datasets/gpt-4-turbo-2024-04-09/skills.txt` of the official
repository, `QUERY_TYPES_PATH="official:gpt-4-turbo-2024-04-09"` its `queries.txt`, from a local clone
(INSTRUCT_SKILLMIX_REPO) or a download at the pinned commit. Nothing of the lists is kept in the kit. To use them as
the official generation code does, import them with IMPORT_MERGE=False (every line kept, duplicates included).
"""
from __future__ import annotations

from pathlib import Path

from ..official import OfficialFile, resolve
from ..params import ParameterError

OFFICIAL_PREFIX = "official:"
OFFICIAL_TEACHERS = ("gpt-4-turbo-2024-04-09", "claude-3-5-sonnet-20240620")
LIST_FILES = {"SKILLS_PATH": "skills.txt", "QUERY_TYPES_PATH": "queries.txt"}


def is_official(value: str) -> bool:
    return str(value).startswith(OFFICIAL_PREFIX)


def official_teacher(parameter: str, value: str) -> str:
    """The teacher named in 'official:<teacher>', checked (a ParameterError names the parameter)."""
    teacher = str(value)[len(OFFICIAL_PREFIX):].strip()
    if not teacher or "/" in teacher:
        raise ParameterError(parameter, f"{value!r} names no released list",
                             f"use one of {', '.join(OFFICIAL_PREFIX + t for t in OFFICIAL_TEACHERS)}")
    return teacher


def official_list_path(parameter: str, value: str) -> str:
    """The file's path in the official repository, e.g. 'datasets/<teacher>/skills.txt'."""
    return f"datasets/{official_teacher(parameter, value)}/{LIST_FILES[parameter]}"


def resolve_list(parameter: str, value: str, local_repo: str | Path = "") -> OfficialFile:
    """Fetch the named list (ParameterError naming INSTRUCT_SKILLMIX_REPO when it cannot be had)."""
    return resolve("instruct_skillmix", official_list_path(parameter, value), local_repo)
