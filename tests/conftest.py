"""Test-wide isolation: every test session gets its own LLM cache, so nothing leaks between runs."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("ISM_CACHE_DIR", tempfile.mkdtemp(prefix="ism-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random causal LM with its own small tokenizer, built locally (nothing downloaded)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from sft_tiny import build_model_folder

    return build_model_folder(tmp_path_factory.mktemp("tiny") / "base")
