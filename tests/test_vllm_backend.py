"""The vLLM route without vLLM: what the backend sends (stop ids, per-request seeds, the served name), how engines
are kept and stopped, and the server command line. A local fake OpenAI server stands in for vLLM's; the real engine
is tested by `make test-vllm` (tests/test_vllm_engine.py)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.llm import vllm_backend, vllm_engine
from helpers.llm.cache import cache_key
from helpers.llm.client import ChatClient, connect
from helpers.llm.fake_openai import FakeOpenAIServer
from helpers.llm.generation import row_seed
from helpers.llm.local_backend import LocalBackend
from helpers.llm.vllm_backend import VLLMBackend


@pytest.fixture
def served(monkeypatch):
    bodies = []

    def reply(messages, body):
        bodies.append(body)
        return "an answer"

    with FakeOpenAIServer(models=(vllm_engine.SERVED_NAME,), reply_fn=reply) as srv:
        monkeypatch.setattr(vllm_backend, "running_engine", lambda spec: None)
        monkeypatch.setattr(vllm_backend, "engine_for", lambda spec: SimpleNamespace(base_url=srv.base_url))
        yield bodies


def test_requests_carry_the_stop_ids_and_a_seed_per_request(served, tiny_base, monkeypatch):
    monkeypatch.setattr(vllm_engine, "find_vllm_python", lambda: None)
    backend = VLLMBackend(str(tiny_base), role="STUDENT", dtype="float32", device="cpu")
    client = ChatClient(backend, use_cache=False, show_progress=False)
    messages = [{"role": "user", "content": "Say hello."}]
    greedy = client.chat(messages, max_tokens=8, temperature=0.0)
    assert greedy.ok and greedy.model == str(tiny_base)  # results name the kit's model, not the served alias
    client.chat(messages, max_tokens=8, temperature=0.9, seed=3)
    client.chat(messages, salt="attempt-2", max_tokens=8, temperature=0.9, seed=3)
    first, sampled, retried = served
    eos = json.loads((Path(tiny_base) / "generation_config.json").read_text())["eos_token_id"]
    for body in served:
        assert body["model"] == vllm_engine.SERVED_NAME and body["skip_special_tokens"] is True
        assert body["stop_token_ids"] == [eos]
    assert "seed" not in first  # greedy: nothing to seed
    prompt = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    assert sampled["seed"] == row_seed(prompt, 3, "") != retried["seed"] == row_seed(prompt, 3, "attempt-2")
    info = backend.describe()
    assert info["engine"] == "vllm" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["base_url"] == ""  # the server's port is not the model's identity


def test_cache_entries_are_the_engine_s_own(tiny_base):
    vl = VLLMBackend(str(tiny_base), dtype="float32")
    hf = LocalBackend(str(tiny_base), device="cpu", dtype="float32")
    messages = [{"role": "user", "content": "hi"}]
    assert vl.cache_identity.startswith(hf.cache_identity) and vl.cache_identity.endswith("@float32")
    assert cache_key(vl.kind, vl.cache_identity, messages, {}, "", "") != cache_key(hf.kind, hf.cache_identity,
                                                                                    messages, {}, "", "")


def test_connect_picks_the_engine(monkeypatch, tiny_base):
    monkeypatch.setattr(vllm_engine, "find_vllm_python", lambda: "/opt/vllm/bin/python")
    client = connect(str(tiny_base), local_engine="vllm", check=False, use_cache=False)
    assert isinstance(client.backend, VLLMBackend)
    assert isinstance(connect(str(tiny_base), local_engine="auto", check=False, use_cache=False).backend,
                      LocalBackend)  # auto on a CPU: transformers


class StubServer:
    started: list = []

    def __init__(self, spec, python):
        self.spec, self.running, self.start_seconds = spec, False, 0.0

    def start(self):
        self.running = True
        StubServer.started.append(self.spec.model_path)
        return self

    def stop(self):
        self.running = False


def test_engines_are_kept_per_model_and_the_least_recently_used_stops_first(monkeypatch):
    monkeypatch.setattr(vllm_engine, "VLLMServer", StubServer)
    monkeypatch.setattr(vllm_engine, "MAX_RESIDENT", 2)
    StubServer.started = []
    vllm_engine.stop_engines()
    spec = {name: vllm_engine.EngineSpec(name, "bfloat16", "cuda") for name in "abc"}
    a = vllm_engine.engine_for(spec["a"], python="py")
    b = vllm_engine.engine_for(spec["b"], python="py")
    assert vllm_engine.engine_for(spec["a"], python="py") is a  # started once per model
    vllm_engine.engine_for(spec["c"], python="py")
    assert StubServer.started == ["a", "b", "c"] and not b.running and a.running  # b was the least recently used
    assert vllm_engine.running_engines() == [spec["a"], spec["c"]]
    assert vllm_engine.stop_engines() == 2 and not a.running and not vllm_engine.running_engines()


def test_server_command_line(monkeypatch, tmp_path):
    import torch

    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 8}))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv(vllm_engine.ARGS_ENV, "--max-model-len 4096")
    server = vllm_engine.VLLMServer(vllm_engine.EngineSpec(str(tmp_path), "bfloat16", "cuda", "{{ messages }}"), "py")
    cmd = server.command()
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(cmd[3::2], cmd[4::2]))
    assert pairs["--model"] == str(tmp_path) and pairs["--dtype"] == "bfloat16"
    assert pairs["--generation-config"] == "vllm" and pairs["--tensor-parallel-size"] == "4"
    assert float(pairs["--gpu-memory-utilization"]) * vllm_engine.MAX_RESIDENT < 1
    assert Path(pairs["--chat-template"]).read_text() == "{{ messages }}"
    assert cmd[-2:] == ["--max-model-len", "4096"]
    server.stop()
    assert not Path(pairs["--chat-template"]).exists()
