"""What stage 1 produced (`SkillExtraction`), and the log every route keeps of its teacher calls."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .dedup import DedupReport
from .parse import ParseReport


@dataclass
class SkillExtraction:
    """Everything stage 1 produced, for the notebook's tables and plots and for saving."""

    source: str
    raw_skills: list[dict[str, Any]] = field(default_factory=list)  # before dedup
    skills: list[dict[str, Any]] = field(default_factory=list)  # after dedup (and fallback)
    query_types: list[dict[str, Any]] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    parse_report: ParseReport = field(default_factory=ParseReport)
    dedup_report: DedupReport | None = None
    import_reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    transcripts: list[dict[str, Any]] = field(default_factory=list)
    instruction_labels: list[dict[str, Any]] = field(default_factory=list)  # dataset route
    coverage: dict[str, int] = field(default_factory=dict)  # dataset route: instructions per cluster
    num_seed_instructions: int = 0  # dataset route: instructions sent for labelling
    notes: list[str] = field(default_factory=list)  # everything a reader must be told (fallbacks, shortfalls)
    official_files: dict[str, dict[str, Any]] = field(default_factory=dict)  # 'official:' lists: source, sha256
    num_fallback_topics: int = 0
    num_fallback_skills: int = 0
    num_fallback_query_types: int = 0

    def summary(self) -> dict[str, Any]:
        dedup = self.dedup_report
        return {
            "skill_source": self.source,
            "num_skills": len(self.skills),
            "num_query_types": len(self.query_types),
            "num_raw_skills": len(self.raw_skills),
            "num_duplicates_merged": dedup.num_merged if dedup else 0,
            "num_exact_duplicates_merged": dedup.num_exact_merged if dedup else 0,
            "num_near_duplicates_merged": dedup.num_near_merged if dedup else 0,
            "num_dropped_lines": self.parse_report.num_dropped,
            "num_empty_replies": self.parse_report.empty_replies,
            "num_topics": len(self.topics),
            "num_seed_instructions": self.num_seed_instructions,
            "num_labelled_instructions": len(self.instruction_labels),
            "num_teacher_calls": len(self.transcripts),
            "num_failed_calls": sum(1 for t in self.transcripts if t["error"]),
            "num_fallback_topics": self.num_fallback_topics,
            "num_fallback_skills": self.num_fallback_skills,
            "num_fallback_query_types": self.num_fallback_query_types,
        }


def log_calls(extraction: SkillExtraction, step: str, requests: list[list[dict[str, str]]], results: list[Any],
         keys: list[Any] | None = None) -> None:
    """Keep every raw teacher exchange, failures included, for `transcripts.jsonl`."""
    keys = keys if keys is not None else list(range(len(requests)))
    for key, messages, result in zip(keys, requests, results):
        extraction.transcripts.append({
            "step": step, "key": key, "messages": messages, "reply": result.text, "error": result.error,
            "finish_reason": result.finish_reason, "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens, "cached": result.cached, "model": result.model,
        })


def note_failures(extraction: SkillExtraction, results: list[Any], step: str) -> None:
    failed = [r for r in results if not r.ok]
    if failed:
        extraction.notes.append(f"{len(failed)} of {len(results)} teacher calls for {step} failed after retries "
                                f"(first error: {failed[0].error}); their items are missing")
