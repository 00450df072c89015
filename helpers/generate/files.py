"""Reading and writing stage 2's data: JSONL (appended per example, so progress survives a crash), the official
released JSON list (so files interchange with the original repository), and `datasets` folders.

`load_training_data` is the one entry point the SFT stage uses: it accepts any of the three, including the
official release file as-is.
"""
from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..jsonl import JSONLError, read_jsonl, write_atomic
from ..params import ParameterError
from ..skills.formats import OFFICIAL_QUERY_FIELDS, load_query_types_file, load_skills_file

# The fields of the official release, in its order. `orig_instruction` equals `instruction` in the release.
OFFICIAL_FIELDS = ("orig_instruction", "instruction", "input", "output", "skills_joined_str", "query_type", "generator")
REQUIRED_TRAINING_FIELDS = ("instruction", "output")


# ---------------------------------------------------------------- official JSON list
def to_official(record: dict[str, Any]) -> dict[str, Any]:
    out = {name: record.get(name, "") for name in OFFICIAL_FIELDS}
    out["orig_instruction"] = record.get("orig_instruction") or record.get("instruction", "")
    out["input"] = record.get("input") or ""
    return out


def save_official_json(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    write_atomic(path, json.dumps([to_official(r) for r in records], indent=2, ensure_ascii=False))
    return path


# ---------------------------------------------------------------- datasets
# The background import of `datasets` competes with the event loop for the interpreter. It starts this long after
# the stage, once the first requests are out (every conversation started, the connections opened: the busiest
# moment of the loop; competing with it cost stage 2's benchmark 2-3 % of its rate). Stage 2 needs the module only
# when it saves, and imports it itself if it needs it sooner.
IMPORT_DELAY_S = 0.5
# While it runs, the interpreter hands the GIL over this often (default: every 5 ms), so the event loop waits a
# fraction of a millisecond for it, not 5 ms per wake-up (measured: 1.5-2.3 ms mean loop lag instead of 4-6 ms,
# and the import itself done in 0.7-0.9 s, not 2 s).
IMPORT_SWITCH_INTERVAL_S = 0.0005


def start_loading_datasets(delay_s: float = IMPORT_DELAY_S) -> None:
    """Import `datasets` in a background thread while the stage waits on the model: the import takes about a
    second, which would otherwise be added to the end of a run that is bound by network latency."""
    threading.Thread(target=_import_datasets, args=(delay_s,), name="import datasets", daemon=True).start()


def _import_datasets(delay_s: float = 0.0) -> None:
    if delay_s > 0:
        time.sleep(delay_s)
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, IMPORT_SWITCH_INTERVAL_S))
    ours = sys.getswitchinterval()
    try:
        importlib.import_module("datasets")
    finally:
        if sys.getswitchinterval() == ours:  # unless someone else changed it meanwhile
            sys.setswitchinterval(before)


def records_to_dataset(records: list[dict[str, Any]]):
    """A `datasets.Dataset`; the transcript becomes a list of {role, content} structs, the rest stays as is."""
    from datasets import Dataset  # heavy: `datasets` loads only when a dataset folder is written or read

    if not records:
        return Dataset.from_dict({name: [] for name in OFFICIAL_FIELDS[1:]})
    keys = list(dict.fromkeys(k for r in records for k in r))
    rows = [{k: r.get(k) for k in keys} for r in records]
    return Dataset.from_list(rows)


def save_hf_dataset(path: str | Path, records: list[dict[str, Any]]) -> Path:
    path = Path(path)
    records_to_dataset(records).save_to_disk(str(path))
    return path


def load_training_data(path: str | Path, parameter: str = "TRAIN_DATA"):
    """Training examples from a JSONL file, a saved `datasets` folder, or a JSON list (the official release format).

    Returns a `datasets.Dataset` with at least `instruction`, `input` ("" where missing) and `output`.
    """
    from datasets import Dataset, DatasetDict, load_from_disk  # heavy: see records_to_dataset

    p = Path(path).expanduser()
    if not p.exists():
        raise ParameterError(parameter, f"{str(path)!r} does not exist",
                             "point it at RUN_DIR/data/train.jsonl, a saved datasets folder or an official JSON list")
    if p.is_dir():
        ds = load_from_disk(str(p))
        if isinstance(ds, DatasetDict):
            if "train" not in ds:
                raise ParameterError(parameter, f"the dataset folder has splits {list(ds)} but no 'train'",
                                     "save the training split as 'train' or point at a single-split folder")
            ds = ds["train"]
    else:
        if p.suffix == ".jsonl":
            try:
                records = read_jsonl(p)  # user data loads completely or not at all
            except JSONLError as exc:
                raise ParameterError(parameter, str(exc), "fix the line, or point it at another file") from None
        else:
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ParameterError(parameter, f"{p.name} is not valid JSON ({exc.msg} at line {exc.lineno})",
                                     "use a .jsonl file with one record per line, or a JSON list of records") from exc
            records = data.get("data", data) if isinstance(data, dict) else data
            if not isinstance(records, list):
                raise ParameterError(parameter, "the JSON file is not a list of records", "use the official JSON list format")
        ds = Dataset.from_list(_for_arrow(records)) if records else Dataset.from_dict({"instruction": [], "input": [], "output": []})
    missing = [f for f in REQUIRED_TRAINING_FIELDS if f not in ds.column_names]
    if missing:
        raise ParameterError(parameter, f"the records lack the field(s) {missing}",
                             "each record needs 'instruction' and 'output' (and optionally 'input')")
    if "input" not in ds.column_names:
        ds = ds.add_column("input", [""] * len(ds))
    elif any(v is None for v in ds["input"]):
        ds = ds.map(lambda r: {"input": r["input"] or ""})
    return ds


def _for_arrow(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every record the same keys so Arrow can infer one schema for the whole file."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    return [{k: r.get(k) for k in keys} for r in records]


# ---------------------------------------------------------------- stage 1 inputs
def read_skills_file(path: str | Path, topic_headers: str = "auto") -> list[str]:
    """Skills from stage 1's `skills.jsonl` or an official `skills.txt` (read by stage 1's own reader;
    `topic_headers="none"` keeps every line, as the official code reads the file)."""
    records, _report = load_skills_file(path, topic_headers)
    return [r["skill"] for r in records]


def read_query_types_file(path: str | Path) -> list[dict[str, Any]]:
    """Query types ({name, definition, examples}, plus the official text when there is one) from
    `query_types.jsonl` or an official `queries.txt`."""
    types, _report = load_query_types_file(path)
    return [{"name": t["name"], "definition": t.get("definition") or "", "examples": list(t.get("examples") or []),
             **{k: t[k] for k in OFFICIAL_QUERY_FIELDS if t.get(k)}} for t in types]
