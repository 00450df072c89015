"""Read and write skill and query-type lists: the run's JSONL records and the official text formats.

The official release exchanges lists as `skills.txt` (one snake_case skill per line) and `queries.txt`
(`### N. **Name**` blocks with a definition and quoted examples). Its Claude-3.5 `skills.txt` also carries topic
headers: each topic name sits on its own line directly above that topic's skills, with no marker, and the same
skill often appears under several topics. Nothing in a header line's spelling sets it apart, so headers are found
from the file's shape instead: such a list is grouped into runs of related skills, and a header is the line where
one run ends and the next begins, the line that reads like the run after it rather than the one before it.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..jsonl import read_jsonl
from .embeddings import backend_description, embed_texts
from .parse import ParseReport, parse_query_types, to_snake_case

TOPIC_HEADER_RULES = ("auto", "none", "blocks")


# ---------------------------------------------------------------------- JSONL

def skill_record(skill: str, topic: str | None, source: str, merged_count: int = 1, **extra: Any) -> dict[str, Any]:
    """The `skills.jsonl` record every stage reads: skill, topic, source, merged_count (+ optional extras)."""
    return {"skill": skill, "topic": topic, "source": source, "merged_count": int(merged_count), **extra}


# ---------------------------------------------------------------------- skills.txt

@dataclass
class SkillsFileReport:
    """Counts a reader checks after importing a skills.txt."""

    lines: int = 0
    blank_lines: int = 0
    headers: int = 0
    duplicate_lines: int = 0
    unique_skills: int = 0
    header_rule: str = "none"
    header_names: list[str] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "blank_lines": self.blank_lines, "headers": self.headers,
                "duplicate_lines": self.duplicate_lines, "unique_skills": self.unique_skills,
                "header_rule": self.header_rule, "note": self.note}


def list_is_grouped(vectors: np.ndarray, margin: float = 0.05) -> bool:
    """True when neighbouring lines are clearly more alike than random pairs: the list is grouped by topic."""
    n = len(vectors)
    if n < 30:
        return False
    adjacent = float(np.mean(np.sum(vectors[1:] * vectors[:-1], axis=1)))
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, n, 4 * n), rng.integers(0, n, 4 * n)
    random_pairs = float(np.mean(np.sum(vectors[a] * vectors[b], axis=1)))
    return adjacent - random_pairs > margin


def find_topic_headers(vectors: np.ndarray, window: int = 6, min_block: int = 12, max_block: int = 45,
                       threshold: float = 0.75) -> list[int]:
    """Indices of header lines in a topic-grouped list (rows of `vectors` are unit embeddings of the lines).

    Each line gets a score = (how different the `window` lines before it are from the `window` lines after it) +
    (how much more it resembles the lines after it than those before it). The first term finds topic changes, the
    second puts the header on the right side of the change. Dynamic programming then picks the set of headers with
    the highest total score above `threshold`, with blocks of `min_block`..`max_block` lines (a header and its
    skills); the first line always starts a block.
    """
    n = len(vectors)
    if n == 0:
        return []

    def centroid(a: int, b: int) -> np.ndarray:
        a, b = max(a, 0), min(b, n)
        if b <= a:
            return np.zeros(vectors.shape[1], dtype=vectors.dtype)
        c = vectors[a:b].mean(axis=0)
        return c / (np.linalg.norm(c) + 1e-9)

    score = np.zeros(n)
    for i in range(n):
        before, after = centroid(i - window, i), centroid(i + 1, i + 1 + window)
        change = 1.0 - float(before @ after) if i > 0 else 1.0
        side = float(vectors[i] @ after) - (float(vectors[i] @ before) if i > 0 else 0.0)
        score[i] = change + side
    gain = score - threshold
    best = np.full(n + 1, -np.inf)
    best[0] = 0.0
    back = np.zeros(n + 1, dtype=int)
    for i in range(n):
        if best[i] == -np.inf:
            continue
        for length in range(min_block, max_block + 1):
            j = i + length
            if j > n:
                break
            if best[i] + gain[i] > best[j]:
                best[j], back[j] = best[i] + gain[i], i
    # When the tail is shorter than a block, it joins the last block rather than forcing a header.
    end = n if best[n] > -np.inf else max(j for j in range(n + 1) if best[j] > -np.inf)
    headers, j = [], end
    while j > 0:
        i = int(back[j])
        headers.append(i)
        j = i
    return sorted(set(headers))


def read_skills_txt(path: str | Path, topic_headers: str = "auto",
                    embedding_backend: str = "auto") -> tuple[list[dict[str, Any]], SkillsFileReport]:
    """One record per skill line (duplicates kept, for the dedup step to merge and count), plus counts.

    `topic_headers`: "none" keeps every line as a skill (what the official generation code does); "blocks" finds
    header lines with `find_topic_headers` and uses them as the topic of the skills below; "auto" does so only when
    the list is grouped by topic (`list_is_grouped`), as the Claude-3.5 list is and the shuffled GPT-4-Turbo list
    is not.
    """
    if topic_headers not in TOPIC_HEADER_RULES:
        raise ValueError(f"topic_headers must be one of {TOPIC_HEADER_RULES}, got {topic_headers!r}")
    text = Path(path).read_text(encoding="utf-8")
    raw_lines = text.split("\n")
    if raw_lines and raw_lines[-1] == "":
        raw_lines = raw_lines[:-1]  # a final newline ends the last line; it is not a line of its own
    report = SkillsFileReport(lines=len(raw_lines))
    names = []
    for line in raw_lines:
        key = to_snake_case(line)
        if key:
            names.append(key)
        else:
            report.blank_lines += 1
    headers: set[int] = set()
    if topic_headers != "none" and names:
        vectors = embed_texts(names, backend=embedding_backend)
        grouped = list_is_grouped(vectors)
        if topic_headers == "blocks" or grouped:
            headers = set(find_topic_headers(vectors))
            report.header_rule = "blocks"
            report.note = (f"topic headers found from the list's shape with {backend_description(embedding_backend)}"
                           + ("" if topic_headers == "blocks" else "; the list is grouped by topic"))
        else:
            report.note = "the list is not grouped by topic, so no line is taken as a header"
    records, topic = [], None
    for i, name in enumerate(names):
        if i in headers:
            topic = name
            report.header_names.append(name)
            continue
        records.append(skill_record(name, topic, "import"))
    report.headers = len(headers)
    counts = Counter(r["skill"] for r in records)
    report.unique_skills = len(counts)
    report.duplicate_lines = sum(c - 1 for c in counts.values())
    return records, report


def write_skills_txt(records: list[dict[str, Any]], path: str | Path, with_topic_headers: bool = False) -> Path:
    """GPT-4-Turbo style (one skill a line) or, with topic headers, the Claude-3.5 style (topic line, then skills)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not with_topic_headers:
        lines = [r["skill"] for r in records]
    else:
        by_topic: dict[str | None, list[str]] = {}
        for r in records:
            by_topic.setdefault(r.get("topic"), []).append(r["skill"])
        lines = []
        for topic, skills in by_topic.items():
            lines.append(to_snake_case(topic) if topic else "uncategorised")
            lines.extend(skills)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------- queries.txt

def read_queries_txt(path: str | Path) -> tuple[list[dict[str, Any]], ParseReport]:
    """Both official styles: prose definition (GPT-4-Turbo) or a `**Definition:**` line (Claude-3.5)."""
    types, report = parse_query_types(Path(path).read_text(encoding="utf-8"))
    for qt in types:
        qt.setdefault("source", "import")
    return types, report


def write_queries_txt(query_types: list[dict[str, Any]], path: str | Path, style: str = "gpt") -> Path:
    """`style="gpt"`: prose definition ending 'For example:'; `style="claude"`: a `**Definition:**` line."""
    if style not in ("gpt", "claude"):
        raise ValueError("style must be 'gpt' or 'claude'")
    blocks = []
    for number, qt in enumerate(query_types, start=1):
        lines = [f"### {number}. **{qt['name']}**"]
        definition = (qt.get("definition") or "").strip()
        if style == "gpt":
            lines.append(f"{definition} For example:".strip())
        else:
            lines.append(f"**Definition:** {definition}".rstrip())
        lines.extend(f'- "{example}"' for example in qt.get("examples", []))
        blocks.append("\n".join(lines))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def query_type_string(qt: dict[str, Any]) -> str:
    """'Name: definition', the string the official generation prompts insert as the query type."""
    return f"{qt['name']}: {qt.get('definition', '')}".strip().rstrip(":")


# ---------------------------------------------------------------------- any supported file

def load_skills_file(path: str | Path, topic_headers: str = "auto",
                     embedding_backend: str = "auto") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """skills.txt, or JSONL/JSON records with a `skill` field (e.g. another run's skills.jsonl)."""
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        rows = read_jsonl(path) if path.suffix == ".jsonl" else json.loads(path.read_text(encoding="utf-8"))
        records = [skill_record(to_snake_case(r["skill"]), r.get("topic"), "import", r.get("merged_count", 1))
                   for r in rows if to_snake_case(str(r.get("skill", "")))]
        counts = Counter(r["skill"] for r in records)
        return records, {"lines": len(rows), "blank_lines": len(rows) - len(records), "headers": 0,
                         "duplicate_lines": sum(c - 1 for c in counts.values()), "unique_skills": len(counts),
                         "header_rule": "none", "note": "JSON records"}
    records, report = read_skills_txt(path, topic_headers, embedding_backend)
    return records, report.as_dict()


def load_query_types_file(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """queries.txt, or JSONL/JSON records with `name`, `definition`, `examples`."""
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        rows = read_jsonl(path) if path.suffix == ".jsonl" else json.loads(path.read_text(encoding="utf-8"))
        types = [{"name": r["name"], "definition": r.get("definition", ""), "examples": list(r.get("examples", [])),
                  "source": "import"} for r in rows if r.get("name")]
        return types, {"kept": len(types), "dropped": {}, "num_dropped": len(rows) - len(types), "empty_replies": 0}
    types, report = read_queries_txt(path)
    return types, report.as_dict()
