"""Stage 4 asks the eval set and MT-Bench of a model at once (`evaluate.together.answer_all`): the same answers,
files and records as asking them one after the other, in fewer rounds."""
from __future__ import annotations

import json

from helpers.evaluate.answers import DecodingConfig, generate_answers
from helpers.evaluate.official_suite import mt_bench_answers
from helpers.evaluate.sets import load_bundled_eval_set, load_mt_bench
from helpers.evaluate.together import answer_all
from helpers.llm.client import connect_function
from helpers.runs import Run


def _model(messages, sampling):
    return f"t={sampling.get('temperature')} turn {len(messages) // 2 + 1}: {messages[-1]['content'][:30]}"


def test_eval_set_and_mt_bench_together_answer_as_apart(tmp_path):
    items, questions = load_bundled_eval_set()[:5], load_mt_bench()[:4]
    decoding = DecodingConfig(temperature=0.9, max_tokens=16, seed=3)
    client = connect_function(_model, model="fake-student", cache_path=tmp_path / "c.sqlite", max_concurrency=4)
    run = Run(tmp_path / "run")
    outputs, two_turn = answer_all(run, {"student": client}, items, decoding, "", questions, "fastchat_temperatures")
    apart = connect_function(_model, model="fake-student", use_cache=False)
    assert outputs["student"] == [a["output"] for a in generate_answers(apart, items, decoding)]
    assert two_turn["student"] == mt_bench_answers(apart, questions, decoding, "fastchat_temperatures")
    assert {a["decoding"]["temperature"] for a in two_turn["student"]} != {0.9}  # per-category temperatures
    saved = [json.loads(line) for line in (run.path / "eval" / "answers_student.jsonl").read_text().splitlines()]
    assert [s["output"] for s in saved] == outputs["student"] and saved[0]["generator"] == "fake-student"


def test_without_mt_bench_only_the_eval_set_is_answered(tmp_path):
    items = load_bundled_eval_set()[:3]
    client = connect_function(_model, model="fake-student", use_cache=False)
    outputs, two_turn = answer_all(Run(tmp_path / "run"), {"student": client}, items, DecodingConfig(max_tokens=8))
    assert len(outputs["student"]) == 3 and two_turn == {}
