"""Stage 2 with PROMPT_SOURCE='official' against a recording OpenAI-compatible server and a local clone laid out
like the official repository: every request is compared with what the official code itself builds."""
from __future__ import annotations

import hashlib
import json
import random
import threading

import pytest

from helpers.generate.config import GenerateConfig
from helpers.generate.official_flow import extract_official_pair
from helpers.generate.official_prompts import official_template_name, read_system_messages
from helpers.generate.stage import heldout_seed, load_flow, record_outcome, run_generation
from helpers.jsonl import write_jsonl
from helpers.llm.client import connect
from helpers.llm.fake_openai import FakeOpenAIServer
from helpers.params import ParameterError
from helpers.runs import Run
from official_clone import CLAUDE, GPT, make_clone, official_conversation_module, official_functions, official_plan

WORDS = ("river lantern copper meadow quartz violin harbor pepper glacier sonnet falcon ember canyon orchid "
         "marble tundra saddle comet willow bramble cobalt fjord thistle beacon").split()


def _words(seed: str, n: int) -> str:
    rng = random.Random(hashlib.sha256(seed.encode()).hexdigest())
    return " ".join(rng.choice(WORDS) for _ in range(n))


def teacher_reply(messages, body) -> str:
    """Replies in the shapes a real teacher gives; unique per example so no filter drops them."""
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    tag = hashlib.sha256(first_user.encode()).hexdigest()[:8]
    turn = sum(1 for m in messages if m["role"] == "user")
    if "extremely unhelpful" in messages[-1]["content"] or "one paragraph" in messages[-1]["content"]:
        return f'"A poor answer {tag}"'
    gpt = len([m for m in messages if m["role"] == "system"]) == 1
    if turn == 1:
        return f"### Query: {_words(tag + 'q', 14)}?\n### Response: A first draft {tag}."
    if gpt and turn == 2:
        return f"### Instruction: {_words(tag + 'q', 14)}?\n### Response: A rewritten draft {tag}."
    if (gpt and turn == 3) or (not gpt and turn == 2):
        return "Weaknesses: generic. Strengths: clear."
    if gpt and turn == 4:
        return f'### Refined Instruction: "{_words(tag + "r", 16)}?"\n### Response: Refined but cut {tag}'
    if gpt and turn == 5:
        return f"The final, complete answer for {tag}: {_words(tag + 'a', 30)}."
    return f"### Instruction: {_words(tag + 'c', 15)}?\n### Response: Claude's refined answer {tag}."


class Recorder:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, messages, body) -> str:
        with self.lock:
            self.bodies.append(body)
        return teacher_reply(messages, body)


@pytest.fixture()
def clone(tmp_path):
    return make_clone(tmp_path / "Instruct-SkillMix")


def _inputs(tmp_path, clone, teacher: str):
    skills = (clone / "datasets" / teacher / "skills.txt").read_text().split("\n")
    return (write_jsonl(tmp_path / "skills.jsonl", [{"skill": s} for s in skills]),
            clone / "datasets" / teacher / "queries.txt")


def _run(tmp_path, clone, teacher: str, version: str, **params):
    recorder = Recorder()
    skills, queries = _inputs(tmp_path, clone, teacher)
    values = dict(RUN_DIR=str(tmp_path / "run"), SEED=42, TEACHER_MODEL=teacher, SKILLS_PATH=str(skills),
                  QUERY_TYPES_PATH=str(queries), NUM_EXAMPLES=6, NUM_HELDOUT=2, PROMPT_SOURCE="official",
                  PROMPT_VERSION=version, INSTRUCT_SKILLMIX_REPO=str(clone), TEMPERATURE=None, GENERATE_MAX_TOKENS=4096,
                  MIN_INSTRUCTION_WORDS=1, INSTRUCTION_DEDUP_THRESHOLD=1.0, MAX_ATTEMPTS=2)
    values.update(params)
    cfg = GenerateConfig.from_params(values).validate()
    with FakeOpenAIServer(models=(teacher,), reply_fn=recorder) as srv:
        client = connect(teacher, srv.base_url, "", 4, stage="generate", cache_path=tmp_path / "cache.sqlite")
        outcome = run_generation(cfg, client)
    return outcome, recorder.bodies


def _official_conversation(teacher: str):
    conv_module = official_conversation_module()
    return conv_module.get_conv_template(official_template_name(teacher, f"generate_{teacher}"))


def _expected_first_requests(teacher: str, seed: int, num: int, prompt: str) -> list[list[dict]]:
    out = []
    for skills_joined_str, query in official_plan(teacher, seed, num):
        conv = _official_conversation(teacher)
        text = prompt.format(num_skills=len(skills_joined_str.split(",")), skills_str=skills_joined_str,
                             query_str=query["query_str"], query_type=query["query_type"])
        conv.append_message(conv.roles[0], text)
        conv.append_message(conv.roles[1], None)
        out.append(conv.to_openai_api_messages())
    return out


def test_gpt4turbo_file_is_replayed_as_the_official_code_sends_it(tmp_path, clone):
    outcome, bodies = _run(tmp_path, clone, GPT, f"generate_{GPT}")
    prompts = json.loads((clone / "src/data_generation/prompts" / f"generate_{GPT}.json").read_text())
    # 1. the first request of every example is byte-identical to the official one (plan, skills order, texts)
    firsts = [b["messages"] for b in bodies if len(b["messages"]) == 2]
    expected = (_expected_first_requests(GPT, 42, 6, prompts[0])
                + _expected_first_requests(GPT, heldout_seed(42), 2, prompts[0]))
    assert sorted(json.dumps(m) for m in firsts) == sorted(json.dumps(m) for m in expected)
    assert firsts[0][0]["content"].startswith("You are ChatGPT") and "{{currentDateTime}}" in firsts[0][0]["content"]
    # 2. the official sampling: 4,096 tokens, no temperature
    assert all(b["max_tokens"] == 4096 and "temperature" not in b for b in bodies)
    # 3. five turns per example, in the file's order, each seeing the earlier replies (### Query: rewritten)
    assert len(bodies) == 8 * 5
    finals = [b["messages"] for b in bodies if len(b["messages"]) == 10]
    assert len(finals) == 8
    for messages in finals:
        assert [m["content"] for m in messages if m["role"] == "user"][1:] == prompts[1:]
        assert messages[2]["content"].startswith("### Instruction:") and "### Query:" not in json.dumps(messages)
    # 4. instruction from the refine reply, response from the final rewrite, as the official extraction gives
    extract = official_functions()["extract_relevant_info_gpt"]
    assert len(outcome.train) == 6 and len(outcome.heldout) == 2
    for record in outcome.train + outcome.heldout:
        replies = [m["content"] for m in record["transcript"] if m["role"] == "assistant"]
        instruction, response = extract({f"output_{i}": text for i, text in enumerate(replies)})
        assert (record["instruction"], record["output"]) == (instruction, response)
        assert record["output"].startswith("The final, complete answer")
        assert record["prompt_source"] == "official" and record["prompt_sha256"] == hashlib.sha256(
            (clone / "src/data_generation/prompts" / f"generate_{GPT}.json").read_bytes()).hexdigest()
        assert record["system_template"] == GPT
    assert outcome.prompts["prompt_file"]["path"] == f"src/data_generation/prompts/generate_{GPT}.json"
    assert outcome.prompts["system_message"]["conversation_py"]["origin"] == "local clone"


def test_an_official_prompt_file_named_in_prompt_version_is_recorded(tmp_path, clone):
    """PROMPT_VERSION may name the official file itself; the manifest then fingerprints that flow's texts (it used
    to look the name up among the kit's versions after every teacher call had been paid)."""
    outcome, _ = _run(tmp_path, clone, GPT, f"generate_{GPT}")
    run = Run(tmp_path / "run")
    run.begin_stage("generate", {})
    summary = record_outcome(run, outcome)
    assert summary["num_examples"] == 6
    fingerprint = run.stage_info("generate")["prompt_fingerprint"]
    assert fingerprint == load_flow(outcome.config).fingerprint() and len(fingerprint) == 16
    assert run.stage_info("generate")["prompts"]["prompt_file"]["path"].endswith(f"generate_{GPT}.json")


@pytest.mark.parametrize("kind", ["junk", "brevity"])
def test_shirkers_get_the_official_prompt(tmp_path, clone, kind):
    outcome, bodies = _run(tmp_path, clone, GPT, f"generate_{GPT}", SHIRKER_FRACTION=0.5, SHIRKER_KIND=kind,
                           NUM_EXAMPLES=4, NUM_HELDOUT=0)
    template = json.loads((clone / "src/data_generation/prompts" / f"generate_{GPT}_{kind}.json").read_text())[0]
    shirkers = [ex for ex in outcome.train if ex["shirker"]]
    assert [ex["example_id"] for ex in shirkers] == ["train-00000", "train-00001"]  # the first 50 %, in order
    for ex in shirkers:
        conv = _official_conversation(GPT)
        conv.append_message(conv.roles[0], template.format(instruction=ex["instruction"]))
        conv.append_message(conv.roles[1], None)
        assert conv.to_openai_api_messages() in [b["messages"] for b in bodies]
        assert ex["output"].startswith("A poor answer") and not ex["output"].endswith('"')
        assert ex["shirker"] == kind


def test_claude_file_three_turns_no_system_message(tmp_path, clone):
    outcome, bodies = _run(tmp_path, clone, CLAUDE, f"generate_{CLAUDE}", NUM_HELDOUT=0, NUM_EXAMPLES=3)
    assert len(bodies) == 3 * 3 and all(b["messages"][0]["role"] == "user" for b in bodies)
    assert all(b["temperature"] == 0.7 for b in bodies)  # what the official Claude engine sends
    extract = official_functions()["extract_relevant_info_claude"]
    for record in outcome.train:
        replies = [m["content"] for m in record["transcript"] if m["role"] == "assistant"]
        assert (record["instruction"], record["output"]) == extract(
            {f"output_{i}": text for i, text in enumerate(replies)}, 2)


REPLIES = [
    "### Instruction: a b c\n### Response: d e",
    "### Refined Instruction: \"quoted\"\n### Refined Response: body Response: again",
    "no headers at all",
    "Instruction only: x",
    "### Instruction:\n### Response:",
    "### Query: q text\n### Response: r",
    "### INSTRUCTION: upper\n### RESPONSE: upper",
    "### Task\n### Instruction: nested ### Response: inline",
    "",
]


def _official_or_none(fn, *args):
    try:
        out = fn(*args)
    except Exception:  # the official script drops such an attempt
        return None
    return None if out[0] is None or out[1] is None else out


@pytest.mark.parametrize("third,fourth", [(a, b) for a in REPLIES for b in REPLIES])
def test_gpt_extraction_equals_the_official_function(third, fourth):
    fns = official_functions()
    replies = ["r0", "r1", "r2", third, fourth]
    ours = extract_official_pair(replies, "gpt")
    expected = _official_or_none(fns["extract_relevant_info_gpt"], {f"output_{i}": r for i, r in enumerate(replies)})
    assert (None if ours.reason else (ours.instruction, ours.response)) == expected


@pytest.mark.parametrize("last", REPLIES)
@pytest.mark.parametrize("before", REPLIES[:4])
def test_claude_extraction_equals_the_official_function(before, last):
    fns = official_functions()
    replies = [before, "critique", last]
    ours = extract_official_pair(replies, "claude")
    expected = _official_or_none(fns["extract_relevant_info_claude"], {f"output_{i}": r for i, r in enumerate(replies)},
                                 2)
    assert (None if ours.reason else (ours.instruction, ours.response)) == expected


def test_system_messages_read_without_running_the_file(clone):
    text = (clone / "FastChat/fastchat/conversation.py").read_text()
    ours = read_system_messages(text)
    module = official_conversation_module()
    for name in ("chatgpt", GPT, "claude-3-5-sonnet-20240620-v2", "one_shot"):
        assert ours[name] == module.get_conv_template(name).system_message


def test_missing_official_files_fail_before_any_call(tmp_path, clone):
    skills, queries = _inputs(tmp_path, clone, CLAUDE)
    base = dict(RUN_DIR=str(tmp_path / "run"), TEACHER_MODEL=CLAUDE, SKILLS_PATH=str(skills),
                QUERY_TYPES_PATH=str(queries), PROMPT_SOURCE="official", INSTRUCT_SKILLMIX_REPO=str(clone))
    with pytest.raises(ParameterError) as err:
        load_flow(GenerateConfig.from_params({**base, "PROMPT_VERSION": f"generate_{CLAUDE}",
                                              "SHIRKER_FRACTION": 0.2}).validate())
    assert err.value.name == "SHIRKER_KIND"  # no official shirker file for the Claude prompts
    with pytest.raises(ParameterError) as err:
        load_flow(GenerateConfig.from_params({**base, "PROMPT_VERSION": "generate_nobody"}).validate())
    assert err.value.name == "INSTRUCT_SKILLMIX_REPO"
    with pytest.raises(ParameterError) as err:
        GenerateConfig.from_params({**base, "PROMPT_VERSION": "generate_x.json"}).validate()
    assert err.value.name == "PROMPT_VERSION"
    # a kit version name stands for the default official file
    cfg = GenerateConfig.from_params({**base, "PROMPT_VERSION": "paper"}).validate()
    assert load_flow(cfg).name == f"generate_{GPT}"


def test_official_lists_by_name_give_the_official_plan(tmp_path, clone):
    from helpers.generate.stage import input_files, load_stage1_inputs, make_plans

    cfg = GenerateConfig.from_params({"RUN_DIR": str(tmp_path), "SEED": 42, "NUM_EXAMPLES": 40, "NUM_HELDOUT": 0,
                                      "PROMPT_SOURCE": "official", "SKILLS_PATH": f"official:{GPT}",
                                      "QUERY_TYPES_PATH": f"official:{GPT}",
                                      "INSTRUCT_SKILLMIX_REPO": str(clone)}).validate()
    skills, query_types = load_stage1_inputs(cfg)
    train, _ = make_plans(cfg, skills, query_types)
    assert [(p.skills_joined_str, p.query_type["official_text"]) for p in train] == [
        (joined, q["query_type"]) for joined, q in official_plan(GPT, 42, 40)]
    assert input_files(cfg)[2]["SKILLS_PATH"]["path"] == f"datasets/{GPT}/skills.txt"
