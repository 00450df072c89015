"""Seed instructions for the dataset route of skill extraction.

Three sources behind one function: the small set the kit ships (`data/seed_instructions.jsonl`, written for the kit),
any local JSON / JSONL file with an instruction field, or a Hugging Face dataset id such as `tatsu-lab/alpaca` or
`HuggingFaceH4/ultrachat_200k` read with `datasets.load_dataset` (a local dataset folder works the same way, which
is how the tests exercise that path offline).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..jsonl import read_jsonl
from ..layout import SHIPPED_SEED_INSTRUCTIONS
from ..params import ParameterError

SHIPPED = "shipped"
SHIPPED_PATH = SHIPPED_SEED_INSTRUCTIONS
# Field names tried in order when none is given: Alpaca / Dolly / UltraChat / generic prompt sets.
FIELD_GUESSES = ("instruction", "prompt", "query", "question", "input", "text")
# Splits tried in order when a hub dataset has several: Alpaca has "train", UltraChat-200k "train_sft".
SPLIT_GUESSES = ("train", "train_sft", "train_gen", "test")


def _rows_from_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]} wrappers
        data = next((v for v in data.values() if isinstance(v, list)), [])
    return list(data)


def _rows_from_hub(dataset_id: str, split: str) -> list[dict[str, Any]]:
    import datasets  # heavy: imported only when a hub dataset is actually read

    try:
        loaded = datasets.load_dataset(dataset_id, split=split or None)
    except Exception as error:  # hub unreachable, unknown id, wrong split: say which parameter to change
        raise ParameterError(
            "SEED_DATASET", f"could not load {dataset_id!r} with datasets.load_dataset ({type(error).__name__}: {error})",
            "use 'shipped', a local .json/.jsonl file, or a hub id reachable from this machine (e.g. 'tatsu-lab/alpaca')",
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        name = next((s for s in SPLIT_GUESSES if s in loaded), next(iter(loaded)))
        loaded = loaded[name]
    return [dict(row) for row in loaded]


def pick_field(row: dict[str, Any], field: str) -> str:
    if field:
        return field
    for guess in FIELD_GUESSES:
        if guess in row and isinstance(row[guess], str):
            return guess
    raise ParameterError("SEED_DATASET_FIELD", f"no instruction-like field among {sorted(row)}",
                         "name the field holding the instruction, e.g. SEED_DATASET_FIELD='instruction'")


def instruction_text(row: dict[str, Any], field: str) -> str:
    """The instruction, with Alpaca's optional `input` appended as the official Alpaca prompt does."""
    text = str(row.get(field) or "").strip()
    extra = row.get("input") if field == "instruction" else None
    if isinstance(extra, str) and extra.strip():
        text = f"{text}\n\n{extra.strip()}"
    return text


def load_seed_instructions(source: str = SHIPPED, field: str = "", limit: int = 0, seed: int = 0,
                           split: str = "") -> list[dict[str, Any]]:
    """[{id, instruction, category?}] from the shipped set, a local file or a hub dataset id.

    With `limit` > 0 a seeded random sample of that size is kept (seed-dependent but reproducible), so a large
    dataset such as Alpaca-52K can be labelled on a budget.
    """
    if source in ("", SHIPPED):
        rows = _rows_from_file(SHIPPED_PATH)
    elif Path(source).expanduser().is_file():
        rows = _rows_from_file(Path(source).expanduser())
    else:
        rows = _rows_from_hub(source, split)
    if not rows:
        raise ParameterError("SEED_DATASET", f"{source!r} holds no rows", "point it at a non-empty dataset")
    name = pick_field(rows[0], field)
    if name not in rows[0]:
        raise ParameterError("SEED_DATASET_FIELD", f"{name!r} is not a field of {source!r} (fields: {sorted(rows[0])})",
                             "use one of the listed fields")
    items = []
    for index, row in enumerate(rows):
        text = instruction_text(row, name)
        if text:
            items.append({"id": row.get("id", index), "instruction": text, "category": row.get("category")})
    if limit and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    return items
