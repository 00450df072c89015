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
from ..params import KEY_PREFIXES, ParameterError, looks_random
from .embeddings import backend_description, embed_texts
from .parse import ParseReport, parse_query_types, to_snake_case

TOPIC_HEADER_RULES = ("auto", "none", "blocks")
# Fields a query type keeps when it came from an official queries.txt (the text the official prompts insert).
OFFICIAL_QUERY_FIELDS = ("official_name", "official_text")


# ---------------------------------------------------------------------- what a list file may hold
# Every line of a skill list is sent to the teacher and written into the training data, so a file that is not a
# skill list (a binary, a file of secrets, one 50 MB line) is refused, naming the file, the line and the rule.
MAX_LIST_FILE_BYTES = 5_000_000  # the official lists are ~30-100 KB
MAX_SKILL_LINE_CHARS = 200  # the longest official skill name has 53 characters
MAX_RECORD_LINE_CHARS = 20_000  # JSONL records and queries.txt lines (definitions, example queries)
SKILL_PUNCTUATION = " _-'&/(),.+#:"  # beyond letters and digits (any script): 'C++', 'Q&A', 'text-to-speech'


def _refuse(path: Path, parameter: str, where: str, rule: str, fix: str) -> ParameterError:
    return ParameterError(parameter, f"{path}{where} is not a skill or query-type list: {rule}", fix)


def read_list_text(path: str | Path, parameter: str = "SKILLS_PATH",
                   max_line_chars: int = MAX_RECORD_LINE_CHARS) -> str:
    """The file's text, after the checks every list file must pass: a sane size, not binary, UTF-8 (a BOM is
    dropped), no line longer than `max_line_chars`."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_LIST_FILE_BYTES:
        raise _refuse(path, parameter, "", f"it has {size:,} bytes, more than the {MAX_LIST_FILE_BYTES:,} a list "
                      "may have", "point it at a skills.txt / queries.txt / JSONL list")
    data = path.read_bytes()
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        raise _refuse(path, parameter, f", line {line}", "it is binary (a NUL byte)",
                      "point it at a text file with one skill per line")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise _refuse(path, parameter, f", line {line}", f"it is not UTF-8 (byte 0x{data[exc.start]:02x})",
                      "save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`") from None
    for number, line in enumerate(text.split("\n"), start=1):
        if len(line) > max_line_chars:
            raise _refuse(path, parameter, f", line {number}", f"the line has {len(line):,} characters, more than "
                          f"{max_line_chars:,}", "use one short skill name per line")
    return text


def check_skill_text(text: str, path: Path, where: str, parameter: str = "SKILLS_PATH") -> None:
    """One skill name (`where`: 'line 3', 'record 3'): short, letters/digits/light punctuation only, nothing that
    reads like a key or password."""
    if len(text) > MAX_SKILL_LINE_CHARS:
        raise _refuse(path, parameter, f", {where}", f"a skill name has {len(text)} characters, more than "
                      f"{MAX_SKILL_LINE_CHARS}", "use one short skill name per line")
    bad = sorted({c for c in text if not (c.isalnum() or c in SKILL_PUNCTUATION)})
    if bad:
        shown = " ".join(repr(c) for c in bad[:5])
        raise _refuse(path, parameter, f", {where}", f"characters a skill name does not use ({shown})",
                      f"skill names use letters, digits and {SKILL_PUNCTUATION.strip()!r} only")
    if any(token.startswith(KEY_PREFIXES) or looks_random(token) for token in text.replace("_", " ").split()):
        raise _refuse(path, parameter, f", {where}", "it looks like a key or a password, not a skill",
                      "remove secrets from the file; keys never go into skill lists")


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


def read_skills_txt(path: str | Path, topic_headers: str = "auto", embedding_backend: str = "auto",
                    parameter: str = "SKILLS_PATH") -> tuple[list[dict[str, Any]], SkillsFileReport]:
    """One record per skill line (duplicates kept, for the dedup step to merge and count), plus counts.

    `topic_headers`: "none" keeps every line as a skill (what the official generation code does); "blocks" finds
    header lines with `find_topic_headers` and uses them as the topic of the skills below; "auto" does so only when
    the list is grouped by topic (`list_is_grouped`), as the Claude-3.5 list is and the shuffled GPT-4-Turbo list
    is not.
    """
    if topic_headers not in TOPIC_HEADER_RULES:
        raise ValueError(f"topic_headers must be one of {TOPIC_HEADER_RULES}, got {topic_headers!r}")
    text = read_list_text(path, parameter, MAX_SKILL_LINE_CHARS)
    raw_lines = text.split("\n")
    if raw_lines and raw_lines[-1] == "":
        raw_lines = raw_lines[:-1]  # a final newline ends the last line; it is not a line of its own
    report = SkillsFileReport(lines=len(raw_lines))
    names = []
    for number, line in enumerate(raw_lines, start=1):
        check_skill_text(line.rstrip("\r"), Path(path), f"line {number}", parameter)
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
    """Both official styles: prose definition (GPT-4-Turbo) or a `**Definition:**` line (Claude-3.5).

    Each type also keeps `official_name` / `official_text`: the `{query_str}` / `{query_type}` values the official
    generation script builds from the same block (see `official_query_types`), so stage 2 can replay the official
    prompts byte for byte.
    """
    text = read_list_text(path, "QUERY_TYPES_PATH")
    types, report = parse_query_types(text)
    official = {q["query_str"]: q["query_type"] for q in official_query_types(text)}
    for qt in types:
        qt.setdefault("source", "import")
        if qt["name"] in official:
            qt["official_name"], qt["official_text"] = qt["name"], official[qt["name"]]
    return types, report


def official_query_types(text: str) -> list[dict[str, str]]:
    """A queries.txt read the way the official generation script reads it: blocks split on '###'; in each, the
    pieces between '*' marks give the name (the second piece) and the definition (the third, example lines
    included, so a `**Definition:**` line yields just 'Definition:'). Returns {query_str, query_type} per block."""
    out = []
    for block in text.split("###"):
        pieces = [p.strip() for p in block.split("*") if p.strip()]
        if len(pieces) >= 3:
            out.append({"query_str": pieces[1], "query_type": f"{pieces[1]}: {pieces[2]}"})
    return out


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

def load_skills_file(path: str | Path, topic_headers: str = "auto", embedding_backend: str = "auto",
                     parameter: str = "SKILLS_PATH") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """skills.txt, or JSONL/JSON records with a `skill` field (e.g. another run's skills.jsonl); any other file is
    refused with the file, the line and the rule it breaks."""
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        rows = _read_records(path, parameter)
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict) or not isinstance(row.get("skill", ""), str):
                raise _refuse(path, parameter, f", record {number}", "a record is not an object with a text "
                              "'skill' field", "use records like {\"skill\": \"budget_forecasting\"}")
            check_skill_text(row.get("skill", ""), path, f"record {number}", parameter)
        records = [skill_record(to_snake_case(r["skill"]), r.get("topic"), "import", r.get("merged_count", 1))
                   for r in rows if to_snake_case(str(r.get("skill", "")))]
        counts = Counter(r["skill"] for r in records)
        return records, {"lines": len(rows), "blank_lines": len(rows) - len(records), "headers": 0,
                         "duplicate_lines": sum(c - 1 for c in counts.values()), "unique_skills": len(counts),
                         "header_rule": "none", "note": "JSON records"}
    records, report = read_skills_txt(path, topic_headers, embedding_backend)
    return records, report.as_dict()


def _read_records(path: Path, parameter: str) -> list[Any]:
    """A JSONL file or a JSON list, after the file checks; a broken line names the file and the line."""
    text = read_list_text(path, parameter)
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _refuse(path, parameter, f", line {exc.lineno}", f"it is not valid JSON ({exc.msg})",
                      "use a JSON list of records or a .jsonl file") from None
    if not isinstance(rows, list):
        raise _refuse(path, parameter, "", "the JSON is not a list of records", "use a JSON list of records")
    return rows


def load_query_types_file(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """queries.txt, or JSONL/JSON records with `name`, `definition`, `examples`."""
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        rows = _read_records(path, "QUERY_TYPES_PATH")
        types = [{"name": r["name"], "definition": r.get("definition", ""), "examples": list(r.get("examples", [])),
                  "source": "import", **{k: r[k] for k in OFFICIAL_QUERY_FIELDS if r.get(k)}}
                 for r in rows if r.get("name")]
        return types, {"kept": len(types), "dropped": {}, "num_dropped": len(rows) - len(types), "empty_replies": 0}
    types, report = read_queries_txt(path)
    return types, report.as_dict()
