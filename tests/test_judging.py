"""Judges: loading, preference from log-probabilities and verdicts, order swapping, unparsed replies."""
from __future__ import annotations

import math

import pytest

from helpers.judge.judging import (
    available_judges,
    first_label_from_verdict,
    first_label_probability_from_logprobs,
    judge_messages,
    load_judge,
    pairwise_judgments,
    parse_rating,
    presentation_order,
    rate_answers,
)
from helpers.judge.named import compare_pairwise
from helpers.llm.client import PermanentError, connect_function
from helpers.llm.types import ChatResult
from helpers.params import ParameterError


def test_bundled_judges_load():
    names = available_judges()
    for name in ("alpaca_eval_pairwise", "mt_bench_single", "mt_bench_single_reference", "wildbench_checklist"):
        assert name in names
        judge = load_judge(name)
        assert judge.user and judge.kind in ("pairwise", "single", "checklist")
    assert load_judge("mt_bench_single").user_two_turn
    assert load_judge("mt_bench_single_reference").needs_reference


def test_unknown_judge_is_a_parameter_error():
    with pytest.raises(ParameterError) as err:
        load_judge("no_such_judge", parameter="PAIRWISE_JUDGE")
    assert err.value.name == "PAIRWISE_JUDGE"


def test_judge_prompt_missing_value_names_the_file():
    judge = load_judge("mt_bench_single")
    assert "The answer" in judge_messages(judge, {"question": "Q?", "answer": "The answer", "turn": 1})[-1]["content"]
    with pytest.raises(KeyError, match=r"mt_bench_single.*user_two_turn.txt.*\{answer_2\}"):
        judge_messages(judge, {"question_1": "a", "answer_1": "b", "question_2": "c"}, two_turn=True)


def test_preference_from_logprobs():
    labels = ["A", "B"]
    p = first_label_probability_from_logprobs([{"A": math.log(0.6), " B": math.log(0.2), "The": math.log(0.1)}], labels)
    assert p == pytest.approx(0.75)
    # only one label visible: the other gets the smallest listed probability
    p = first_label_probability_from_logprobs([{"B": math.log(0.7), "x": math.log(0.1)}], labels)
    assert p == pytest.approx(0.1 / 0.8)
    assert first_label_probability_from_logprobs([{"hello": -0.1}], labels) is None
    assert first_label_probability_from_logprobs(None, labels) is None


def test_preference_from_verdict():
    judge = load_judge("alpaca_eval_pairwise")
    assert first_label_from_verdict("A", judge) == 1.0
    assert first_label_from_verdict("B.", judge) == 0.0
    assert first_label_from_verdict("Response B is better.", judge) is None  # not the declared format
    assert first_label_from_verdict("(A)", judge) == 1.0
    assert first_label_from_verdict("I cannot tell", judge) is None
    assert first_label_from_verdict("", judge) is None


def test_presentation_order_is_seeded_and_mixed():
    a, b = presentation_order(200, 1), presentation_order(200, 1)
    assert a == b and 60 < sum(a) < 140
    assert presentation_order(200, 2) != a


def _fake_judge(mode: str):
    """A scripted judge that always prefers the response containing GOOD."""

    def fn(messages, sampling):
        prompt = messages[-1]["content"]
        if "UNREADABLE" in prompt:
            return "I refuse to choose."
        if "BROKEN" in prompt:
            raise PermanentError("judge endpoint rejected the request")
        a = prompt.split("<<<BEGIN RESPONSE A>>>")[1].split("<<<END RESPONSE A>>>")[0]
        winner = "A" if "GOOD" in a else "B"
        if mode == "logprobs":
            other = "B" if winner == "A" else "A"
            return ChatResult(text=winner, finish_reason="length", top_logprobs=[{winner: math.log(0.8), other: math.log(0.2)}])
        return winner

    return fn


@pytest.mark.parametrize("mode", ["logprobs", "verdict"])
def test_pairwise_maps_order_back(tmp_path, mode):
    client = connect_function(_fake_judge(mode), model="fake-judge", stage="test", cache_path=tmp_path / "c.sqlite")
    n = 12
    instructions = [f"task {i}" for i in range(n)]
    outputs = ["GOOD answer"] * n
    refs = ["bad answer"] * n
    judgments = pairwise_judgments(client, instructions, outputs, refs, seed=3)
    assert {j.candidate_first for j in judgments} == {True, False}
    expected = 0.8 if mode == "logprobs" else 1.0
    assert all(j.preference == pytest.approx(expected) for j in judgments)
    assert all(j.source == mode for j in judgments)
    # the reference wins when it is the good one
    result, _ = compare_pairwise(client, instructions, refs, outputs, seed=3)
    assert result["win_rate"] == pytest.approx(100 - expected * 100)
    assert result["n_scored"] == n and result["n_unparsed"] == 0


def test_unparsed_and_failed_judgments_are_counted_and_excluded(tmp_path):
    client = connect_function(_fake_judge("verdict"), model="fake-judge", stage="test", cache_path=tmp_path / "c.sqlite")
    instructions = ["t0", "t1 UNREADABLE", "t2 BROKEN", "t3"]
    result, judgments = compare_pairwise(client, instructions, ["GOOD"] * 4, ["bad"] * 4, seed=0)
    assert result["n_unparsed"] == 2 and result["n_scored"] == 2
    assert judgments[1].preference is None and judgments[2].preference is None
    assert result["win_rate"] == pytest.approx(100.0)


def test_parse_rating():
    judge = load_judge("mt_bench_single")
    assert parse_rating("Solid answer. Rating: [[7]]", judge) == 7
    assert parse_rating("Rating: [[8.5]]", judge) == 8.5
    assert parse_rating("Rating: [[42]]", judge) is None  # out of range
    assert parse_rating("Rating: [[4]] oops, I mean [6]", judge) is None  # the reply does not end with a rating
    assert parse_rating("no number here", judge) is None
    wb = load_judge("wildbench_checklist")
    assert parse_rating('{"strengths": "x", "weaknesses": "y", "score": "6"}', wb) == 6


def test_rate_answers_single_two_turn_and_checklist(tmp_path):
    seen = []

    def fn(messages, sampling):
        seen.append(messages[-1]["content"])
        if "JSON object" in messages[-1]["content"]:  # the checklist judge's declared format
            return '{"strengths": "short", "weaknesses": "none", "score": "6"}'
        return "Fine. Rating: [[6]]" if "second user turn" not in messages[-1]["content"] else "nothing"

    client = connect_function(fn, model="fake-judge", stage="test", cache_path=tmp_path / "c.sqlite")
    items = [{"question": "q", "answer": "a"},
             {"question_1": "q1", "answer_1": "a1", "question_2": "q2", "answer_2": "a2", "turn": 2}]
    ratings = rate_answers(client, items, "mt_bench_single")
    assert [r.score for r in ratings] == [6, None]
    assert ratings[1].turn == 2
    ratings = rate_answers(client, [{"question": "q", "answer": "a", "checklist": ["Is it short?"]}], "wildbench_checklist")
    assert "- Is it short?" in seen[-1] and ratings[0].score == 6
    with pytest.raises(ParameterError):
        rate_answers(client, items, "alpaca_eval_pairwise")


def test_describe_names_the_prompts_by_fingerprint(tmp_path):
    import shutil

    from helpers.judge.judging import JUDGES_DIR

    folder = tmp_path / "my_judge"
    shutil.copytree(JUDGES_DIR / "alpaca_eval_pairwise", folder)
    before = load_judge(str(folder)).describe()
    assert "user" not in before and "path" not in before and len(before["prompt_fingerprint"]) == 16
    (folder / "user.txt").write_text((folder / "user.txt").read_text() + "\nBe brief.\n")
    assert load_judge(str(folder)).describe()["prompt_fingerprint"] != before["prompt_fingerprint"]
