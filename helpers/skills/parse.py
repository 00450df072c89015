"""Tolerant parsing of teacher replies into skill names, query types, labels and clusters.

Teachers, small ones especially, wrap their lists in prose, number or bullet them, bold them, add descriptions,
repeat themselves or reply with nothing. Parsing keeps what is usable and counts every line it drops, with a reason,
so a notebook can say honestly how much of a reply was thrown away instead of losing it silently.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# A list marker at the start of a line: "1.", "1)", "(1)", "-", "*", "+", "•", "Step 1:" is *not* one.
_MARKER = re.compile(r"^\s*(?:\(?\d{1,3}[.)]|[-*+•·–]|#{1,6})\s+")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_SNAKE_TOKEN = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)+$")
_NON_WORD = re.compile(r"[^a-z0-9]+")
# Words that mark "1. Here are the skills:" as the heading of a list rather than a "1. **Name**:" item.
_LEAD_IN_WORDS = re.compile(r"\b(list|lists|following|here|these|below|examples?|skills|topics|types)\b", re.I)
_QUOTED = re.compile(r"[\"“”'‘’`]")


@dataclass
class ParseReport:
    """What a parse kept and what it dropped, with a reason for every dropped line."""

    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: list[tuple[str, str]] = field(default_factory=list)  # (reason, line) samples for display
    empty_replies: int = 0
    max_examples: int = 30

    def drop(self, reason: str, line: str) -> None:
        self.dropped[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append((reason, line.strip()[:160]))

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    def merge(self, other: "ParseReport") -> "ParseReport":
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.empty_replies += other.empty_replies
        room = self.max_examples - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "dropped": dict(self.dropped), "num_dropped": self.num_dropped,
                "empty_replies": self.empty_replies}


def to_snake_case(text: str) -> str:
    """'Public Speaking & Rhetoric' -> 'public_speaking_and_rhetoric' (the official lists' key format)."""
    text = text.strip().lower().replace("&", " and ").replace("+", " plus ")
    return _NON_WORD.sub("_", text).strip("_")


def strip_markup(line: str) -> tuple[str, bool]:
    """Remove list markers, bold and surrounding quotes; also say whether the line was list-marked."""
    marked = False
    for _ in range(3):  # markers can stack: "### 1. name", "- 1) name"
        if not _MARKER.match(line):
            break
        marked, line = True, _MARKER.sub("", line, count=1)
    line = _BOLD.sub(lambda m: m.group(1) or m.group(2), line)
    line = line.strip().strip("*_").strip()
    return line, marked


def split_name_and_description(line: str) -> tuple[str, str]:
    """'Skill name: what it is' / 'Skill name - what it is' / 'Skill name (what it is)' -> (name, description)."""
    for sep in (":", " – ", " — ", " - "):
        if sep in line:
            head, tail = line.split(sep, 1)
            if head.strip():
                return head.strip(), tail.strip()
    paren = re.match(r"^(.*?)\s*\((.*)\)\s*$", line)
    if paren and paren.group(1).strip():
        return paren.group(1).strip(), paren.group(2).strip()
    return line.strip(), ""


def _candidate_lines(text: str) -> tuple[list[tuple[str, bool]], int]:
    """Non-blank lines with their list-marked flag; a lone comma-separated line counts as a list."""
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    if len(lines) == 1 and "," in lines[0] and not lines[0].rstrip().endswith((".", "?", "!")):
        parts = [p for p in lines[0].split(",") if p.strip()]
        if len(parts) >= 2:
            return [(p, True) for p in parts], 0
    return [(ln, False) for ln in lines], len(lines)


def parse_item_list(text: str | None, max_words: int = 8, report: ParseReport | None = None,
                    allow_lead_in: bool = True) -> tuple[list[str], ParseReport]:
    """Turn a list-shaped reply into snake_case items, dropping prose, overlong lines and repeats.

    When any line of the reply carries a list marker (or is a bare snake_case token), unmarked lines are taken
    to be the prose around the list and dropped as such. Each item keeps only its name part ("Name: description").
    """
    report = report if report is not None else ParseReport()
    if not text or not text.strip():
        report.empty_replies += 1
        return [], report
    raw, _ = _candidate_lines(text)
    stripped = [(strip_markup(line)[0], marked or strip_markup(line)[1], line) for line, marked in raw]
    listy = any(marked or _SNAKE_TOKEN.match(s) for s, marked, _ in stripped)
    items: list[str] = []
    seen: set[str] = set()
    for body, marked, original in stripped:
        if listy and not marked and not _SNAKE_TOKEN.match(body):
            report.drop("prose around the list", original)
            continue
        if body.rstrip().endswith(":") and _LEAD_IN_WORDS.search(body):
            report.drop("heading of a list, not an item", original)
            continue
        name, _desc = split_name_and_description(body)
        name = _QUOTED.sub("", name).strip().rstrip(".;,")
        if not re.search(r"[a-zA-Z]", name):
            report.drop("no letters", original)
            continue
        words = name.replace("_", " ").split()
        if len(words) > max_words or (not listy and name.endswith((".", "?", "!", ":"))):
            report.drop("too long to be a name (prose)", original)
            continue
        key = to_snake_case(name)
        if key in seen:
            report.drop("duplicate within the reply", original)
            continue
        seen.add(key)
        items.append(key)
        report.kept += 1
    return items, report


def parse_label(text: str | None, max_words: int = 5, report: ParseReport | None = None) -> tuple[str | None, ParseReport]:
    """One fine-grained skill label from a reply: the first line that names one.

    A line names a label through a snake_case token, a **bold** or "quoted" phrase of at most `max_words` words,
    or by being that short itself; lead-in lines ("The skill is:") and prose are dropped and counted.
    """
    report = report if report is not None else ParseReport()
    if not text or not text.strip():
        report.empty_replies += 1
        return None, report
    for line in text.split("\n"):
        if not line.strip():
            continue
        raw = line.strip()
        if raw.endswith(":"):
            report.drop("lead-in line, not a label", line)
            continue
        snake = re.search(r"[a-z0-9]+(?:_[a-z0-9]+)+", raw)
        marked = re.search(r"\*\*(.+?)\*\*|[\"“](.+?)[\"”]", raw)
        body, _ = strip_markup(raw)
        body = re.sub(r"^(?:the\s+)?(?:skill|label|answer)\s*(?:name|label)?\s*(?:is)?\s*[:=-]\s*", "", body,
                      flags=re.I).strip().rstrip(".")
        for candidate in (snake.group(0) if snake else None,
                          (marked.group(1) or marked.group(2)) if marked else None, body):
            if candidate and re.search(r"[a-zA-Z]", candidate) and len(candidate.replace("_", " ").split()) <= max_words:
                report.kept += 1
                return to_snake_case(candidate), report
        report.drop("label line unusable (prose or too long)", line)
    return None, report


def parse_clusters(text: str | None, known_labels: list[str], report: ParseReport | None = None,
                   max_name_words: int = 8) -> tuple[dict[str, list[str]], ParseReport]:
    """Lines 'cluster_name: label_a, label_b' -> {cluster: [labels]}; members must be known labels.

    Members the teacher invented (not in `known_labels`) are dropped and counted; a label the teacher put in two
    clusters stays in the first.
    """
    report = report if report is not None else ParseReport()
    if not text or not text.strip():
        report.empty_replies += 1
        return {}, report
    known = set(known_labels)
    clusters: dict[str, list[str]] = {}
    placed: set[str] = set()
    for line in text.split("\n"):
        if not line.strip():
            continue
        body, _ = strip_markup(line)
        if ":" not in body:
            report.drop("no 'cluster: members' shape", line)
            continue
        head, tail = body.split(":", 1)
        name = to_snake_case(_QUOTED.sub("", head))
        if not name or len(name.split("_")) > max_name_words:
            report.drop("cluster name unusable", line)
            continue
        members = []
        for part in re.split(r"[,;]", tail):
            label = to_snake_case(_QUOTED.sub("", part))
            if not label:
                continue
            if label not in known:
                report.drop("cluster member is not a known label", part)
            elif label in placed:
                report.drop("label already in another cluster", part)
            else:
                placed.add(label)
                members.append(label)
        if not members:
            report.drop("cluster with no known members", line)
            continue
        clusters.setdefault(name, []).extend(members)
        report.kept += 1
    return clusters, report


_QT_HEADER = re.compile(r"^\s*(?:#{1,6}\s*)?(?:\(?\d{1,3}[.)]\s*)?(?:[-*•]\s+)?\*\*(?P<bold>[^*]+?)\*\*\s*[:\-–—]?\s*(?P<rest>.*)$"
                        r"|^\s*(?:#{1,6}\s*)?\(?\d{1,3}[.)]\s+(?P<plain>[^:\-–—]{2,60}?)\s*(?:[:\-–—]\s*(?P<rest2>.*))?$")
_EXAMPLE = re.compile(r"^\s*(?:[-*•]|\d{1,3}[.)])?\s*(?:e\.g\.|example\s*\d*\s*:)?\s*[\"“](?P<q>.+?)[\"”]\s*\.?\s*$", re.I)


_TRAILING_EXAMPLES_LABEL = re.compile(r"\s*(?:for example|examples?(?: include| queries)?|e\.g\.)\s*:\s*$", re.I)


def parse_query_types(text: str | None, report: ParseReport | None = None) -> tuple[list[dict[str, Any]], ParseReport]:
    """Blocks of 'N. **Name**: definition' + example lines -> [{name, definition, examples}].

    Accepts the official `queries.txt` shapes (a `### N. **Name**` header, then a prose or `**Definition:**` line,
    then quoted examples) and the looser shapes chat models produce (numbered names with ': definition').
    """
    report = report if report is not None else ParseReport()
    if not text or not text.strip():
        report.empty_replies += 1
        return [], report
    types: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    seen: set[str] = set()
    for line in text.replace("\r", "\n").split("\n"):
        if not line.strip():
            continue
        header = _QT_HEADER.match(line)
        example = _EXAMPLE.match(line)
        is_definition_label = re.match(r"^\s*[-*]?\s*\**\s*definition\s*:?\s*\**\s*:?", line, re.I)
        if header and not example and not is_definition_label:
            name = (header.group("bold") or header.group("plain") or "").strip().strip(":").strip()
            rest = (header.group("rest") or header.group("rest2") or "").strip()
            if not name or len(name.split()) > 6:
                report.drop("query-type header unusable", line)
                current = None
                continue
            if name.lower() in seen:
                report.drop("duplicate query type", line)
                current = None
                continue
            seen.add(name.lower())
            current = {"name": name, "definition": rest, "examples": []}
            types.append(current)
            continue
        if current is None:
            report.drop("prose outside any query type", line)
            continue
        if example:
            current["examples"].append(example.group("q").strip())
            continue
        body = re.sub(r"^\s*[-*]?\s*\**\s*definition\s*:?\s*\**\s*:?\s*", "", line, flags=re.I).strip()
        body, _ = strip_markup(body)
        if re.match(r"^(examples?( include| queries)?|for example|e\.g\.)\s*:?$", body, re.I):
            continue  # a bare "Examples:" label carries nothing to keep or lose
        body = _TRAILING_EXAMPLES_LABEL.sub("", body).strip()
        if not body:
            continue
        if not current["definition"]:
            current["definition"] = body
        else:
            current["definition"] = f"{current['definition']} {body}".strip()
    kept = []
    for qt in types:
        if not qt["definition"] and not qt["examples"]:
            report.drop("query type with neither definition nor examples", qt["name"])
            continue
        report.kept += 1
        kept.append(qt)
    return kept, report
