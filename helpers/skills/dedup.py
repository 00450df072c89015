"""Merge exact and near-duplicate skills, keeping count of what was merged into what.

Two passes, in the order a reader would check by hand: (1) names equal after normalisation to snake_case
('Public Speaking' = 'public_speaking'); (2) near duplicates whose similarity reaches a threshold, by sentence
embeddings (meaning: 'manage_time' ~ 'time_management') or by fuzzy string matching (spelling: 'data_vizualisation' ~
'data_visualization'). The earlier skill of a pair survives, so results do not depend on hash order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from .embeddings import backend_description, embed_texts
from .parse import to_snake_case

DEDUP_METHODS = ("embedding", "fuzzy", "exact")
DEFAULT_THRESHOLDS = {"embedding": 0.9, "fuzzy": 0.93, "exact": 1.0}


@dataclass
class DedupReport:
    """Counts for the dedup plot and the manifest, plus every near-duplicate pair that was merged."""

    method: str
    threshold: float
    num_raw: int = 0
    num_exact_merged: int = 0
    num_near_merged: int = 0
    num_kept: int = 0
    embedding_backend: str = ""
    near_pairs: list[tuple[str, str, float]] = field(default_factory=list)  # (kept, merged, similarity)

    @property
    def num_merged(self) -> int:
        return self.num_exact_merged + self.num_near_merged

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "threshold": self.threshold, "num_raw": self.num_raw,
                "num_exact_merged": self.num_exact_merged, "num_near_merged": self.num_near_merged,
                "num_kept": self.num_kept, "embedding_backend": self.embedding_backend}


def similarity_matrix(names: list[str], method: str, embedding_backend: str = "auto") -> np.ndarray:
    """Pairwise similarity in [0, 1] (cosine for embeddings, normalised token-sort ratio for fuzzy)."""
    if method == "embedding":
        vectors = embed_texts(names, backend=embedding_backend)
        return vectors @ vectors.T
    if method == "fuzzy":
        words = [n.replace("_", " ") for n in names]
        return process.cdist(words, words, scorer=fuzz.token_sort_ratio, workers=1) / 100.0
    raise ValueError(f"no similarity for method {method!r}")


def dedup_skills(records: list[dict[str, Any]], method: str = "embedding", threshold: float | None = None,
                 embedding_backend: str = "auto") -> tuple[list[dict[str, Any]], DedupReport]:
    """Merge duplicates in `records` (dicts with at least `skill`; `merged_count` defaults to 1).

    The survivor keeps its topic and source, adds the merged records' counts, and lists the merged names under
    `merged_from`, so nothing a teacher said disappears without a trace.
    """
    if method not in DEDUP_METHODS:
        raise ValueError(f"unknown dedup method {method!r}; use one of {DEDUP_METHODS}")
    threshold = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
    report = DedupReport(method=method, threshold=threshold, num_raw=len(records))
    survivors: dict[str, dict[str, Any]] = {}
    for record in records:
        key = to_snake_case(record["skill"])
        if not key:
            continue
        count = int(record.get("merged_count", 1) or 1)
        if key in survivors:
            survivors[key]["merged_count"] += count
            report.num_exact_merged += 1
            continue
        survivors[key] = {**record, "skill": key, "merged_count": count, "merged_from": []}
    kept = list(survivors.values())
    if method != "exact" and len(kept) > 1:
        if method == "embedding":
            report.embedding_backend = backend_description(embedding_backend)
        sims = similarity_matrix([r["skill"] for r in kept], method, embedding_backend)
        alive = np.ones(len(kept), dtype=bool)
        for j in range(len(kept)):
            earlier = np.flatnonzero(alive[:j] & (sims[j, :j] >= threshold))
            if earlier.size:
                i = int(earlier[np.argmax(sims[j, earlier])])
                kept[i]["merged_count"] += kept[j]["merged_count"]
                kept[i]["merged_from"].append(kept[j]["skill"])
                report.near_pairs.append((kept[i]["skill"], kept[j]["skill"], round(float(sims[i, j]), 4)))
                report.num_near_merged += 1
                alive[j] = False
        kept = [r for r, a in zip(kept, alive) if a]
    report.num_kept = len(kept)
    return kept, report
