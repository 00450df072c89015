"""Too-short lists are topped up, visibly, from the kit's shipped lists (or the stage stops, with FALLBACK='none').

A tiny teacher often names fewer skills or query types than stage 2 needs; the top-up keeps the pipeline running
and every added item is said in the notes and counted in the results.
"""
from __future__ import annotations

from typing import Any

from ..jsonl import read_jsonl
from ..layout import SHIPPED_QUERY_TYPES, SHIPPED_SEED_INSTRUCTIONS
from ..params import ParameterError
from .config import SkillExtractionConfig
from .extraction import SkillExtraction
from .formats import skill_record


def shipped_query_types() -> list[dict[str, Any]]:
    return read_jsonl(SHIPPED_QUERY_TYPES)


def shipped_fallback_skills() -> list[str]:
    """The categories of the shipped seed set: broad but real skill areas, used only to top up a short list."""
    seen: list[str] = []
    for row in read_jsonl(SHIPPED_SEED_INSTRUCTIONS):
        if row.get("category") and row["category"] not in seen:
            seen.append(row["category"])
    return seen


def apply_fallbacks(extraction: SkillExtraction, cfg: SkillExtractionConfig) -> None:
    """Top up too-short lists from the shipped ones, loudly; or stop, if FALLBACK='none'."""
    short_skills = max(cfg.min_skills - len(extraction.skills), 0)
    short_types = max(cfg.min_query_types - len(extraction.query_types), 0)
    if not (short_skills or short_types):
        return
    if cfg.fallback == "none":
        problem = (f"stage 1 produced {len(extraction.skills)} skills and {len(extraction.query_types)} query "
                   f"types (need {cfg.min_skills} and {cfg.min_query_types}) and FALLBACK='none'")
        errors = [t["error"] for t in extraction.transcripts if t.get("error")]
        if errors and len(errors) == len(extraction.transcripts):  # no reply came back: not the teacher's fault
            raise ParameterError("FALLBACK", f"{problem}: every teacher call failed (first: {errors[0]})",
                                 "check TEACHER_BASE_URL, TEACHER_MODEL and TEACHER_API_KEY_ENV (is the server up, "
                                 "does it serve that id?), or, for an in-process teacher, that `make setup` "
                                 "installed its packages")
        raise ParameterError(
            "FALLBACK", problem,
            "use a stronger teacher, raise NUM_TOPICS / SKILLS_PER_TOPIC / EXTRACT_MAX_TOKENS, or set FALLBACK='shipped'")
    if short_skills:
        have = {s["skill"] for s in extraction.skills}
        extra = [s for s in shipped_fallback_skills() if s not in have][:short_skills]
        extraction.skills.extend(skill_record(s, None, "fallback") for s in extra)
        extraction.num_fallback_skills = len(extra)
        extraction.notes.append(f"FALLBACK: only {len(have)} usable skills came out (stage 2 needs "
                                f"{cfg.min_skills}); added {len(extra)} from the shipped seed categories: "
                                f"{', '.join(extra)}")
    if short_types:
        have_names = {q["name"].lower() for q in extraction.query_types}
        extra_types = [dict(q, source="fallback") for q in shipped_query_types()
                       if q["name"].lower() not in have_names][:short_types]
        extraction.query_types.extend(extra_types)
        extraction.num_fallback_query_types = len(extra_types)
        extraction.notes.append(f"FALLBACK: only {len(have_names)} usable query types came out (stage 2 needs "
                                f"{cfg.min_query_types}); added {len(extra_types)} from data/query_types.jsonl: "
                                f"{', '.join(q['name'] for q in extra_types)}")
