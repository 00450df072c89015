"""alpaca_eval's judges read from the package at run time: prompt, sampling, output order and the logprob parser
(incl. -inf for a label missing from the top logprobs), each compared with alpaca_eval's own functions."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alpaca_eval_ref import import_reference
from helpers.judge.official_alpaca_eval import (alpaca_eval_judgments, chat_messages, fill_prompt, is_switched,
                                                load_alpaca_eval_judge, preference_from_top_logprobs,
                                                supported_evaluators)
from helpers.llm.types import ChatResult
from helpers.params import ParameterError

CASES = [
    {"m": -0.1, "M": -2.4, "Both": -5.0},
    {"M": -0.01, "m": -4.6},
    {"m": -0.3, "The": -1.0},            # M missing: -inf, so P(m) = 1
    {"M": -0.3, "The": -1.0},            # m missing: P(m) = 0
    {"The": -0.1, " m": -1.0, "M ": -2.0},  # no exact label: unparsed
    {"m": -0.69314718, "M": -0.69314718},
    {},
]


def _theirs(parser, top: dict[str, float], binarize: bool) -> float:
    completion = {"logprobs": {"content": [{"top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()]}]}}
    return parser(completion, numerator_token="m", denominator_tokens=["m", "M"], is_binarize=binarize)[0]


@pytest.mark.parametrize("binarize", [False, True])
def test_parser_equals_alpaca_eval_logprob_parser(binarize):
    parser = import_reference("completion_parsers").logprob_parser
    for top in CASES:
        ours = preference_from_top_logprobs(top, "m", ["m", "M"], binarize)
        ref = _theirs(parser, top, binarize) if top else math.nan
        assert (math.isnan(ours) and np.isnan(ref)) or ours == pytest.approx(ref, abs=1e-12), top


def test_minus_infinity_rule_by_hand():
    assert preference_from_top_logprobs({"m": -0.3, "x": -1}, "m", ["m", "M"], False) == 1.0
    assert preference_from_top_logprobs({"M": -0.3, "x": -1}, "m", ["m", "M"], False) == 2.0
    p = preference_from_top_logprobs({"m": math.log(0.6), "M": math.log(0.2)}, "m", ["m", "M"], False)
    assert p == pytest.approx(2 - 0.75)


def test_weighted_judge_reads_the_package_config():
    judge = load_alpaca_eval_judge("weighted_alpaca_eval_gpt4_turbo")
    assert judge.sampling()["max_tokens"] == 1 and judge.sampling()["top_logprobs"] == 5
    assert judge.sampling()["temperature"] == 1.0 and judge.config_model == "gpt-4-1106-preview"
    assert (judge.numerator_token, judge.denominator_tokens, judge.is_binarize) == ("m", ["m", "M"], False)
    assert judge.describe()["prompt_source"]["version"] == "0.6.6"
    assert "alpaca_eval_clf_gpt4_turbo" in supported_evaluators()
    with pytest.raises(ParameterError, match="not supported"):
        load_alpaca_eval_judge("weighted_alpaca_eval_cot_gpt4_turbo")
    with pytest.raises(ParameterError, match="no evaluator"):
        load_alpaca_eval_judge("no_such_judge")


def test_prompt_and_order_equal_alpaca_eval():
    utils = import_reference("utils")
    processors = import_reference("processors")
    judge = load_alpaca_eval_judge("weighted_alpaca_eval_gpt4_turbo")
    df = pd.DataFrame({"instruction": ["Say {hi}", "Add 2+2", "Name a fruit", "Write a haiku"],
                       "output_1": ["ref {a}", "4", "apple", "x"], "output_2": ["cand", "5", "pear", "y"]})
    prompts, _ = utils.make_prompts(df, judge.prompt_template)
    for row, prompt in zip(df.to_dict("records"), prompts):
        assert fill_prompt(judge.prompt_template, **row) == prompt
        assert chat_messages(prompt) == utils.prompt_to_chatml(prompt)
    switch = processors.RandomSwitchTwoColumnsProcessor(two_columns_to_switch=["output_1", "output_2"],
                                                        random_seed_columns=["instruction"], seed=0,
                                                        _switch_column="is_switched_outputs")
    many = pd.DataFrame({"instruction": [f"instruction {i}" for i in range(40)], "output_1": "a", "output_2": "b"})
    theirs = switch.preprocess(many)["output_1"].eq("b").tolist()
    assert [is_switched(i) for i in many["instruction"]] == theirs and 0 < sum(theirs) < 40


def test_alpaca_eval_annotator_seed_is_zero():
    """The order draw uses alpaca_eval's default annotator seed; check it on a real annotator when one can be built."""
    annotators = import_reference("annotators")
    try:
        annotator = annotators.PairwiseAnnotator(annotators_config="weighted_alpaca_eval_gpt4_turbo")
    except Exception as exc:  # its decoders may need packages the kit does not install
        pytest.skip(f"cannot build alpaca_eval's annotator here: {exc}")
    single = next(iter(annotator.annotators.values()))
    assert single.processors[0].seed == 0


class _Client:
    """Answers with fixed top logprobs: output_1 ('m') preferred with probability .8."""

    def __init__(self):
        self.calls = []

    def chat_many(self, requests, desc="", **sampling):
        self.calls.append(sampling)
        return [ChatResult(text="m", top_logprobs=[{"m": math.log(0.8), "M": math.log(0.2)}]) for _ in requests]


def test_judgments_map_back_to_the_candidate():
    judge = load_alpaca_eval_judge("weighted_alpaca_eval_gpt4_turbo")
    instructions = [f"instruction {i}" for i in range(12)]
    client = _Client()
    judgments, prefs = alpaca_eval_judgments(client, instructions, ["c"] * 12, ["r"] * 12, judge)
    assert client.calls == [{"max_tokens": 1, "temperature": 1.0, "top_logprobs": 5}]
    for j, p, instr in zip(judgments, prefs, instructions):
        # the output shown first gets .8; unswitched that is the reference (pref 1.2), switched the candidate (1.8)
        assert p == pytest.approx(1.8 if is_switched(instr) else 1.2)
        assert j.preference == pytest.approx(p - 1) and j.candidate_first == is_switched(instr)
