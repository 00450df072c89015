"""Probability-weighted grades (G-Eval) where an in-process judge wrote no grade: the arithmetic, the requests that
continue the judge's own reply after its rating prefix, the labels in the rows and the separate summaries."""
from __future__ import annotations

import math

import pytest

from helpers.evaluate.official_suite import mt_bench_table, scores_summary, wb_score_table
from helpers.evaluate.record import record_mt_bench
from helpers.evaluate.sets import load_mt_bench
from helpers.evaluate.suite import mt_bench_scores, wildbench_scores
from helpers.judge.judging import load_judge
from helpers.judge.weighted_grades import (GRADE_SOURCE_PARSED, GRADE_SOURCE_WEIGHTED, WEIGHTED_LABEL,
                                           grade_probabilities, weighted_grade)
from helpers.llm.client import connect, connect_function
from helpers.llm.types import ChatResult
from helpers.runs import Run


def test_grade_probabilities_split_one_and_ten_and_normalise():
    first = {"7": math.log(0.5), " 8": math.log(0.3), "1": math.log(0.1), "The": math.log(0.1)}
    after = {"1": {"0": math.log(0.5), "]]": math.log(0.5)}}
    probs = grade_probabilities(first, after, list(range(1, 11)))
    assert probs[7] == pytest.approx(0.5) and probs[8] == pytest.approx(0.3)
    assert probs[1] == pytest.approx(0.05) and probs[10] == pytest.approx(0.05)
    grade = weighted_grade(probs)
    assert grade.mass == pytest.approx(0.9)
    assert grade.value == pytest.approx((7 * 0.5 + 8 * 0.3 + 1 * 0.05 + 10 * 0.05) / 0.9)
    assert sum(grade.probabilities.values()) == pytest.approx(1.0)
    # without the step after "1", p("1") stays with grade 1
    assert grade_probabilities(first, {}, list(range(1, 11)))[1] == pytest.approx(0.1)
    # a judge that barely means a number there gives no grade
    assert weighted_grade(grade_probabilities({"The": -0.05, "7": math.log(0.05)}, {}, list(range(1, 11)))) is None


class ContinuingJudge:
    """A judge that explains without a rating, except for answers containing 'GOOD' (it writes [[9]], or a JSON
    object with score 9 where the prompt asks for one, then); asked to
    continue its reply after 'Rating: [[' it puts 0.6 on 8 and 0.4 on 1 (of which half goes on to '0')."""

    def __init__(self) -> None:
        self.continuations: list[str] = []

    def __call__(self, messages, sampling):
        last = messages[-1]
        if last["role"] == "assistant":
            self.continuations.append(last["content"])
            assert sampling["max_tokens"] == 1 and sampling["top_logprobs"] >= 10
            step = ({"0": math.log(0.5), "]]": math.log(0.5)} if last["content"].endswith("1")
                    else {"8": math.log(0.6), "1": math.log(0.4)})
            return ChatResult(text="x", finish_reason="length", top_logprobs=[step])
        if "GOOD" in last["content"]:  # in the judge's declared format: one JSON object for the checklist judge
            if '"score"' in last["content"]:
                return '{"strengths": "fine", "weaknesses": "none", "score": "9"}'
            return "A fine answer. Rating: [[9]]"
        return "The answer is short and says little."


def _judge_client(judge, continues: bool):
    client = connect_function(judge, "smollm2-135m-instruct", use_cache=False, role="JUDGE")
    client.backend.continues_final_message = continues  # as the in-process backend declares
    return client


def _two_turn_answers(texts):
    return [{"answers": [t, t]} for t in texts]


def test_mt_bench_rows_label_weighted_grades_and_keep_parsed_ones(tmp_path):
    questions = [q for q in load_mt_bench() if not q.get("needs_reference")][:2]
    judge = ContinuingJudge()
    rows = mt_bench_scores(_judge_client(judge, True), questions,
                           {"student": _two_turn_answers(["meh", "GOOD answer"])})
    expected = (8 * 0.6 + 1 * 0.2 + 10 * 0.2) / 1.0
    weighted = rows[rows["grade_source"] == GRADE_SOURCE_WEIGHTED]
    parsed = rows[rows["grade_source"] == GRADE_SOURCE_PARSED]
    assert len(weighted) == 2 and weighted["score"].isna().all()  # never written into the parsed column
    assert weighted["weighted_score"].tolist() == pytest.approx([expected, expected])
    assert len(parsed) == 2 and (parsed["score"] == 9).all() and parsed["weighted_score"].isna().all()
    # the judge's own reply is continued after its rating prefix; "[[1" is asked once more to split 1 from 10
    assert all(c.startswith("The answer is short and says little.\n\n") for c in judge.continuations)
    assert sorted(c[-10:] for c in judge.continuations) == ["Rating: [[", "Rating: [[", "ating: [[1", "ating: [[1"]

    table = mt_bench_table(rows).set_index("model")
    assert table.loc["student", "mt_bench_avg"] == 9 and table.loc["student", "n_graded"] == 2
    assert table.loc["student", "mt_bench_weighted_avg"] == pytest.approx(expected)
    assert table.loc["student", "n_weighted"] == 2
    run = Run(tmp_path / "run")
    run.begin_stage("evaluate", {})
    record_mt_bench(run, rows)
    results = run.results()["evaluate"]
    assert results["mt_bench_avg"]["value"] == 9 and results["mt_bench_weighted_avg"]["value"] == pytest.approx(expected)
    assert results["mt_bench_weighted_avg"]["n"] == 2 and results["weighted_grade_label"] == WEIGHTED_LABEL


def test_no_weighted_grade_from_a_judge_that_cannot_continue_a_reply():
    questions = [q for q in load_mt_bench() if not q.get("needs_reference")][:1]
    judge = ContinuingJudge()
    rows = mt_bench_scores(_judge_client(judge, False), questions, {"student": _two_turn_answers(["meh"])})
    assert judge.continuations == [] and rows["weighted_score"].isna().all() and rows["grade_source"].isna().all()
    table = mt_bench_table(rows)
    assert "mt_bench_weighted_avg" not in table and "n_weighted" not in table


def test_wildbench_weighted_score_is_its_own_number():
    items = [{"id": f"t{i}", "instruction": "Plan a picnic.", "groups": ["Planning & Reasoning"]} for i in range(3)]
    judge = ContinuingJudge()
    rows = wildbench_scores(_judge_client(judge, True), items, {"student": ["meh", "meh", "GOOD"]})
    assert rows["grade_source"].tolist() == [GRADE_SOURCE_WEIGHTED, GRADE_SOURCE_WEIGHTED, GRADE_SOURCE_PARSED]
    assert all(c.endswith('"score": "') for c in judge.continuations if not c.endswith("1"))
    table = wb_score_table(rows).set_index("model")
    assert table.loc["student", "wb_score"] == pytest.approx((9 - 5) * 2 * 10)  # the one written grade alone
    assert table.loc["student", "n_graded"] == 1 and table.loc["student", "n_weighted"] == 2
    assert table.loc["student", "wb_score_weighted"] == pytest.approx(((8 * 0.6 + 0.2 + 2.0) - 5) * 2 * 10)
    assert "wb_score_weighted" in scores_summary(mt_bench_table(rows.iloc[:0]), wb_score_table(rows))


def test_in_process_model_continues_a_trailing_assistant_message(tiny_base):
    template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    client = connect(str(tiny_base), use_cache=False, chat_template=template, role="JUDGE")
    assert client.backend.continues_final_message
    from helpers.llm.local_backend import render_prompt

    tok = client.backend._loaded().tokenizer
    text = render_prompt(tok, [{"role": "user", "content": "Grade it."}, {"role": "assistant", "content": "Rating: [["}])
    assert text.endswith("<assistant>Rating: [[")  # continued, not closed and answered anew
    result = client.chat([{"role": "user", "content": "Grade it."}, {"role": "assistant", "content": "Rating: [["}],
                         max_tokens=1, temperature=0.0, top_logprobs=5)
    assert result.ok and len(result.top_logprobs) == 1 and 0 < len(result.top_logprobs[0]) <= 5
    assert load_judge("mt_bench_single").rating_prefix == "Rating: [["
