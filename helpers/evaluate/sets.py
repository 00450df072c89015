"""Evaluation sets, all normalised to one record shape so answer generation and judging do not care where a
question came from.

Record: `id`, `instruction` (the user request), `category`, `reference_output` ("" if none), `checklist` (list),
`groups` (WildBench task groups), `history` (earlier turns as text, WildBench), and for two-turn sets `turns`
(list of user turns) and `references` (per-turn reference solutions or []).

Hub sets go through `datasets.load_dataset` (the real path); `source` may instead be a local file in the same
schema, which is how the tests and offline users feed them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..judge.metrics import MT_BENCH_REFERENCE_CATEGORIES, wildbench_groups
from ..jsonl import read_jsonl
from ..layout import BUNDLED_EVAL_SET, BUNDLED_MT_BENCH
from ..params import ParameterError

EVAL_SETS = ("bundled", "alpaca_eval", "wildbench")
ALPACA_EVAL_HUB = "tatsu-lab/alpaca_eval"
MT_BENCH_HUB = "HuggingFaceH4/mt_bench_prompts"
WILDBENCH_HUB = "allenai/WildBench"


def _is_local(source: str) -> bool:
    return bool(source) and Path(source).expanduser().exists()


def _load_records(source: str, hub_id: str, config: str | None, split: str,
                  parameter: str = "EVAL_SOURCE", chooser: str = "EVAL_SET") -> list[dict[str, Any]]:
    """Rows from a local JSON/JSONL file, or from the hub through `datasets` (needs network or a warm HF cache)."""
    import datasets  # heavy: imported only when a hub set or a local file in its schema is read

    if _is_local(source):
        ds = datasets.load_dataset("json", data_files=str(Path(source).expanduser()), split="train")
    else:
        try:
            ds = datasets.load_dataset(source or hub_id, config, split=split)
        except Exception as exc:  # offline, unknown id, gated: whatever `datasets` raises, say which parameter to change
            reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            raise ParameterError(parameter, f"cannot load {source or hub_id!r} from the Hugging Face hub ({reason})",
                                 f"go online once (the hub cache keeps it), set {parameter} to a local JSON/JSONL "
                                 f"copy, or set {chooser} to 'bundled' for the kit's own offline set") from None
    return [dict(row) for row in ds]


def _limit(records: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    return records[:limit] if limit else records


def load_bundled_eval_set(path: str | Path | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The kit's own ~50 varied instructions (written for the kit) with short reference answers and checklists."""
    rows = read_jsonl(Path(path) if path else BUNDLED_EVAL_SET)
    out = []
    for r in rows:
        out.append({"id": r["id"], "instruction": r["instruction"], "category": r["category"],
                    "reference_output": r.get("reference_output", ""), "checklist": list(r.get("checklist", [])),
                    "groups": wildbench_groups(r.get("wildbench_tag", "Others")), "history": ""})
    return _limit(out, limit)


def load_alpaca_eval(source: str = "", limit: int | None = None) -> list[dict[str, Any]]:
    """AlpacaEval's 805 instructions with the baseline model's outputs as `reference_output`.

    Schema: `instruction`, `output` (the reference model's answer), `generator`, `dataset`.
    """
    rows = _load_records(source, ALPACA_EVAL_HUB, "alpaca_eval_gpt4_baseline", "eval")
    out = []
    for i, r in enumerate(rows):
        out.append({"id": f"alpaca_eval-{i:04d}", "instruction": r["instruction"],
                    "category": r.get("dataset", "alpaca_eval"), "reference_output": r.get("output", ""),
                    "reference_generator": r.get("generator", ""), "checklist": [], "groups": [], "history": ""})
    return _limit(out, limit)


def _normalise_mt_bench(r: dict[str, Any]) -> dict[str, Any]:
    # FastChat's question.jsonl: question_id, category, turns, reference; HuggingFaceH4/mt_bench_prompts:
    # prompt_id, category, prompt, reference.
    turns = list(r.get("turns") or r.get("prompt") or [])
    refs = [x for x in (r.get("reference") or []) if x]
    category = r.get("category", "")
    return {"id": str(r.get("question_id", r.get("prompt_id", ""))), "category": category,
            "instruction": turns[0] if turns else "", "turns": turns, "references": refs,
            "needs_reference": category in MT_BENCH_REFERENCE_CATEGORIES and bool(refs)}


def load_mt_bench(source: str = "", limit: int | None = None) -> list[dict[str, Any]]:
    """MT-Bench's 80 two-turn questions (hub or local FastChat `question.jsonl`); "" and "bundled" give the kit's
    own 8 demo questions in the same schema."""
    if source in ("", "bundled"):
        rows = read_jsonl(BUNDLED_MT_BENCH)
    else:
        rows = _load_records(source, MT_BENCH_HUB, None, "train", "MT_BENCH_SOURCE", "MT_BENCH_SOURCE")
    return _limit([_normalise_mt_bench(r) for r in rows], limit)


def _conversation_text(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages) or "(none)"


def load_wildbench(source: str = "", limit: int | None = None, config: str = "v2") -> list[dict[str, Any]]:
    """WildBench tasks: the last user turn to answer, earlier turns as history, the task checklist and groups.

    Schema: `session_id`, `conversation_input` (list of {role, content}), `checklist`, `primary_tag`,
    `secondary_tags`, plus others we do not need.
    """
    rows = _load_records(source, WILDBENCH_HUB, config, "test")
    out = []
    for r in rows:
        conv = list(r["conversation_input"])
        last = conv[-1]["content"] if conv else ""
        out.append({"id": r["session_id"], "instruction": last, "category": r.get("primary_tag", ""),
                    "reference_output": "", "checklist": list(r.get("checklist") or []),
                    "groups": wildbench_groups(r.get("primary_tag", ""), r.get("secondary_tags") or []),
                    "history": _conversation_text(conv[:-1]), "messages": conv})
    return _limit(out, limit)


def load_eval_set(name: str, source: str = "", limit: int | None = None, parameter: str = "EVAL_SET") -> list[dict[str, Any]]:
    """Dispatch on the notebook parameter EVAL_SET."""
    if name == "bundled":
        return load_bundled_eval_set(source or None, limit)
    if name == "alpaca_eval":
        return load_alpaca_eval(source, limit)
    if name == "wildbench":
        return load_wildbench(source, limit)
    raise ParameterError(parameter, f"unknown eval set {name!r}", f"use one of {EVAL_SETS}")
