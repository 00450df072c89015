"""Tolerant parsing of the final `### Instruction:` / `### Response:` pair out of a generation conversation.

Teachers do not always follow the format: headers lose their `###`, get bold markers or a "Refined" prefix,
`### Query:` replaces `### Instruction:`, the instruction is wrapped in quotes, or the last reply is a bare rewritten
response while the instruction sits in the reply before. The parser reads the replies from last to first and takes
the latest instruction and the latest response it can find; anything it cannot find is reported with a reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# A header line: optional markdown hashes / bold, an optional adjective, the field name, a colon.
_HEADER = re.compile(
    r"^[ \t>]*(?:#{1,6}[ \t]*)?(?:\*\*|__)?[ \t]*"
    r"(?:(?:refined|improved|revised|final|updated|new|rewritten|original)[ \t]+)?"
    r"(instruction|query|response|task[ \t]+type|skills)"
    r"[ \t]*(?:\*\*|__)?[ \t]*(?::|(?=\r?\n)|$)[ \t]*(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
# A field that only repeats the prompt's format placeholder ("<the improved answer>") is not content.
_PLACEHOLDER = re.compile(r"^<[^<>\n]{1,60}>$")
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("`", "`")]


@dataclass
class ParsedPair:
    instruction: str | None
    response: str | None
    instruction_turn: int | None = None  # index of the reply the field came from
    response_turn: int | None = None
    reason: str | None = None  # why parsing failed; None when both fields were found

    @property
    def ok(self) -> bool:
        return self.reason is None


def _kind(label: str) -> str:
    label = re.sub(r"\s+", " ", label.lower())
    if label in ("instruction", "query"):
        return "instruction"
    return "response" if label == "response" else "other"


def strip_wrapping(text: str) -> str:
    """Remove surrounding whitespace, bold markers and one pair of matching quotes."""
    text = text.strip()
    text = re.sub(r"^(\*\*|__)\s*|\s*(\*\*|__)$", "", text).strip()
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            inner = text[1:-1]
            if left != right or left not in inner:  # '"a" and "b"' is not one quoted string
                text = inner.strip()
            break
    return text


def split_fields(text: str) -> dict[str, str]:
    """The instruction and response of the FIRST pair in one reply (as the official parser does: small teachers
    often ramble on with further made-up examples after it).

    The instruction runs to the next header; the response runs to the next `###` header of a new example
    (instruction, query, response, task type, skills) or the end, so an answer's own markdown sections survive.
    """
    matches = list(_HEADER.finditer(text))
    fields: dict[str, str] = {}
    inst_i = next((i for i, m in enumerate(matches) if _kind(m.group(1)) == "instruction"), None)
    start = inst_i if inst_i is not None else 0
    resp_i = next((i for i in range(start, len(matches)) if _kind(matches[i].group(1)) == "response"), None)
    if inst_i is not None:
        end = matches[inst_i + 1].start() if inst_i + 1 < len(matches) else len(text)
        fields["instruction"] = strip_wrapping(text[matches[inst_i].end():end])
    if resp_i is not None:
        end = next((m.start() for m in matches[resp_i + 1:] if m.group(0).lstrip(" \t>").startswith("#")), len(text))
        fields["response"] = strip_wrapping(text[matches[resp_i].end():end])
    return {k: v for k, v in fields.items() if v and not _PLACEHOLDER.match(v)}


def has_headers(text: str) -> bool:
    return bool(_HEADER.search(text))


def parse_final_pair(replies: list[str], yields: list[str]) -> ParsedPair:
    """Find the final pair. `yields[i]` says what reply i may hold: "pair", "rewrite" (bare text is a response) or
    "none" (skip, e.g. the critique)."""
    if len(replies) != len(yields):
        raise ValueError("one `yields` entry per reply is needed")
    instruction = response = None
    inst_turn = resp_turn = None
    for i in range(len(replies) - 1, -1, -1):
        kind, text = yields[i], replies[i] or ""
        if kind == "none" or not text.strip():
            continue
        fields = split_fields(text)
        if response is None:
            if "response" in fields:
                response, resp_turn = fields["response"], i
            elif kind == "rewrite" and not has_headers(text):
                response, resp_turn = strip_wrapping(text), i
        if instruction is None and "instruction" in fields:
            instruction, inst_turn = fields["instruction"], i
        if instruction is not None and response is not None:
            break
    reason = None
    if instruction is None and response is None:
        reason = "no instruction and no response found"
    elif instruction is None:
        reason = "no instruction found"
    elif response is None:
        reason = "no response found"
    return ParsedPair(instruction, response, inst_turn, resp_turn, reason)
