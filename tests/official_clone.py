"""A folder laid out like a clone of the official repository, built from the reference copies (tests only), and
the official code's own functions loaded from those copies to serve as the oracle the kit is compared with."""
from __future__ import annotations

import ast
import importlib.util
import shutil
from itertools import combinations
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "instruct-skillmix"
GPT = "gpt-4-turbo-2024-04-09"
CLAUDE = "claude-3-5-sonnet-20240620"


def need_reference() -> Path:
    if not REFERENCE.exists():
        pytest.skip("needs ../shared/reference (the official reference copies)")
    return REFERENCE


def make_clone(root: Path) -> Path:
    """Copy the reference files to their paths in the official repository."""
    ref = need_reference()
    prompts = root / "src" / "data_generation" / "prompts"
    prompts.mkdir(parents=True)
    for file in (ref / "prompts").glob("*.json"):
        shutil.copy(file, prompts / file.name)
    fastchat = root / "FastChat" / "fastchat"
    fastchat.mkdir(parents=True)
    shutil.copy(ref / "code" / "FastChat_fastchat_conversation.py", fastchat / "conversation.py")
    templates = root / "src" / "eval_configs" / "templates"
    templates.mkdir(parents=True)
    shutil.copy(ref / "alpaca_prompt_template.txt", templates / "prompt.txt")
    for teacher in (GPT, CLAUDE):
        (root / "datasets" / teacher).mkdir(parents=True)
        for name in ("skills.txt", "queries.txt"):
            shutil.copy(ref / teacher / name, root / "datasets" / teacher / name)
    return root


def official_functions() -> dict:
    """The helper functions of the official generation script, executed from the reference copy (its module-level
    code imports the API clients, so only the function definitions are taken)."""
    source = (need_reference() / "code" / "data_generation_1_generate_data.py").read_text()
    tree = ast.parse(source)
    wanted = {"get_query_and_def", "get_combinations", "extract_relevant_info_gpt", "extract_relevant_info_claude",
              "extract_instruction_claude", "extract_response_claude"}
    module = ast.Module(body=[n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted],
                        type_ignores=[])
    namespace: dict = {"np": np, "combinations": combinations}
    exec(compile(module, "official_generate", "exec"), namespace)  # noqa: S102 (the reference copy, tests only)
    return namespace


def official_conversation_module() -> ModuleType:
    """The vendored FastChat conversation.py itself (standard library only at import time)."""
    path = need_reference() / "code" / "FastChat_fastchat_conversation.py"
    spec = importlib.util.spec_from_file_location("official_conversation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_plan(teacher: str, seed: int, num: int, k: int = 2) -> list[tuple[str, dict]]:
    """(skills_joined_str, query dict) per example, exactly as the official main() and generate_chunk() draw them
    with one thread."""
    fns = official_functions()
    skills = (need_reference() / teacher / "skills.txt").read_text().split("\n")
    queries = (need_reference() / teacher / "queries.txt").read_text().split("###")
    queries = [fns["get_query_and_def"](q) for q in queries if len(q.strip()) > 0]
    np.random.seed(seed)
    combos = fns["get_combinations"](skills, k, num)
    while len(queries) < num:
        queries += queries
    np.random.shuffle(queries)
    queries = queries[:num]
    out = []
    for combo, query in zip(combos, queries):
        np.random.shuffle(combo)
        out.append((", ".join(combo), query))
    return out


# Where each pinned official file has its reference copy (path prefix in its repository -> folder under reference/).
REFERENCE_COPIES = {
    "src/data_generation/prompts/": "instruct-skillmix/prompts/",
    "datasets/": "instruct-skillmix/",
    "src/eval_configs/templates/prompt.txt": "instruct-skillmix/alpaca_prompt_template.txt",
    "FastChat/fastchat/conversation.py": "instruct-skillmix/code/FastChat_fastchat_conversation.py",
    "fastchat/llm_judge/data/": "fastchat/",
    "evaluation/": "wildbench/",
    "results/Llama-3-8B-Instruct-SkillMix/model_outputs.json": "alpaca_eval/Llama-3-8B-Instruct-SkillMix_model_outputs.json",
}


def reference_copy(path: str) -> Path:
    """The reference copy of a pinned official file (by its path in its repository)."""
    prefix = next(p for p in REFERENCE_COPIES if path.startswith(p))
    target = REFERENCE_COPIES[prefix]
    return REFERENCE.parent / (target + path[len(prefix):] if prefix.endswith("/") else target)


def seed_official_cache(cache_dir: Path) -> Path:
    """Fill the kit's cache of pinned downloads from the reference copies, as a first download would have, so that
    code resolving official files works offline (`ISM_CACHE_DIR` must point at `cache_dir`)."""
    from helpers.official import PINNED_SHA256, SOURCES

    need_reference()
    for (source, path) in PINNED_SHA256:
        target = cache_dir / "official" / source / SOURCES[source].commit / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(reference_copy(path), target)
    return cache_dir
