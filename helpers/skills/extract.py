"""Stage 1: get the skills and query types that data generation will combine.

Three routes, chosen by `SKILL_SOURCE`:
- `direct` (the paper's main, seed-dataset-agnostic route): ask the teacher for topics, then for the skills each
  topic needs, and separately for query types with a definition and two examples each;
- `dataset` (the metacognition recipe of Didolkar et al. 2024): label every seed instruction with the one
  fine-grained skill it needs, have the teacher merge the labels into named clusters (in batches, so long label
  lists fit the context), then relabel every instruction with one cluster; the clusters are the skills;
- `import`: read lists someone already made, e.g. the paper's published `skills.txt` / `queries.txt`.
`SKILLS_PATH` / `QUERY_TYPES_PATH` may also be given with `direct` or `dataset` to replace just one list.

Every route ends the same way: exact and near duplicates merged (`skills_dedup`), too-short lists topped up
visibly from the kit's shipped lists, and everything written to the run folder.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..params import ParameterError
from .config import SkillExtractionConfig
from .dedup import DedupReport, dedup_skills
from ..jsonl import read_jsonl, write_jsonl
from .formats import (load_query_types_file, load_skills_file, skill_record,
                             write_queries_txt, write_skills_txt)
from .parse import (ParseReport, parse_clusters, parse_item_list, parse_label, parse_query_types,
                           to_snake_case)

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SHIPPED_QUERY_TYPES = DATA_DIR / "query_types.jsonl"
SHIPPED_SEED = DATA_DIR / "seed_instructions.jsonl"
STAGE = "extract_skills"


# ---------------------------------------------------------------------- prompts

def load_prompt(name: str) -> str:
    return (PROMPT_DIR / f"{name}.txt").read_text(encoding="utf-8")


def prompt_version() -> str:
    """A short hash of all stage-1 prompt files, recorded so a changed prompt is visible in the manifest."""
    digest = hashlib.sha256()
    for path in sorted(PROMPT_DIR.glob("*.txt")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _readable(name: str) -> str:
    return name.replace("_", " ")


# ---------------------------------------------------------------------- results

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


def _log(extraction: SkillExtraction, step: str, requests: list[list[dict[str, str]]], results: list[Any],
         keys: list[Any] | None = None) -> None:
    """Keep every raw teacher exchange, failures included, for `transcripts.jsonl`."""
    keys = keys if keys is not None else list(range(len(requests)))
    for key, messages, result in zip(keys, requests, results):
        extraction.transcripts.append({
            "step": step, "key": key, "messages": messages, "reply": result.text, "error": result.error,
            "finish_reason": result.finish_reason, "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens, "cached": result.cached, "model": result.model,
        })


def _failed(extraction: SkillExtraction, results: list[Any], step: str) -> None:
    failed = [r for r in results if not r.ok]
    if failed:
        extraction.notes.append(f"{len(failed)} of {len(results)} teacher calls for {step} failed after retries "
                                f"(first error: {failed[0].error}); their items are missing")


# ---------------------------------------------------------------------- query types

def ask_query_types(client: Any, cfg: SkillExtractionConfig, extraction: SkillExtraction) -> list[dict[str, Any]]:
    messages = _user(load_prompt("query_types").format(num_query_types=cfg.num_query_types))
    result = client.chat_many([messages], desc="query types", **cfg.sampling())
    _log(extraction, "query_types", [messages], result)
    _failed(extraction, result, "query types")
    types, _ = parse_query_types(result[0].text if result[0].ok else "", extraction.parse_report)
    for extra in types[cfg.num_query_types:]:
        extraction.parse_report.drop("beyond NUM_QUERY_TYPES", extra["name"])
    types = types[: cfg.num_query_types]
    for qt in types:
        qt["source"] = cfg.skill_source
    return types


# ---------------------------------------------------------------------- direct route

def extract_direct(client: Any, cfg: SkillExtractionConfig, extraction: SkillExtraction) -> None:
    """Topics, then skills per topic (all topics in flight at once)."""
    sampling = cfg.sampling()
    messages = _user(load_prompt("topics").format(num_topics=cfg.num_topics))
    result = client.chat_many([messages], desc="topics", **sampling)
    _log(extraction, "topics", [messages], result)
    _failed(extraction, result, "topics")
    topics, _ = parse_item_list(result[0].text if result[0].ok else "", max_words=6, report=extraction.parse_report)
    for extra in topics[cfg.num_topics:]:
        extraction.parse_report.drop("beyond NUM_TOPICS", extra)
    topics = topics[: cfg.num_topics]
    if len(topics) < cfg.num_topics:
        extraction.notes.append(f"the teacher named {len(topics)} usable topics of the {cfg.num_topics} asked for")
        if cfg.fallback == "shipped":
            extra = [t for t in shipped_fallback_skills() if t not in topics][: cfg.num_topics - len(topics)]
            topics = topics + extra
            extraction.num_fallback_topics = len(extra)
            extraction.notes.append(f"FALLBACK: added {len(extra)} topics from the shipped seed categories "
                                    f"({', '.join(extra)}) so the teacher is still asked for skills")
    extraction.topics = topics
    requests = [_user(load_prompt("skills_for_topic").format(topic=_readable(t), num_skills=cfg.skills_per_topic))
                for t in topics]
    results = client.chat_many(requests, desc="skills per topic", **sampling) if requests else []
    _log(extraction, "skills_for_topic", requests, results, keys=topics)
    _failed(extraction, results, "skills per topic")
    for topic, reply in zip(topics, results):
        skills, _ = parse_item_list(reply.text if reply.ok else "", max_words=6, report=extraction.parse_report)
        for extra in skills[cfg.skills_per_topic:]:
            extraction.parse_report.drop("beyond SKILLS_PER_TOPIC", extra)
        extraction.raw_skills.extend(skill_record(s, topic, "direct") for s in skills[: cfg.skills_per_topic])


# ---------------------------------------------------------------------- dataset route

def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def match_cluster(reply: str, clusters: list[str], cutoff: float = 80.0) -> str | None:
    """The cluster a relabel reply names: exact snake_case match first, then the closest fuzzy match."""
    if not reply or not reply.strip():
        return None
    key = to_snake_case(reply.strip().split("\n")[0])
    if key in clusters:
        return key
    for cluster in clusters:  # the name inside a sentence ("The skill is data_analysis.")
        if cluster in to_snake_case(reply):
            return cluster
    from rapidfuzz import fuzz, process

    best = process.extractOne(key, clusters, scorer=fuzz.ratio)
    return best[0] if best and best[1] >= cutoff else None


def extract_from_dataset(client: Any, cfg: SkillExtractionConfig, extraction: SkillExtraction,
                         instructions: list[dict[str, Any]]) -> None:
    """Label, cluster in batches, relabel; the clusters become the skills and their coverage is counted."""
    sampling = cfg.sampling()
    report = extraction.parse_report
    extraction.num_seed_instructions = len(instructions)
    # 1. one fine-grained label per instruction
    requests = [_user(load_prompt("label_instruction").format(instruction=item["instruction"])) for item in instructions]
    results = client.chat_many(requests, desc="labelling instructions", **sampling)
    _log(extraction, "label_instruction", requests, results, keys=[item["id"] for item in instructions])
    _failed(extraction, results, "labelling")
    labelled = []
    for item, reply in zip(instructions, results):
        label, _ = parse_label(reply.text if reply.ok else "", report=report)
        if label is None:
            continue
        labelled.append({"id": item["id"], "instruction": item["instruction"], "category": item.get("category"),
                         "label": label})
    if len(labelled) < len(instructions):
        extraction.notes.append(f"{len(instructions) - len(labelled)} of {len(instructions)} instructions got no "
                                "usable label and are left out of clustering")
    label_counts: dict[str, int] = {}
    for row in labelled:
        label_counts[row["label"]] = label_counts.get(row["label"], 0) + 1
    labels = list(label_counts)
    # 2. merge labels into clusters, batch by batch
    batches = _batches(labels, cfg.cluster_batch_size)
    requests = [_user(load_prompt("cluster_labels").format(
        labels="\n".join(batch),
        num_clusters=max(1, math.ceil(cfg.num_clusters * len(batch) / max(len(labels), 1)))))
        for batch in batches]
    results = client.chat_many(requests, desc="clustering labels", **sampling) if requests else []
    _log(extraction, "cluster_labels", requests, results)
    _failed(extraction, results, "clustering")
    label_to_cluster: dict[str, str] = {}
    unclustered = 0
    for batch, reply in zip(batches, results):
        clusters, _ = parse_clusters(reply.text if reply.ok else "", batch, report=report)
        for name, members in clusters.items():
            for label in members:
                label_to_cluster[label] = name
        for label in batch:
            if label not in label_to_cluster:
                label_to_cluster[label] = label  # kept as its own cluster rather than lost
                unclustered += 1
    if unclustered:
        extraction.notes.append(f"{unclustered} of {len(labels)} labels were not placed in any cluster by the "
                                "teacher and stay as clusters of their own")
    members: dict[str, list[str]] = {}
    for label, cluster in label_to_cluster.items():
        members.setdefault(cluster, []).append(label)
    extraction.raw_skills = [skill_record(cluster, None, "dataset", merged_count=len(labs), labels=labs)
                             for cluster, labs in members.items()]
    for row in labelled:
        row["cluster"] = label_to_cluster[row["label"]]
    extraction.instruction_labels = labelled


def relabel_with_clusters(client: Any, cfg: SkillExtractionConfig, extraction: SkillExtraction) -> None:
    """Step 3 of the recipe: each instruction gets one of the final clusters; coverage counts follow."""
    rows = extraction.instruction_labels
    final = [s["skill"] for s in extraction.skills if s["source"] == "dataset"]
    if not rows or not final:
        return
    survivor = {}
    for skill in extraction.skills:
        for name in [skill["skill"], *skill.get("merged_from", [])]:
            survivor[name] = skill["skill"]
    cluster_list = "\n".join(f"- {c}" for c in final)
    requests = [_user(load_prompt("assign_cluster").format(instruction=r["instruction"], clusters=cluster_list))
                for r in rows]
    results = client.chat_many(requests, desc="relabelling with clusters", **cfg.sampling())
    _log(extraction, "assign_cluster", requests, results, keys=[r["id"] for r in rows])
    _failed(extraction, results, "relabelling")
    fell_back = 0
    for row, reply in zip(rows, results):
        chosen = match_cluster(reply.text, final) if reply.ok else None
        if chosen is None:
            extraction.parse_report.drop("relabel reply names no cluster (kept the label's own cluster)",
                                         reply.text or "<empty>")
            chosen = survivor.get(row["cluster"], row["cluster"])
            fell_back += 1
        else:
            extraction.parse_report.kept += 1
        row["final_skill"] = chosen
    if fell_back:
        extraction.notes.append(f"{fell_back} of {len(rows)} relabel replies named no cluster; those instructions "
                                "keep the cluster of their own label")
    coverage = {c: 0 for c in final}
    for row in rows:
        coverage[row["final_skill"]] = coverage.get(row["final_skill"], 0) + 1
    extraction.coverage = dict(sorted(coverage.items(), key=lambda kv: -kv[1]))
    for skill in extraction.skills:
        if skill["source"] == "dataset":
            skill["num_instructions"] = coverage.get(skill["skill"], 0)


# ---------------------------------------------------------------------- fallbacks

def shipped_query_types() -> list[dict[str, Any]]:
    return read_jsonl(SHIPPED_QUERY_TYPES)


def shipped_fallback_skills() -> list[str]:
    """The categories of the shipped seed set: broad but real skill areas, used only to top up a short list."""
    seen: list[str] = []
    for row in read_jsonl(SHIPPED_SEED):
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
        raise ParameterError(
            "FALLBACK", f"stage 1 produced {len(extraction.skills)} skills and {len(extraction.query_types)} query "
            f"types (need {cfg.min_skills} and {cfg.min_query_types}) and FALLBACK='none'",
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


# ---------------------------------------------------------------------- the stage

def load_seed_for(cfg: SkillExtractionConfig) -> list[dict[str, Any]] | None:
    """The seed instructions the dataset route will label, loaded up front so a wrong SEED_DATASET or
    SEED_DATASET_FIELD fails before the teacher is loaded; None for the other routes."""
    if cfg.skill_source != "dataset" or cfg.skills_path:
        return None
    from .seed_datasets import load_seed_instructions

    return load_seed_instructions(cfg.seed_dataset, cfg.seed_dataset_field, cfg.seed_dataset_limit, cfg.seed,
                                  cfg.seed_dataset_split)


def extract_skills(cfg: SkillExtractionConfig, client: Any | None = None,
                   instructions: list[dict[str, Any]] | None = None) -> SkillExtraction:
    """Run stage 1 with an already connected teacher (`client` may be None when nothing needs a model)."""
    cfg.validate()
    extraction = SkillExtraction(source=cfg.skill_source)
    if cfg.needs_teacher and client is None:
        raise ParameterError("TEACHER_MODEL", f"SKILL_SOURCE={cfg.skill_source!r} needs a teacher but none was "
                             "connected", "connect one with helpers.llm.client.connect(...)")
    if cfg.skills_path:
        extraction.raw_skills, extraction.import_reports["skills"] = load_skills_file(
            cfg.skills_path, cfg.topic_headers, cfg.embedding_backend)
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
    if cfg.query_types_path:
        extraction.query_types, extraction.import_reports["query_types"] = load_query_types_file(cfg.query_types_path)
    elif cfg.skill_source == "import":
        extraction.query_types = [dict(q, source="shipped") for q in shipped_query_types()]
        extraction.notes.append(f"QUERY_TYPES_PATH is empty: using the kit's {len(extraction.query_types)} shipped "
                                "query types (data/query_types.jsonl)")
    else:
        extraction.query_types = ask_query_types(client, cfg, extraction)
    extraction.skills, extraction.dedup_report = dedup_skills(
        extraction.raw_skills, cfg.dedup_method, cfg.skill_dedup_threshold, cfg.embedding_backend)
    if cfg.skill_source == "dataset" and not cfg.skills_path:
        relabel_with_clusters(client, cfg, extraction)
    apply_fallbacks(extraction, cfg)
    return extraction


def save_extraction(run: Any, extraction: SkillExtraction) -> dict[str, Path]:
    """Write the stage's artifacts into the run folder (the contract stage 2 reads) and return their paths."""
    skills = [{k: v for k, v in s.items() if k != "merged_from" or v} for s in extraction.skills]
    paths = {
        "skills.jsonl": write_jsonl(run.artifact("skills.jsonl"), skills),
        "query_types.jsonl": write_jsonl(run.artifact("query_types.jsonl"), extraction.query_types),
        "skills.txt": write_skills_txt(extraction.skills, run.artifact("skills.txt")),
        "queries.txt": write_queries_txt(extraction.query_types, run.artifact("queries.txt"), style="gpt"),
        "skills_with_topics.txt": write_skills_txt(extraction.skills, run.artifact(STAGE, "skills_with_topics.txt"),
                                                   with_topic_headers=True),
        "queries_definition_style.txt": write_queries_txt(
            extraction.query_types, run.artifact(STAGE, "queries_definition_style.txt"), style="claude"),
        "transcripts.jsonl": write_jsonl(run.artifact(STAGE, "transcripts.jsonl"), extraction.transcripts),
        "raw_skills.jsonl": write_jsonl(run.artifact(STAGE, "raw_skills.jsonl"), extraction.raw_skills),
    }
    if extraction.instruction_labels:
        paths["instruction_labels.jsonl"] = write_jsonl(run.artifact(STAGE, "instruction_labels.jsonl"),
                                                        extraction.instruction_labels)
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
        "prompt_version": prompt_version(),
    }
    path = run.artifact(STAGE, "report.json")
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
    return summary
