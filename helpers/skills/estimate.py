"""Dry run of stage 1: the teacher requests a route would send, counted from its own prompt files.

The direct route's count is exact (one topics request, one per topic, one for query types). The dataset route
labels every seed instruction, then clusters the distinct labels in batches and relabels every instruction; since
the number of distinct labels is known only after labelling, its clustering count is the upper bound (every label
distinct). Importing lists calls no model.
"""
from __future__ import annotations

import math
from typing import Any

from ..llm.accounting import CostLine, text_tokens, typical_reply
from ..params import ParameterError
from .config import SkillExtractionConfig
from .extract import STAGE, load_seed_for
from .routes import prompt_messages


def _line(cfg: SkillExtractionConfig, part: str, requests: list[list[dict[str, str]]], note: str = "") -> CostLine:
    cap = cfg.extract_max_tokens
    return CostLine(STAGE, part, cfg.teacher_model, requests=len(requests),
                    input_tokens=sum(text_tokens(m["content"]) for r in requests for m in r),
                    output_tokens=len(requests) * typical_reply(cap), output_cap_tokens=len(requests) * cap,
                    note=note)


def _seed_instructions(cfg: SkillExtractionConfig) -> tuple[list[str], str]:
    """The instructions the dataset route would label; a hub dataset that cannot be read offline is stood in for by
    SEED_DATASET_LIMIT short placeholders (said in the note)."""
    try:
        return [r["instruction"] for r in load_seed_for(cfg) or []], ""
    except ParameterError:
        n = cfg.seed_dataset_limit or 1
        return ["x" * 200] * n, f"{cfg.seed_dataset!r} not readable here: {n} instructions of ~50 tokens assumed"


def _direct(cfg: SkillExtractionConfig) -> list[CostLine]:
    per_topic = [prompt_messages("skills_for_topic", topic="a typical topic name", num_skills=cfg.skills_per_topic)
                 for _ in range(cfg.num_topics)]
    return [_line(cfg, "topics", [prompt_messages("topics", num_topics=cfg.num_topics)]),
            _line(cfg, "skills per topic", per_topic)]


def _dataset(cfg: SkillExtractionConfig) -> list[CostLine]:
    instructions, note = _seed_instructions(cfg)
    labels = [prompt_messages("label_instruction", instruction=text) for text in instructions]
    batches = math.ceil(len(instructions) / cfg.cluster_batch_size)
    label_names = "\n".join(["a_typical_skill_label"] * min(cfg.cluster_batch_size, len(instructions)))
    clusters = [prompt_messages("cluster_labels", labels=label_names, num_clusters=cfg.num_clusters)] * batches
    cluster_list = "\n".join(f"- a_typical_cluster_{i}" for i in range(cfg.num_clusters))
    relabel = [prompt_messages("assign_cluster", instruction=text, clusters=cluster_list) for text in instructions]
    return [_line(cfg, "label instructions", labels, note),
            _line(cfg, "cluster labels", clusters, "at most: every label distinct"),
            _line(cfg, "relabel with clusters", relabel)]


def estimate_extraction(cfg: SkillExtractionConfig, usage: dict[str, Any] | None = None) -> list[CostLine]:
    """Stage 1's teacher requests, one line per step; `usage` (an earlier run's teacher accounting) replaces the
    estimated tokens per request by its averages."""
    if not cfg.needs_teacher or (cfg.skills_path and cfg.query_types_path):
        return [CostLine(STAGE, "import lists", cfg.teacher_model if cfg.needs_teacher else "none",
                         note="the lists are imported: no teacher call")]
    # with SKILLS_PATH the skill list is imported: only the query types may be asked for
    lines = [] if cfg.skills_path else _direct(cfg) if cfg.skill_source == "direct" else _dataset(cfg)
    if not cfg.query_types_path:
        lines.append(_line(cfg, "query types", [prompt_messages("query_types", num_query_types=cfg.num_query_types)]))
    for line in lines:  # one teacher for the whole stage: its averages (over every step) apply to each step
        line.with_run_averages(usage)
    return lines
