"""The owners' MT-Bench and WildBench judges on the shared reference files, per-category MT-Bench sampling,
WB-Reward arithmetic, the small-number flag, and stage 4 judging published outputs with alpaca_eval's judge
against an OpenAI-compatible endpoint that returns logprobs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers.evaluate.answers import DecodingConfig
from helpers.evaluate.candidates import candidate_outputs
from helpers.evaluate.config import EvalConfig
from helpers.evaluate.official_suite import (
    mt_bench_answers,
    mt_bench_decoding,
    mt_bench_rows,
    wb_reward_rows,
    wb_reward_table,
    wildbench_rows,
)
from helpers.evaluate.pairwise import pairwise_table
from helpers.evaluate.sets import load_alpaca_eval
from helpers.judge.named import load_named_judge
from helpers.judge.official_fastchat import grading_values, parse_rating
from helpers.judge.official_wildbench import (
    candidate_reward,
    not_judged,
    parse_choice,
    parse_score,
    shorten,
    wb_reward,
)
from helpers.judge.small_numbers import reportable, small_number_flag
from helpers.llm.client import connect, connect_function
from helpers.llm.fake_openai import FakeOpenAIServer
from helpers.llm.types import ChatResult, Conversation
from helpers.params import ParameterError
from helpers.runs import PROJECT_ROOT

REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"


def _clone(tmp_path: Path, files: dict[str, Path]) -> Path:
    """A folder laid out like the owner's repository, holding the shared reference copies (test data only)."""
    for inside, source in files.items():
        if not source.is_file():
            pytest.skip(f"reference file {source} is absent")
        (tmp_path / inside).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, tmp_path / inside)
    return tmp_path


@pytest.fixture
def fastchat_repo(tmp_path):
    base = REFERENCE / "fastchat"
    return str(_clone(tmp_path / "FastChat", {
        "fastchat/llm_judge/data/judge_prompts.jsonl": base / "judge_prompts.jsonl",
        "fastchat/llm_judge/data/mt_bench/question.jsonl": base / "mt_bench" / "question.jsonl",
        "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl": base / "mt_bench" / "reference_answer" / "gpt-4.jsonl"}))


@pytest.fixture
def wildbench_repo(tmp_path):
    base = REFERENCE / "wildbench"
    return str(_clone(tmp_path / "WildBench", {
        "evaluation/eval_template.score.v2.md": base / "eval_template.score.v2.md",
        "evaluation/eval_template.pairwise.v2.md": base / "eval_template.pairwise.v2.md"}))


# ---------------------------------------------------------------------------------------------- FastChat


def test_fastchat_judges_load_and_fill(fastchat_repo):
    judges = load_named_judge("fastchat:single-v1", fastchat_repo=fastchat_repo)
    assert judges.plain.sampling() == {"max_tokens": 2048, "temperature": 0.0}
    assert judges.pick("writing", 1).name == "single-v1" and judges.pick("math", 2).name == "single-math-v1-multi-turn"
    assert judges.describe()["prompt_source"]["matches_pin"] is True
    assert len(judges.references) == 30
    question = {"id": "111", "category": "math", "turns": ["q1 {x}", "q2"]}
    values = grading_values(question, ["a1", "a2"], 2, judges.references)
    assert values["ref_answer_2"] == judges.references["111"][1]
    messages = judges.pick("math", 2).messages(**values)
    assert "q1 {x}" in messages[1]["content"] and judges.references["111"][0] in messages[1]["content"]
    with pytest.raises(ParameterError):
        load_named_judge("fastchat:pair-v2", fastchat_repo=fastchat_repo)


def test_fastchat_rating_regexes():
    assert parse_rating("good. Rating: [[7]] and later [[3]]") == 7.0
    assert parse_rating("Rating: [8.5]") == 8.5
    assert parse_rating("no rating") is None


def test_mt_bench_sampling_per_category():
    base = DecodingConfig(0.9, 0.95, 96, 3)
    assert mt_bench_decoding("writing", base, "fastchat").sampling() == {"temperature": 0.7, "top_p": 1.0,
                                                                         "max_tokens": 1024, "seed": 3}
    assert mt_bench_decoding("stem", base, "fastchat").temperature == 0.1
    assert mt_bench_decoding("coding", base, "fastchat_temperatures").max_tokens == 96
    assert mt_bench_decoding("math", base, "answer") == base
    seen = []

    class Client:
        def converse_many(self, chats, desc="", **sampling):
            seen.append((len(chats), sampling["temperature"], sampling["max_tokens"]))
            return [Conversation(results=[ChatResult(text="x"), ChatResult(text="y")]) for _ in chats]

    questions = [{"id": str(i), "category": c, "turns": ["a", "b"]}
                 for i, c in enumerate(["writing", "math", "roleplay", "stem"])]
    answers = mt_bench_answers(Client(), questions, base, "fastchat")
    assert sorted(seen) == [(1, 0.0, 1024), (1, 0.1, 1024), (2, 0.7, 1024)]
    assert [a["id"] for a in answers] == ["0", "1", "2", "3"] and answers[1]["decoding"]["temperature"] == 0.0


def test_fastchat_grading_end_to_end(fastchat_repo):
    questions = [{"id": "81", "category": "writing", "turns": ["w1", "w2"]},
                 {"id": "111", "category": "math", "turns": ["m1", "m2"]}]
    seen = []

    def judge(messages, sampling):
        seen.append((messages[0]["content"][:20], sampling["max_tokens"]))
        return "Rating: [[6]]" if "m1" not in messages[1]["content"] else "[[9]] then [2]"

    client = connect_function(judge, use_cache=False)
    rows = mt_bench_rows(client, questions, {"student": [{"answers": ["x", "y"]}, {"answers": ["z", "w"]}]},
                         "fastchat:single-v1", "fastchat:single-math-v1", lambda n: None, fastchat_repo)
    assert list(rows["score"]) == [6.0, 6.0, 9.0, 9.0] and all(t == 2048 for _, t in seen)
    assert list(rows["judge"]) == ["fastchat:single-v1", "fastchat:single-v1-multi-turn", "fastchat:single-math-v1",
                                   "fastchat:single-math-v1-multi-turn"]


# ---------------------------------------------------------------------------------------------- WildBench


WB_ITEM = {"id": "s1", "instruction": "last question", "checklist": ["Is it correct?", "Is it clear?"],
           "groups": ["Math & Data Analysis"],
           "messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "hi"},
                        {"role": "user", "content": "last question"}]}


def test_wildbench_templates_fill_and_parse(wildbench_repo):
    score = load_named_judge("wildbench:score.v2", wildbench_repo=wildbench_repo)
    pair = load_named_judge("wildbench:pairwise.v2", wildbench_repo=wildbench_repo)
    assert score.kind == "checklist" and pair.kind == "pairwise" and score.source["matches_pin"] is True
    client = connect_function(lambda m, s: '```json\n{"strengths": "x", "score": "7"}\n```', use_cache=False)
    rows = wildbench_rows(client, [WB_ITEM, {**WB_ITEM, "id": "s9"}, {"id": "b1", "instruction": "bundled"}],
                          {"student": ["answer", "", "other"]}, "wildbench:score.v2", lambda n: None, wildbench_repo)
    assert list(rows["id"]) == ["s1"] and list(rows["score"]) == [7.0]  # empty answer and bundled item: no WB-Score
    prompts = []
    client = connect_function(lambda m, s: prompts.append(m[0]["content"]) or '{"choice": "A+"}', use_cache=False)
    long_answer = "word " * 1200
    rewards = wb_reward_rows(client, [WB_ITEM, {**WB_ITEM, "id": "s2"}, {**WB_ITEM, "id": "s3"}],
                             {"student": ["cand", "", long_answer]}, ["ref", "ref", "ref"],
                             "wildbench:pairwise.v2", seed=0, wildbench_repo=wildbench_repo)
    assert len(prompts) == 1  # empty and cut answers are not judged, as in WildBench's tables
    assert "USER: first\n\nASSISTANT: hi\n\n" in prompts[0] and "- Is it correct?\n- Is it clear?\n" in prompts[0]
    first = rewards.iloc[0]
    assert first["reward"] == (50.0 if first["candidate_is_a"] else -50.0)
    assert list(rewards["skipped"][1:]) == ["empty", "truncated"]
    table = wb_reward_table(rewards)
    assert table.iloc[0]["wb_reward"] == pytest.approx(first["reward"] / 3) and table.iloc[0]["n_skipped"] == 2


def test_wb_reward_arithmetic():
    assert parse_choice('{"choice": "B++",}') == "B++" and parse_choice("nothing") is None
    assert parse_score('{"score": 11}') is None
    assert [candidate_reward(c, True) for c in ("A++", "A+", "A=B", "B+", "B++")] == [100, 50, 0, -50, -100]
    assert candidate_reward("A++", False) == -100 and candidate_reward(None, True) is None
    assert candidate_reward("A+", True, 900, 100, k=500) == 0.0 and candidate_reward("A+", True, 900, 100) == 50
    s = wb_reward([100.0, 50.0, -50.0, None, None], [["Creative Tasks"], ["Coding & Debugging"], ["Creative Tasks"],
                                                     [], ["Coding & Debugging"]], [None, None, None, None, "empty"])
    assert s["wb_reward"] == pytest.approx(100 / 4) and s["n_judged"] == 3 and s["n_unparsed"] == 1
    assert s["n_skipped"] == 1 and s["wb_reward_task_macro"] == pytest.approx((25 * 0.5 + 50 * 1.25) / 4.75)
    assert shorten("a " * 3, 2) == "a a... (truncated)" and not_judged("x", "") == "empty"
    table = wb_reward_table(pd.DataFrame({"model": "m", "groups": [["Creative Tasks"]] * 3, "reward": [100.0, None, 0.0]}))
    assert table.iloc[0]["flag"] == "n=2 of 3, not reliable"


# ---------------------------------------------------------------------------------------------- small numbers


def test_small_number_flag():
    assert small_number_flag(1, 12) == "n=1 of 12, not reliable"
    assert small_number_flag(9, 9) is not None and small_number_flag(10, 21) is not None
    assert small_number_flag(10, 20) is None
    assert reportable(100.0, 1, 12) == {"value": 100.0, "n": 1, "n_total": 12, "flag": "n=1 of 12, not reliable"}
    assert reportable(55.5, 30, 40) == 55.5


# ---------------------------------------------------------------------------------------------- published outputs


def test_config_accepts_candidate_outputs_and_owner_judges(tmp_path):
    outputs = tmp_path / "model_outputs.json"
    outputs.write_text(json.dumps([{"instruction": "a", "output": "b", "generator": "g"}]))
    cfg = EvalConfig.from_params({"RUN_DIR": str(tmp_path), "CANDIDATE_OUTPUTS": str(outputs),
                                  "PAIRWISE_JUDGE": "alpaca_eval:weighted_alpaca_eval_gpt4_turbo",
                                  "SHIRKER_PROBE_FRACTIONS": []})
    assert cfg.student().model == "g"
    assert EvalConfig.from_params({**cfg.as_params(), "SHIRKER_PROBE_FRACTIONS": [0.5]}).shirker_probe_fractions == [0.5]
    with pytest.raises(ParameterError, match="PAIRWISE_JUDGE"):
        EvalConfig.from_params({**cfg.__dict__, "PAIRWISE_JUDGE": "nobody:judge"})
    with pytest.raises(ParameterError, match="CANDIDATE_OUTPUTS"):
        candidate_outputs(outputs, [{"instruction": "missing"}])


def test_published_outputs_judged_by_alpaca_eval_judge(tmp_path):
    published = REFERENCE / "alpaca_eval" / "Llama-3-8B-Instruct-SkillMix_model_outputs.json"
    baseline = REFERENCE / "alpaca_eval" / "gpt4_1106_preview_model_outputs.json"
    if not (published.is_file() and baseline.is_file()):
        pytest.skip("the shared AlpacaEval reference outputs are absent")
    items = load_alpaca_eval(str(baseline), limit=24)
    outputs, generator = candidate_outputs(published, items)
    assert generator == "Llama-3-8B-Instruct-SkillMix"
    bodies = []

    def reply(messages, body):  # the longer output wins: prefer the label of the longer one shown
        bodies.append(body)
        text = messages[-1]["content"]
        first, second = (part.split('"""')[0] for part in text.split('"output": """')[1:3])
        return "m" if len(first) >= len(second) else "M"

    with FakeOpenAIServer(models=("gpt-4-1106-preview",), reply_fn=reply) as server:
        judge = connect("gpt-4-1106-preview", server.base_url, "", 4, stage="evaluate", role="JUDGE",
                        cache_path=tmp_path / "cache.sqlite")
        summary, per_item = pairwise_table(judge, items, {"student": outputs},
                                             [it["reference_output"] for it in items], 0,
                                             "alpaca_eval:weighted_alpaca_eval_gpt4_turbo", None,
                                             "gpt4_1106_preview")
        assert server.completions == len(items)  # one request per item
    assert all(b["max_tokens"] == 1 and b["top_logprobs"] == 5 and b["logprobs"] for b in bodies)
    row = summary.iloc[0]
    longer = sum(len(o) > len(it["reference_output"]) for o, it in zip(outputs, items))
    assert row["win_rate"] == pytest.approx(100 * longer / len(items))  # only one label visible: -inf rule, 0 or 1
    assert row["lc_label"] == "LC (minimal GLM)" and row["lc_glm"] == "length_controlled_minimal"
    assert row["judge"] == "alpaca_eval:weighted_alpaca_eval_gpt4_turbo" and "0.6.6" in row["prompt_source"]
    assert row["flag"] is None and 0 <= row["lc_win_rate"] <= 100
    annotations = summary.attrs["annotations"]["student"]
    assert annotations[0]["output_1"] == items[0]["reference_output"] and annotations[0]["index"] == 0


def test_stage4_notebook_judges_published_outputs(tmp_path):
    """The notebook end to end: published answers vs gpt4_1106_preview's, alpaca_eval's judge behind an
    OpenAI-compatible endpoint with logprobs, the leaderboard's GLM on generated df_gamed.csv data."""
    from test_alpaca_eval_glm import make_glm_data

    from helpers.pipeline import run_pipeline

    published = REFERENCE / "alpaca_eval" / "Llama-3-8B-Instruct-SkillMix_model_outputs.json"
    baseline = REFERENCE / "alpaca_eval" / "gpt4_1106_preview_model_outputs.json"
    if not (published.is_file() and baseline.is_file()):
        pytest.skip("the shared AlpacaEval reference outputs are absent")
    (tmp_path / "glm").mkdir()
    make_glm_data(tmp_path / "glm", 805)

    def reply(messages, body):
        first, second = messages[-1]["content"].split('"output": """')[1:3]
        return "m" if len(first) >= len(second) else "M"

    with FakeOpenAIServer(models=("gpt-4-1106-preview",), reply_fn=reply) as server:
        run_pipeline(tmp_path / "run", {
            "CANDIDATE_OUTPUTS": str(published), "EVAL_SET": "alpaca_eval", "EVAL_SOURCE": str(baseline),
            "N_EVAL": 20, "PAIRWISE_JUDGE": "alpaca_eval:weighted_alpaca_eval_gpt4_turbo",
            "JUDGE_MODEL": "gpt-4-1106-preview", "JUDGE_BASE_URL": server.base_url,
            "AE_GLM_DATA": str(tmp_path / "glm"), "SHIRKER_PROBE_FRACTIONS": []}, ["04_eval_ablations"])
        assert server.completions == 20
    ev = json.loads((tmp_path / "run" / "results.json").read_text())["evaluate"]
    assert isinstance(ev["win_rate"], float) and isinstance(ev["lc_win_rate"], float)
    assert ev["lc_label"] == "LC" and ev["lc_glm"] == "length_controlled_v1"
    assert ev["pairwise_judge"] == "alpaca_eval:weighted_alpaca_eval_gpt4_turbo"
    assert ev["pairwise_prompt_source"].startswith("alpaca_eval 0.6.6 evaluators_configs/")
    annotations = json.loads((tmp_path / "run" / "eval" / "annotations_student.json").read_text())
    assert len(annotations) == 20 and annotations[0]["generator_2"] == "Llama-3-8B-Instruct-SkillMix"
