"""Eval-set loaders on the bundled data and on local fixtures in the hub datasets' schemas."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.evaluate.leaderboard import PAPER_LC_WIN_RATE, PAPER_MODEL, published_leaderboard
from helpers.evaluate.sets import load_alpaca_eval, load_bundled_eval_set, load_eval_set, load_mt_bench, load_wildbench
from helpers.params import ParameterError

FIX = Path(__file__).parent / "fixtures" / "eval"


def test_bundled_eval_set_is_varied_and_complete():
    items = load_bundled_eval_set()
    assert 45 <= len(items) <= 60
    assert len({it["id"] for it in items}) == len(items)
    assert len({it["category"] for it in items}) >= 8
    assert all(it["instruction"] and it["reference_output"] and it["checklist"] and it["groups"] for it in items)
    assert len(load_bundled_eval_set(limit=5)) == 5


def test_bundled_mt_bench_schema():
    qs = load_mt_bench()
    assert len(qs) >= 8 and all(len(q["turns"]) == 2 for q in qs)
    assert {q["category"] for q in qs if q["needs_reference"]} <= {"math", "reasoning", "coding"}
    assert any(q["needs_reference"] for q in qs)


def test_alpaca_eval_fixture():
    items = load_alpaca_eval(str(FIX / "alpaca_eval.json"))
    assert len(items) == 3 and items[1]["reference_output"] == "Bonjour."
    assert items[0]["reference_generator"] == "fixture_reference"


def test_mt_bench_fixtures_in_both_schemas():
    fastchat = load_mt_bench(str(FIX / "mt_bench_question.jsonl"))
    assert fastchat[1]["needs_reference"] and fastchat[1]["references"] == ["144", "12"]
    assert not fastchat[0]["needs_reference"]
    h4 = load_mt_bench(str(FIX / "mt_bench_prompts.jsonl"))
    assert h4[0]["turns"][1] == "And 100 days?" and h4[0]["needs_reference"]


def test_wildbench_fixture():
    items = load_wildbench(str(FIX / "wildbench.jsonl"))
    first = items[0]
    assert first["instruction"] == "Black with white paws."
    assert "ASSISTANT: What colour is it?" in first["history"]
    assert first["groups"] == ["Creative Tasks"]
    assert items[1]["groups"] == ["Coding & Debugging", "Planning & Reasoning"]
    assert len(first["messages"]) == 3


def test_unknown_eval_set():
    with pytest.raises(ParameterError):
        load_eval_set("nope")


def test_leaderboard_has_the_paper_row():
    lb = published_leaderboard(prefer_package=False)
    row = lb[lb["model"] == PAPER_MODEL]
    assert float(row["lc_win_rate"].iloc[0]) == PAPER_LC_WIN_RATE
    assert lb["lc_win_rate"].is_monotonic_decreasing
