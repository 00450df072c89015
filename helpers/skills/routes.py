"""The teacher-driven routes of stage 1: query types, the direct route (topics -> skills per topic) and the
dataset route (label -> cluster in batches -> relabel with the final clusters).

Each route asks the teacher through the LLM layer (all requests of a step in flight at once), keeps every exchange
in the extraction's transcript and parses the replies tolerantly, counting what it had to drop.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process

from ..prompts import fill, folder_fingerprint, read_prompt
from .config import SkillExtractionConfig
from .extraction import SkillExtraction, log_calls, note_failures
from .fallbacks import shipped_fallback_skills
from .formats import skill_record
from .parse import parse_clusters, parse_item_list, parse_label, parse_query_types, to_snake_case

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


def prompt_messages(name: str, **values: Any) -> list[dict[str, str]]:
    """One user message: the prompt file `prompts/<name>.txt` (as written, trailing newline included) filled in."""
    file = f"{name}.txt"
    return [{"role": "user", "content": fill(read_prompt(PROMPT_DIR / file, strip=False), values, f"skills/prompts/{file}")}]


def prompt_version() -> str:
    """A short hash of all stage-1 prompt files, recorded so a changed prompt is visible in the manifest."""
    return folder_fingerprint(PROMPT_DIR)


def _readable(name: str) -> str:
    return name.replace("_", " ")


# ---------------------------------------------------------------------- query types

def ask_query_types(client: Any, cfg: SkillExtractionConfig, extraction: SkillExtraction) -> list[dict[str, Any]]:
    messages = prompt_messages("query_types", num_query_types=cfg.num_query_types)
    result = client.chat_many([messages], desc="query types", **cfg.sampling())
    log_calls(extraction, "query_types", [messages], result)
    note_failures(extraction, result, "query types")
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
    messages = prompt_messages("topics", num_topics=cfg.num_topics)
    result = client.chat_many([messages], desc="topics", **sampling)
    log_calls(extraction, "topics", [messages], result)
    note_failures(extraction, result, "topics")
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
    requests = [prompt_messages("skills_for_topic", topic=_readable(t), num_skills=cfg.skills_per_topic)
                for t in topics]
    results = client.chat_many(requests, desc="skills per topic", **sampling) if requests else []
    log_calls(extraction, "skills_for_topic", requests, results, keys=topics)
    note_failures(extraction, results, "skills per topic")
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
    best = process.extractOne(key, clusters, scorer=fuzz.ratio)
    return best[0] if best and best[1] >= cutoff else None


def extract_from_dataset(client: Any, cfg: SkillExtractionConfig, extraction: SkillExtraction,
                         instructions: list[dict[str, Any]]) -> None:
    """Label, cluster in batches, relabel; the clusters become the skills and their coverage is counted."""
    sampling = cfg.sampling()
    report = extraction.parse_report
    extraction.num_seed_instructions = len(instructions)
    # 1. one fine-grained label per instruction
    requests = [prompt_messages("label_instruction", instruction=item["instruction"]) for item in instructions]
    results = client.chat_many(requests, desc="labelling instructions", **sampling)
    log_calls(extraction, "label_instruction", requests, results, keys=[item["id"] for item in instructions])
    note_failures(extraction, results, "labelling")
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
    requests = [prompt_messages("cluster_labels", labels="\n".join(batch),
                                num_clusters=max(1, math.ceil(cfg.num_clusters * len(batch) / max(len(labels), 1))))
                for batch in batches]
    results = client.chat_many(requests, desc="clustering labels", **sampling) if requests else []
    log_calls(extraction, "cluster_labels", requests, results)
    note_failures(extraction, results, "clustering")
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
    requests = [prompt_messages("assign_cluster", instruction=r["instruction"], clusters=cluster_list)
                for r in rows]
    results = client.chat_many(requests, desc="relabelling with clusters", **cfg.sampling())
    log_calls(extraction, "assign_cluster", requests, results, keys=[r["id"] for r in rows])
    note_failures(extraction, results, "relabelling")
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
