"""Stage 1: get the skills and query types that data generation will combine.

Three routes, chosen by `SKILL_SOURCE`:
- `direct` (the paper's main, seed-dataset-agnostic route): ask the teacher for topics, then for the skills each
  topic needs, and separately for query types with a definition and two examples each;
- `dataset` (the metacognition recipe of Didolkar et al. 2024): label every seed instruction with the one
  fine-grained skill it needs, have the teacher merge the labels into named clusters (in batches, so long label
  lists fit the context), then relabel every instruction with one cluster; the clusters are the skills;
- `import`: read lists someone already made, e.g. the paper's published `skills.txt` / `queries.txt`.
`SKILLS_PATH` / `QUERY_TYPES_PATH` may also be given with `direct` or `dataset` to replace just one list.

Every route ends the same way: exact and near duplicates merged (`skills.dedup`), too-short lists topped up
visibly from the kit's shipped lists (`skills.fallbacks`), and everything written to the run folder. The routes
themselves are in `skills.routes`; this module runs them in order and saves and records the outcome.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import layout
from ..jsonl import write_jsonl
from ..params import ParameterError
from .config import SkillExtractionConfig
from .dedup import DedupReport, dedup_skills
from .extraction import SkillExtraction
from .fallbacks import apply_fallbacks, shipped_query_types
from .official_lists import is_official, resolve_list
from .formats import load_query_types_file, load_skills_file, write_queries_txt, write_skills_txt
from .routes import ask_query_types, extract_direct, extract_from_dataset, prompt_version, relabel_with_clusters
from .seed_datasets import load_seed_instructions

STAGE = layout.EXTRACT


def load_seed_for(cfg: SkillExtractionConfig) -> list[dict[str, Any]] | None:
    """The seed instructions the dataset route will label, loaded up front so a wrong SEED_DATASET or
    SEED_DATASET_FIELD fails before the teacher is loaded; None for the other routes."""
    if cfg.skill_source != "dataset" or cfg.skills_path:
        return None
    return load_seed_instructions(cfg.seed_dataset, cfg.seed_dataset_field, cfg.seed_dataset_limit, cfg.seed,
                                  cfg.seed_dataset_split)


def resolve_import_paths(cfg: SkillExtractionConfig, extraction: SkillExtraction) -> tuple[str, str]:
    """Local paths of the lists to import; 'official:<teacher>' values are fetched now and their source recorded."""
    paths = []
    for name, value in (("SKILLS_PATH", cfg.skills_path), ("QUERY_TYPES_PATH", cfg.query_types_path)):
        if is_official(value):
            file = resolve_list(name, value, cfg.instruct_skillmix_repo)
            extraction.official_files[name] = file.describe()
            paths.append(str(file.local_path))
        else:
            paths.append(value)
    return paths[0], paths[1]


def keep_every_line(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], DedupReport]:
    """The imported list as it is: one skill per line, in order, nothing merged."""
    kept = [dict(r, merged_count=1) for r in records]
    return kept, DedupReport(method="none", threshold=1.0, num_raw=len(records), num_kept=len(kept))


def extract_skills(cfg: SkillExtractionConfig, client: Any | None = None,
                   instructions: list[dict[str, Any]] | None = None) -> SkillExtraction:
    """Run stage 1 with an already connected teacher (`client` may be None when nothing needs a model)."""
    cfg.validate()
    extraction = SkillExtraction(source=cfg.skill_source)
    if cfg.needs_teacher and client is None:
        raise ParameterError("TEACHER_MODEL", f"SKILL_SOURCE={cfg.skill_source!r} needs a teacher but none was "
                             "connected", "connect one with cfg.connect(cfg.teacher(), STAGE)")
    skills_path, query_types_path = resolve_import_paths(cfg, extraction)
    if skills_path:
        extraction.raw_skills, extraction.import_reports["skills"] = load_skills_file(
            skills_path, cfg.topic_headers, cfg.embedding_backend)
        if cfg.skill_source != "import":
            extraction.notes.append(f"SKILLS_PATH given: the skill list is imported, not extracted by the "
                                    f"{cfg.skill_source!r} route")
        extraction.topics = sorted({r["topic"] for r in extraction.raw_skills if r["topic"]})
    elif cfg.skill_source == "direct":
        extract_direct(client, cfg, extraction)
    elif cfg.skill_source == "dataset":
        if instructions is None:
            instructions = load_seed_for(cfg)
        extract_from_dataset(client, cfg, extraction, instructions)
    if query_types_path:
        extraction.query_types, extraction.import_reports["query_types"] = load_query_types_file(query_types_path)
    elif cfg.skill_source == "import":
        extraction.query_types = [dict(q, source="shipped") for q in shipped_query_types()]
        extraction.notes.append(f"QUERY_TYPES_PATH is empty: using the kit's {len(extraction.query_types)} shipped "
                                "query types (data/query_types.jsonl)")
    else:
        extraction.query_types = ask_query_types(client, cfg, extraction)
    if cfg.skills_path and not cfg.import_merge:
        extraction.skills, extraction.dedup_report = keep_every_line(extraction.raw_skills)
        extraction.notes.append(f"IMPORT_MERGE=False: all {len(extraction.skills)} imported lines kept "
                                "(duplicates included), as the official generation code samples them")
    else:
        extraction.skills, extraction.dedup_report = dedup_skills(
            extraction.raw_skills, cfg.dedup_method, cfg.skill_dedup_threshold, cfg.embedding_backend)
    if cfg.skill_source == "dataset" and not cfg.skills_path:
        relabel_with_clusters(client, cfg, extraction)
    apply_fallbacks(extraction, cfg)
    return extraction


def save_extraction(run: Any, extraction: SkillExtraction) -> dict[str, Path]:
    """Write the stage's artifacts into the run folder (the contract stage 2 reads) and return their paths."""
    skills = [{k: v for k, v in s.items() if k != "merged_from" or v} for s in extraction.skills]
    written = [
        write_jsonl(run.artifact(layout.SKILLS_JSONL), skills),
        write_jsonl(run.artifact(layout.QUERY_TYPES_JSONL), extraction.query_types),
        write_skills_txt(extraction.skills, run.artifact(layout.SKILLS_TXT)),
        write_queries_txt(extraction.query_types, run.artifact(layout.QUERIES_TXT), style="gpt"),
        write_skills_txt(extraction.skills, run.artifact(layout.EXTRACT_SKILLS_WITH_TOPICS), with_topic_headers=True),
        write_queries_txt(extraction.query_types, run.artifact(layout.EXTRACT_QUERIES_DEFINITION_STYLE),
                          style="claude"),
        write_jsonl(run.artifact(layout.EXTRACT_TRANSCRIPTS), extraction.transcripts),
        write_jsonl(run.artifact(layout.EXTRACT_RAW_SKILLS), extraction.raw_skills),
    ]
    if extraction.instruction_labels:
        written.append(write_jsonl(run.artifact(layout.EXTRACT_INSTRUCTION_LABELS), extraction.instruction_labels))
    paths = {Path(p).name: Path(p) for p in written}
    dedup = extraction.dedup_report
    report = {
        "summary": extraction.summary(),
        "parse_report": extraction.parse_report.as_dict(),
        "dropped_examples": extraction.parse_report.examples,
        "dedup": dedup.as_dict() if dedup else None,
        "near_duplicate_pairs": dedup.near_pairs if dedup else [],
        "import_reports": extraction.import_reports,
        "coverage": extraction.coverage,
        "notes": extraction.notes,
        "official_files": extraction.official_files,
        "prompt_version": prompt_version(),
    }
    path = run.artifact(layout.EXTRACT_REPORT)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    paths["report.json"] = path
    return paths


def record_extraction(run: Any, extraction: SkillExtraction) -> dict[str, Any]:
    """The named results tests and sweeps read back (`results.json` and the notebook output)."""
    summary = extraction.summary()
    for name, value in summary.items():
        run.record(name, value)
    run.set_stage_info("prompt_version", prompt_version())
    run.set_stage_info("notes", extraction.notes)
    if extraction.official_files:
        run.set_stage_info("official_files", extraction.official_files)
    return summary
