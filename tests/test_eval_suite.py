"""Answer generation, the three protocols end to end and the shirker probe, on scripted fake models."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers.evaluate.answers import (
    DecodingConfig,
    generate_answers,
    generate_two_turn_answers,
    read_selection,
    saved_chat_template,
)
from helpers.evaluate.official_suite import mt_bench_table, scores_summary, wb_score_table
from helpers.evaluate.pairwise import pairwise_table
from helpers.evaluate.sets import load_bundled_eval_set, load_mt_bench
from helpers.evaluate.suite import (
    mt_bench_scores,
    shirker_probe,
    shirker_response,
    wildbench_scores,
)
from helpers.judge.judging import JudgeUnreadable
from helpers.llm.client import connect, connect_function
from helpers.llm.fake_openai import FakeOpenAIServer
from helpers.params import ParameterError


def _student(messages, sampling):
    return f"A long and careful answer to: {messages[-1]['content']} " * (2 if len(messages) > 1 else 1)


def _judge(messages, sampling):
    prompt = messages[-1]["content"]
    if "<<<BEGIN RESPONSE A>>>" in prompt:  # prefer the longer response
        a = prompt.split("<<<BEGIN RESPONSE A>>>")[1].split("<<<END RESPONSE A>>>")[0]
        b = prompt.split("<<<BEGIN RESPONSE B>>>")[1].split("<<<END RESPONSE B>>>")[0]
        return "A" if len(a) >= len(b) else "B"
    if "Checklist" in prompt:
        return '{"strengths": "ok", "weaknesses": "none", "score": "7"}'
    return "Reasonable. Rating: [[6]]" if "REFERENCE SOLUTION" not in prompt else "Rating: [[3]]"


@pytest.fixture()
def clients(tmp_path):
    s = connect_function(_student, model="fake-student", stage="evaluate", cache_path=tmp_path / "c.sqlite")
    j = connect_function(_judge, model="fake-judge", stage="evaluate", role="JUDGE", cache_path=tmp_path / "c.sqlite")
    return s, j


def test_decoding_validation():
    assert DecodingConfig().sampling() == {"temperature": 0.9, "top_p": 1.0, "max_tokens": 2048, "seed": 0}
    with pytest.raises(ParameterError):
        DecodingConfig(temperature=5).validate()


def test_selection_and_saved_template(tmp_path):
    with pytest.raises(ParameterError):
        read_selection(tmp_path)
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "selection.json").write_text(json.dumps({"best_checkpoint": "x", "chat_template": "alpaca"}))
    assert read_selection(tmp_path)["chat_template"] == "alpaca"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    assert saved_chat_template(tmp_path) == "{{ x }}"
    (tmp_path / "chat_template.jinja").write_text("{{ y }}")
    assert saved_chat_template(tmp_path) == "{{ y }}"


def test_protocols_end_to_end(clients):
    student, judge = clients
    items = load_bundled_eval_set(limit=6)
    answers = generate_answers(student, items, DecodingConfig(max_tokens=32))
    outputs = [a["output"] for a in answers]
    refs = [it["reference_output"] for it in items]
    short = ["ok"] * len(items)
    summary, per_item = pairwise_table(judge, items, {"student": outputs, "terse": short}, refs, seed=0)
    s = summary.set_index("model")
    assert s.loc["terse", "win_rate"] == 0 and s.loc["student", "n_scored"] == 6
    assert len(per_item) == 12

    qs = load_mt_bench()[:4]
    two = generate_two_turn_answers(student, qs, DecodingConfig(max_tokens=32))
    assert all(len(a["answers"]) == 2 and a["answers"][1] for a in two)
    mt = mt_bench_scores(judge, qs, {"student": two})
    assert len(mt) == 8 and set(mt["turn"]) == {1, 2}
    guided = mt[mt["judge"] == "mt_bench_single_reference"]
    assert len(guided) and (guided["score"] == 3).all()
    wb = wildbench_scores(judge, items, {"student": outputs})
    table = scores_summary(mt_bench_table(mt), wb_score_table(wb)).set_index("model")
    assert table.loc["student", "mt_bench_unparsed"] == 0 and table.loc["student", "wb_unparsed"] == 0
    assert table.loc["student", "wb_score"] == pytest.approx((7 - 5) * 2 * 10)


def test_shirker_responses_and_probe(clients):
    _, judge = clients
    assert shirker_response("First. Second sentence.", "x", "brevity") == "First."
    junk = shirker_response("anything", "Plan a trip to Rome for me", "junk")
    assert "Plan a trip to Rome" in junk and len(junk) > 500
    with pytest.raises(ValueError):
        shirker_response("a", "b", "lazy")
    items = load_bundled_eval_set(limit=6)
    outputs = [it["reference_output"] * 3 for it in items]
    refs = [it["reference_output"] for it in items]
    curve = shirker_probe(judge, items, outputs, refs, fractions=[0, 0.5], kinds=["brevity"], seed=1)
    assert list(curve["SHIRKER_FRACTION"]) == [0, 0.5]
    assert curve["win_rate"].iloc[1] < curve["win_rate"].iloc[0]
    assert isinstance(curve, pd.DataFrame)


def _longer_output_label(messages, body):
    """An alpaca_eval-style judge that prefers the longer of the two outputs it is shown."""
    first, second = (part.split('"""')[0] for part in messages[-1]["content"].split('"output": """')[1:3])
    return "m" if len(first) >= len(second) else "M"


def test_probe_and_table_with_an_alpaca_eval_judge(tmp_path):
    items = load_bundled_eval_set(limit=8)
    refs = [it["reference_output"] for it in items]
    outputs = [r[: max(1, len(r) // 2)] for r in refs]  # shorter than the references: they lose
    with FakeOpenAIServer(models=("gpt-4-1106-preview",), reply_fn=_longer_output_label) as server:
        judge = connect("gpt-4-1106-preview", server.base_url, "", 4, stage="evaluate", role="JUDGE",
                        cache_path=tmp_path / "cache.sqlite", show_progress=False)
        curve = shirker_probe(judge, items, outputs, refs, fractions=[0, 0.5], kinds=["junk"], seed=1,
                              judge="alpaca_eval:weighted_alpaca_eval_gpt4_turbo")
    # junk stand-ins are long, so this judge prefers them: the probe shows how a judge can be gamed by length
    assert list(curve["win_rate"]) == [0.0, 50.0]
    assert (curve["n_scored"] == len(items)).all()


def test_a_judge_whose_replies_cannot_be_read_stops_the_table(tmp_path):
    items = load_bundled_eval_set(limit=4)
    refs = [it["reference_output"] for it in items]
    with FakeOpenAIServer(models=("gpt-4-1106-preview",), reply_fn=lambda messages, body: "neither") as server:
        judge = connect("gpt-4-1106-preview", server.base_url, "", 4, stage="evaluate", role="JUDGE",
                        cache_path=tmp_path / "cache.sqlite", show_progress=False)
        with pytest.raises(JudgeUnreadable, match="weighted_alpaca_eval_gpt4_turbo.*could be read"):
            pairwise_table(judge, items, {"student": refs}, refs, 0, "alpaca_eval:weighted_alpaca_eval_gpt4_turbo")
