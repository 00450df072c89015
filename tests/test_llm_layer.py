"""The LLM access layer against a local fake OpenAI-compatible server: faults, retries, cache, checks, accounting."""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time

import pytest

from helpers.llm.fake_openai import FakeOpenAIServer
from helpers.llm.client import ChatClient, TransientError, connect, connect_function
from helpers.llm.cache import CallCache
from helpers.llm.types import ChatResult
from helpers.params import ParameterError

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture()
def server():
    with FakeOpenAIServer(models=("fake-model",)) as srv:
        yield srv


def client_for(srv, tmp_path, **kw) -> ChatClient:
    c = connect("fake-model", srv.base_url, "", max_concurrency=kw.pop("max_concurrency", 8), stage="test",
                cache_path=tmp_path / "cache.sqlite", show_progress=False, request_timeout_s=kw.pop("timeout", 5),
                max_attempts=kw.pop("max_attempts", 4))
    c.backoff_base_s = 0.01
    return c


def test_plain_call_and_accounting(server, tmp_path):
    c = client_for(server, tmp_path)
    r = c.chat(MSG, temperature=0)
    assert r.ok and r.text == "[fake-model] turn 1: reply to 'hello there'"
    assert r.finish_reason == "stop" and r.input_tokens == 2 and not r.cached
    u = c.usage.as_dict()
    assert u["calls"] == 1 and u["failures"] == 0 and u["input_tokens"] == 2 and u["output_tokens"] == len(r.text.split())


@pytest.mark.parametrize("fault", ["429", "500", "503", "drop", "empty"])
def test_transient_faults_are_retried(server, tmp_path, fault):
    server.script([fault, fault])
    c = client_for(server, tmp_path)
    r = c.chat(MSG)
    assert r.ok and r.attempts == 3
    assert server.faults_served == [fault, fault]
    assert c.usage.retries == 2 and c.usage.failures == 0


def test_a_page_that_is_not_json_is_retried(server, tmp_path):
    server.script(["html"])
    r = client_for(server, tmp_path).chat(MSG)
    assert r.ok and r.attempts == 2 and server.faults_served == ["html"]


def test_key_rejected_during_a_run_stops_it_with_the_parameter(server, tmp_path):
    server.script(["401"])
    c = connect("fake-model", server.base_url, "", cache_path=tmp_path / "c.sqlite", check=False, show_progress=False)
    with pytest.raises(ParameterError, match="TEACHER_API_KEY_ENV.*asks for a key"):
        c.chat(MSG)


def test_organisation_and_project_headers_come_from_the_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_kit_test")
    monkeypatch.delenv("OPENAI_ORG_ID", raising=False)
    assert client_for(server, tmp_path).chat(MSG).ok
    assert server.last_headers["OpenAI-Project"] == "proj_kit_test" and "OpenAI-Organization" not in server.last_headers
    assert server.last_headers["Content-Type"] == "application/json"


def test_retry_after_is_honoured(server, tmp_path):
    server.retry_after_s = 0.4
    server.script(["429"])
    c = client_for(server, tmp_path)
    start = time.perf_counter()
    assert c.chat(MSG).ok
    assert time.perf_counter() - start >= 0.4


def test_gives_up_and_never_caches_a_failure(server, tmp_path):
    server.script(["500"] * 3)
    c = client_for(server, tmp_path, max_attempts=3)
    r = c.chat(MSG)
    assert not r.ok and "gave up after 3 attempts" in r.error
    assert c.usage.failures == 1 and len(CallCache(tmp_path / "cache.sqlite")) == 0
    # The next run asks again and succeeds.
    r2 = client_for(server, tmp_path).chat(MSG)
    assert r2.ok and not r2.cached


def test_timeout_is_retried(server, tmp_path):
    server.slow_s = 3.0
    server.script(["slow"])
    c = client_for(server, tmp_path, timeout=0.5)
    r = c.chat(MSG)
    assert r.ok and r.attempts == 2


def test_truncated_reply_is_kept_and_flagged(server, tmp_path):
    server.script(["truncated"])
    r = client_for(server, tmp_path).chat(MSG)
    assert r.ok and r.truncated and r.finish_reason == "length"


def test_unknown_model_and_permanent_errors(server, tmp_path):
    with pytest.raises(ParameterError, match="TEACHER_MODEL.*not served"):
        connect("nope", server.base_url, "", cache_path=tmp_path / "c.sqlite")
    c = connect("nope", server.base_url, "", cache_path=tmp_path / "c.sqlite", check=False, show_progress=False)
    r = c.chat(MSG)
    assert not r.ok and "404" in r.error and r.attempts == 1
    assert "model nope not found" in r.error  # the provider's own message, not its JSON envelope


def test_wrong_endpoint_fails_before_work(tmp_path):
    with pytest.raises(ParameterError, match="JUDGE_BASE_URL.*cannot reach"):
        connect("m", "http://127.0.0.1:9/v1", "", role="JUDGE", cache_path=tmp_path / "c.sqlite")


def test_missing_key_env_and_key_in_parameter(server, tmp_path, monkeypatch):
    monkeypatch.delenv("ISM_TEST_MISSING_KEY", raising=False)
    with pytest.raises(ParameterError, match="TEACHER_API_KEY_ENV.*not set"):
        connect("fake-model", server.base_url, "ISM_TEST_MISSING_KEY", cache_path=tmp_path / "c.sqlite")
    with pytest.raises(ParameterError, match="looks like an API key"):
        connect("fake-model", server.base_url, "sk-live-abcdefghijklmnopqrstuvwxyz", cache_path=tmp_path / "c.sqlite")
    with pytest.raises(ParameterError, match="MAX_CONCURRENCY"):
        connect("fake-model", server.base_url, "", max_concurrency=0, cache_path=tmp_path / "c.sqlite")


def test_wrong_key_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("ISM_TEST_KEY", "wrong")
    with FakeOpenAIServer(api_key="right") as srv:
        with pytest.raises(ParameterError, match="rejected the key"):
            connect("fake-model", srv.base_url, "ISM_TEST_KEY", cache_path=tmp_path / "c.sqlite")
        monkeypatch.setenv("ISM_TEST_KEY", "right")
        c = connect("fake-model", srv.base_url, "ISM_TEST_KEY", cache_path=tmp_path / "c.sqlite", show_progress=False)
        assert c.chat(MSG).ok
        assert "right" not in json.dumps(c.describe())


def test_rerun_hits_cache_100_percent(server, tmp_path):
    convs = [[f"question {i}", "critique it", "refine it"] for i in range(12)]
    first = client_for(server, tmp_path).converse_many(convs, temperature=0.7)
    calls_after_first = server.completions
    assert calls_after_first == 36
    again = client_for(server, tmp_path)
    second = again.converse_many(convs, temperature=0.7)
    assert server.completions == calls_after_first  # zero new calls
    assert again.usage.cache_hit_rate == 1.0 and again.usage.calls == 0
    assert [c.messages for c in first] == [c.messages for c in second]


def test_salt_forces_a_fresh_sample(server, tmp_path):
    c = client_for(server, tmp_path)
    c.chat(MSG)
    c.chat(MSG, salt="attempt-2")
    assert server.completions == 2


def test_multi_turn_transcript_order(server, tmp_path):
    conv = client_for(server, tmp_path).converse_many([["a", lambda rs: None, lambda rs: f"saw {len(rs)}"]],
                                                      system="sys")[0]
    roles = [m["role"] for m in conv.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert conv.messages[3]["content"] == "saw 1"
    assert conv.last_text == "[fake-model] turn 2: reply to 'saw 1'"


def test_conversation_stops_at_failed_turn(server, tmp_path):
    server.script([None, "500", "500"])
    conv = client_for(server, tmp_path, max_attempts=2).converse_many([["a", "b", "c"]])[0]
    assert not conv.ok and len(conv.results) == 2 and conv.error


def test_concurrency_is_bounded(tmp_path):
    with FakeOpenAIServer(latency_s=0.05) as srv:
        c = client_for(srv, tmp_path, max_concurrency=5)
        results = c.chat_many([[{"role": "user", "content": f"q{i}"}] for i in range(30)])
        assert all(r.ok for r in results)
        assert srv.max_in_flight <= 5 and srv.max_in_flight >= 4
        assert [r.text.split("'")[1] for r in results] == [f"q{i}" for i in range(30)]


def test_random_faults_under_load_lose_nothing(tmp_path):
    with FakeOpenAIServer(fault_rate=0.3, random_faults=("429", "500", "drop", "empty"), seed=3) as srv:
        c = client_for(srv, tmp_path, max_concurrency=16, max_attempts=8)
        results = c.chat_many([[{"role": "user", "content": f"q{i}"}] for i in range(80)])
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        assert c.usage.retries == len(srv.faults_served) > 0


def test_logprobs_are_returned(server, tmp_path):
    r = client_for(server, tmp_path).chat(MSG, max_tokens=1, top_logprobs=3)
    assert r.top_logprobs and len(r.top_logprobs[0]) == 3


def test_works_inside_a_running_event_loop(server, tmp_path):
    c = client_for(server, tmp_path)

    async def inside():
        return c.chat(MSG)  # what a Jupyter cell does

    assert asyncio.run(inside()).ok


def test_function_backend_retries_transient(tmp_path):
    calls = {"n": 0}

    def flaky(messages, sampling):
        calls["n"] += 1
        if calls["n"] == 1:
            raise TransientError("busy")
        return ChatResult(text="fine", finish_reason="stop", output_tokens=1)

    c = connect_function(flaky, cache_path=tmp_path / "c.sqlite")
    assert c.chat(MSG).text == "fine" and calls["n"] == 2


def _writer(path: str, start: int) -> None:
    cache = CallCache(path)
    for i in range(start, start + 200):
        cache.put(f"k{i}", ChatResult(text=str(i), finish_reason="stop"))


def test_cache_is_safe_across_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    CallCache(path)
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, s)) for s in (0, 1000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    cache = CallCache(path)
    assert len(cache) == 400 and cache.get("k1005").text == "1005" and cache.get("k5").cached


def test_sentinel_key_never_lands_in_cache(tmp_path, monkeypatch):
    sentinel = "SENTINEL-KEY-8f1c2a"
    monkeypatch.setenv("ISM_TEST_SENTINEL", sentinel)
    with FakeOpenAIServer(api_key=sentinel) as srv:
        c = connect("fake-model", srv.base_url, "ISM_TEST_SENTINEL", cache_path=tmp_path / "c.sqlite",
                    show_progress=False)
        assert c.chat(MSG).ok
    for root, _, files in os.walk(tmp_path):
        for f in files:
            assert sentinel.encode() not in open(os.path.join(root, f), "rb").read()


def test_endpoint_from_params_and_connect(server, tmp_path):
    from dataclasses import dataclass

    from helpers.llm import Endpoint

    params = {"JUDGE_MODEL": "fake-model", "JUDGE_BASE_URL": server.base_url, "JUDGE_API_KEY_ENV": "",
              "MAX_CONCURRENCY": 3, "TEACHER_MODEL": "other"}
    ep = Endpoint.from_params(params, "JUDGE_")
    assert ep == Endpoint("JUDGE", "fake-model", server.base_url, "")
    assert ep.as_params()["JUDGE_BASE_URL"] == server.base_url and not ep.is_local
    assert Endpoint.from_params(params, "STUDENT") == Endpoint("STUDENT")  # nothing given: all empty

    @dataclass
    class Cfg:  # a stage config with lower-case fields reads the same way
        judge_model: str = "fake-model"
        judge_base_url: str = server.base_url
        max_concurrency: int = 3

    assert Endpoint.from_params(Cfg(), "JUDGE") == ep
    cfg = Cfg()
    client = Endpoint.from_params(cfg, "JUDGE").connect(cfg.max_concurrency, stage="test",
                                                        cache_path=tmp_path / "c.sqlite", show_progress=False)
    assert client.max_concurrency == 3 and client.role == "JUDGE" and client.stage == "test"
    assert client.chat(MSG).ok
    with pytest.raises(ParameterError, match="JUDGE_API_KEY_ENV"):
        Endpoint("JUDGE", "m", server.base_url, "sk-live-abcdefghijklmnopqrstuvwxyz").validate()
    with pytest.raises(ParameterError, match="STUDENT_MODEL"):
        Endpoint("STUDENT", "", server.base_url).connect(cache_path=tmp_path / "c.sqlite")


def test_local_cache_identity_follows_the_checkpoint_files(tmp_path):
    """A model retrained into the same folder must not get the earlier model's cached replies."""
    import os

    from helpers.llm.local_backend import LocalBackend

    folder = tmp_path / "checkpoint-40"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"first weights")
    before = LocalBackend(str(folder)).cache_identity
    assert before.startswith(str(folder) + "@") and before == LocalBackend(str(folder)).cache_identity
    (folder / "model.safetensors").write_bytes(b"retrained weights")
    os.utime(folder / "model.safetensors", ns=(1, 1))
    assert LocalBackend(str(folder)).cache_identity != before
    assert LocalBackend("smollm2-135m-instruct", dtype="float32").cache_identity == "smollm2-135m-instruct"
    assert LocalBackend("smollm2-135m-instruct", chat_template="{{ x }}").cache_identity != "smollm2-135m-instruct"
    assert LocalBackend("smollm2-135m-instruct", dtype="bfloat16").cache_identity == "smollm2-135m-instruct@bfloat16"
    with pytest.raises(ParameterError, match="LOCAL_DTYPE"):
        LocalBackend("smollm2-135m-instruct", dtype="float16")


def test_chat_result_to_dict_round_trips_with_its_own_containers():
    from helpers.llm.types import ChatResult

    r = ChatResult(text="hi", finish_reason="stop", input_tokens=3, output_tokens=1, model="m",
                   top_logprobs=[{"A": -0.1, "B": -2.5}])
    data = r.to_dict()
    assert ChatResult(**data) == r
    data["top_logprobs"][0]["A"] = 0.0  # the dict is the caller's to change
    assert r.top_logprobs == [{"A": -0.1, "B": -2.5}]


def test_proxy_from_the_environment_is_looked_up_once_and_honours_no_proxy(monkeypatch):
    from helpers.llm.openai_backend import env_proxy

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1,.internal.example")
    assert env_proxy("https://api.openai.com/v1") == "http://proxy.example:3128"
    assert env_proxy("https://llm.internal.example/v1") is None
    assert env_proxy("http://127.0.0.1:8000/v1") is None
    assert env_proxy("http://other.example/v1") is None  # no http_proxy set


def test_calls_in_flight_freeze_the_heap_for_the_collector_and_give_it_back(tmp_path):
    """While a batch of calls runs, a full garbage collection walks only what the batch created (the objects that
    existed before are frozen), nested and later batches included, and young objects are collected less often;
    afterwards the heap and the thresholds are handed back. A process that froze objects itself is left alone."""
    import gc

    from helpers.llm.loopgc import frozen_heap

    from helpers.llm.loopgc import YOUNG_THRESHOLD

    seen: list[tuple[int, int]] = []

    async def reply(messages, sampling):
        seen.append((gc.get_freeze_count(), gc.get_threshold()[0]))
        return "ok"

    c = connect_function(reply, cache_path=tmp_path / "c.sqlite", use_cache=False)
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    assert all(r.ok for r in c.chat_many([MSG] * 3))
    assert min(frozen for frozen, _ in seen) > 1000  # the kit's imports alone are far more objects
    assert {young for _, young in seen} == {max(before[0], YOUNG_THRESHOLD)}  # young passes less often meanwhile
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
    with frozen_heap():
        outer = gc.get_freeze_count()
        with frozen_heap():
            assert gc.get_freeze_count() == outer  # nested: frozen once
        assert gc.get_freeze_count() == outer  # still frozen until the outer run ends
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the process's own freeze
    try:
        mine = gc.get_freeze_count()
        with frozen_heap():
            assert gc.get_freeze_count() == mine and gc.get_threshold() == before
        assert gc.get_freeze_count() == mine
    finally:
        gc.unfreeze()


def test_cache_checkpoints_off_the_caller_and_keeps_every_answer_through_a_kill(tmp_path, monkeypatch):
    """`put` only appends to SQLite's log; a thread of its own copies the log into the database and starts it
    afresh once it is long. A process killed right after its last `put` loses none of its answers."""
    import subprocess
    import sys

    from helpers.llm import cache as cache_module

    monkeypatch.setattr(cache_module, "CHECKPOINT_EVERY", 20)
    monkeypatch.setattr(cache_module, "WAL_RESTART_BYTES", 256 << 10)
    cache = CallCache(tmp_path / "c.sqlite")
    answer = ChatResult(text="an answer " * 40, finish_reason="stop", input_tokens=5, output_tokens=80, model="m")
    for i in range(600):
        cache.put(f"key-{i}", answer)
        time.sleep(0.0005)
    deadline = time.monotonic() + 10
    while (tmp_path / "c.sqlite").stat().st_size < 100_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (tmp_path / "c.sqlite").stat().st_size >= 100_000  # copied into the database
    assert (tmp_path / "c.sqlite-wal").stat().st_size < 2 << 20  # started afresh, not grown for ever
    assert len(cache) == 600 and cache.get("key-599").text == answer.text

    child = ("import os, signal, sys\n"
             "from helpers.llm import cache as m\n"
             "from helpers.llm.types import ChatResult\n"
             "m.CHECKPOINT_EVERY = 7\n"
             "c = m.CallCache(sys.argv[1])\n"
             "for i in range(300):\n"
             "    c.put(f'k{i}', ChatResult(text='x ' * 200, finish_reason='stop', model='m'))\n"
             "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path / "killed.sqlite")], timeout=120)
    assert done.returncode == -9
    survived = CallCache(tmp_path / "killed.sqlite")
    assert len(survived) == 300 and survived.get("k299") is not None
