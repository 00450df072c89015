"""Tolerant parsing of the final `### Instruction:` / `### Response:` pair out of a generation conversation.

Teachers do not always follow the format: headers lose their `###`, get bold markers or a "Refined" prefix,
`### Query:` replaces `### Instruction:`, the instruction is wrapped in quotes, or the last reply is a bare rewritten
response while the instruction sits in the reply before. The parser reads the replies from last to first and takes
the latest instruction and the latest response it can find; anything it cannot find is reported with a reason.

A turn that yields a `loose_pair` (the kit's prompt version for small local teachers) is read as a small model
writes: the request before an untitled first header, the answer after the instruction's first paragraph when no
response header follows, a reply without any header as the response. The official flow has its own rules
(`official_flow.py`), which none of this touches.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


def _header_pattern(names: str) -> re.Pattern[str]:
    """A header line: optional markdown hashes / bold, an optional adjective, one of the field names, a colon."""
    return re.compile(
        r"^[ \t>]*(?:#{1,6}[ \t]*)?(?:\*\*|__)?[ \t]*"
        r"(?:(?:refined|improved|revised|final|updated|new|rewritten|original)[ \t]+)?"
        rf"({names})"
        r"[ \t]*(?:\*\*|__)?[ \t]*(?::|(?=\r?\n)|$)[ \t]*(?:\*\*|__)?",
        re.IGNORECASE | re.MULTILINE,
    )


_HEADER = _header_pattern(r"instruction|query|response|task[ \t]+type|skills")
_LOOSE_HEADER = _header_pattern(r"instruction|query|response|answer|task[ \t]+type|skills")  # "Answer:" too
# A field that opens with the prompt's format placeholder ("<the improved answer>") echoes the format: not content.
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
    return "response" if label in ("response", "answer") else "other"


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


def split_fields(text: str, header: re.Pattern[str] = _HEADER) -> dict[str, str]:
    """The instruction and response of the FIRST pair in one reply (as the official parser does: small teachers
    often ramble on with further made-up examples after it).

    The instruction runs to the next header; the response runs to the next `###` header of a new example
    (instruction, query, response, task type, skills) or the end, so an answer's own markdown sections survive.
    """
    matches = list(header.finditer(text))
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
    return {k: v for k, v in fields.items() if v and not _PLACEHOLDER.match(v.split("\n", 1)[0].strip())}


def has_headers(text: str, header: re.Pattern[str] = _HEADER) -> bool:
    return bool(header.search(text))


MIN_UNTITLED_RESPONSE_WORDS = 8  # shorter untitled text after an instruction ("Your answer is:") is not an answer


def loose_fields(text: str) -> dict[str, str]:
    """`split_fields`, plus what a small teacher writes instead of the format: a reply without any header is the
    response; "Answer:" stands for "Response:"; a response header without an instruction header follows the request
    as plain text; an instruction header followed by a blank line and untitled text (no response header) is the
    request, then its answer."""
    if not text.strip():
        return {}
    if not has_headers(text, _LOOSE_HEADER):
        return {"response": strip_wrapping(text)}
    fields = split_fields(text, _LOOSE_HEADER)
    if "response" in fields and "instruction" not in fields:
        head = strip_wrapping(text[:_LOOSE_HEADER.search(text).start()])
        if head and not _PLACEHOLDER.match(head):
            fields["instruction"] = head
    if "instruction" in fields and "response" not in fields:
        request, blank, rest = fields["instruction"].partition("\n\n")
        if blank and len(rest.split()) >= MIN_UNTITLED_RESPONSE_WORDS:
            fields.update(instruction=strip_wrapping(request), response=strip_wrapping(rest))
    return {k: v for k, v in fields.items() if v}


def parse_final_pair(replies: list[str], yields: list[str]) -> ParsedPair:
    """Find the final pair. `yields[i]` says what reply i may hold: "pair", "loose_pair" (a pair as a small teacher
    writes it, see `loose_fields`), "rewrite" (bare text is a response) or "none" (skip, e.g. the critique)."""
    if len(replies) != len(yields):
        raise ValueError("one `yields` entry per reply is needed")
    instruction = response = None
    inst_turn = resp_turn = None
    for i in range(len(replies) - 1, -1, -1):
        kind, text = yields[i], replies[i] or ""
        if kind == "none" or not text.strip():
            continue
        fields = loose_fields(text) if kind == "loose_pair" else split_fields(text)
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
