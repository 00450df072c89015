"""Prompt files: read one, fill its `{placeholders}` strictly, fingerprint a set of them.

Every prompt the kit sends lives in a text file beside the code that uses it (`skills/prompts/`,
`generate/prompts/`, `judge/configs/<name>/`). Filling is strict and done in one pass: a placeholder without a value
is an error naming the file and the placeholder (never a model call with a literal `{skills_str}` in it), braces
inside the inserted texts (code, JSON) stay untouched, and braces that do not look like a placeholder (a JSON
example such as `{"score": 3}`) are left as they are. A fingerprint of the texts goes into the call cache's keys (via
the texts themselves) and the manifest, so a changed prompt is visible and never mixed with old results.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PLACEHOLDER = re.compile(r"\{(\w+)\}")


class PromptError(KeyError):
    """A prompt and its values do not fit: a placeholder has no value, or a value has no placeholder."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def read_prompt(path: str | Path, strip: bool = True) -> str:
    """The text of a prompt file (UTF-8), by default without surrounding blank space."""
    text = Path(path).read_text(encoding="utf-8")
    return text.strip() if strip else text


def placeholders(template: str) -> list[str]:
    """The placeholder names of a template, in order of first appearance."""
    return list(dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(template)))


def fill(template: str, values: Mapping[str, Any], source: str = "prompt", *, allow_unused: bool = False) -> str:
    """`template` with every `{name}` replaced by `values[name]`.

    A placeholder without a value raises `PromptError` naming `source` (the file) and the placeholder; so does a
    value the template never uses, unless `allow_unused` (for callers that offer one set of values to several
    prompts, such as judges and multi-turn conversations).
    """
    names = placeholders(template)
    missing = [n for n in names if n not in values]
    if missing:
        raise PromptError(f"{source}: no value for placeholder(s) {', '.join('{' + n + '}' for n in missing)}")
    if not allow_unused:
        unused = sorted(set(values) - set(names))
        if unused:
            raise PromptError(f"{source}: has no placeholder for {', '.join('{' + n + '}' for n in unused)}")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def fingerprint(parts: Iterable[str | bytes], length: int = 16) -> str:
    """A short sha256 of prompt texts (and whatever else names them), recorded in manifests and progress files."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:length]


def folder_fingerprint(folder: str | Path, pattern: str = "*.txt", length: int = 12) -> str:
    """Fingerprint of every prompt file in a folder (names and bytes, in name order)."""
    paths = sorted(Path(folder).glob(pattern))
    return fingerprint((p.name.encode() + p.read_bytes() for p in paths), length)
