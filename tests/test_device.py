"""Device, precision, threads and batch size of in-process models, and the release of GPU memory, with a fake GPU
where this machine has none (torch's availability checks are monkeypatched; nothing is moved to a real device)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from helpers.llm import device as dev
from helpers.llm import local_backend, vllm_engine
from helpers.llm.client import connect
from helpers.llm.local_backend import LocalBackend, release_models
from helpers.params import ParameterError


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch reports one CUDA GPU with bf16; emptying its cache is counted."""
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    return emptied


@pytest.fixture
def no_vllm(monkeypatch):
    monkeypatch.setattr(vllm_engine, "find_vllm_python", lambda: None)


def test_device_follows_what_torch_can_use(monkeypatch, fake_gpu):
    assert dev.best_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
        assert dev.best_device() == "xpu"
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert dev.best_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dev.best_device() == "cpu"


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what torch reports about the CPU's bf16 instructions: `cpu_bf16(amx=..., avx512_bf16=...)`."""
    def report(amx: bool | Exception, avx512_bf16: bool | Exception) -> None:
        for name, value in (("_is_amx_tile_supported", amx), ("_is_avx512_bf16_supported", avx512_bf16)):
            def probe(value=value):
                if isinstance(value, Exception):
                    raise value
                return value
            monkeypatch.setattr(torch.cpu, name, probe, raising=False)
    return report


def test_auto_dtype_on_a_cpu_is_bf16_only_where_the_cpu_computes_it(monkeypatch, cpu_bf16):
    cpu_bf16(amx=True, avx512_bf16=True)  # e.g. a Sapphire Rapids Xeon
    assert dev.cpu_has_native_bf16() and dev.resolve_dtype("auto", "cpu") == "bfloat16"
    cpu_bf16(amx=False, avx512_bf16=True)  # e.g. Cooper Lake, Zen 4
    assert dev.resolve_dtype("auto", "cpu") == "bfloat16"
    cpu_bf16(amx=False, avx512_bf16=False)  # bf16 would be emulated (converted to float32), slower than float32
    assert not dev.cpu_has_native_bf16() and dev.resolve_dtype("auto", "cpu") == "float32"
    cpu_bf16(amx=RuntimeError("no CPU dispatch"), avx512_bf16=False)  # a build that cannot tell
    assert dev.resolve_dtype("auto", "cpu") == "float32"
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # a torch without the checks
        monkeypatch.delattr(torch.cpu, name)
    assert dev.resolve_dtype("auto", "cpu") == "float32"
    assert dev.resolve_dtype("bfloat16", "cpu") == "bfloat16"  # explicit values keep their meaning


def test_explicit_dtypes_keep_their_meaning_on_a_bf16_cpu(cpu_bf16):
    cpu_bf16(amx=True, avx512_bf16=True)
    assert dev.resolve_dtype("float32", "cpu") == "float32"
    cpu = LocalBackend("smollm2-135m-instruct", device="cpu", dtype="float32")
    assert cpu.cache_identity == "smollm2-135m-instruct"  # float32 replies keep their cache entries
    auto = LocalBackend("smollm2-135m-instruct", device="cpu")
    assert auto.dtype == "bfloat16" and auto.cache_identity == "smollm2-135m-instruct@bfloat16"  # cached apart


def test_auto_dtype_is_bf16_on_a_gpu(monkeypatch, fake_gpu):
    assert dev.resolve_dtype("auto", "cuda") == "bfloat16"
    assert dev.resolve_dtype("float32", "cuda") == "float32" and dev.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.resolve_dtype("auto", "cuda") == "float16"  # e.g. a V100
    with pytest.raises(ParameterError) as err:
        dev.resolve_dtype("int8", "cpu")
    assert err.value.name == "LOCAL_DTYPE"


def test_batch_size_follows_the_device():
    assert dev.batch_size_for("cpu") == 16
    assert dev.batch_size_for("cuda") == dev.batch_size_for("cuda:1") == 64 > 16


def test_cpu_threads_leave_busy_cores_to_other_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert dev.cpu_threads(cores=8, busy=0.0) == 8
    assert dev.cpu_threads(cores=8, busy=3.5) == 5
    assert dev.cpu_threads(cores=2, busy=12.0) == 1  # never zero
    assert 0 <= dev.busy_cores() and 1 <= dev.cpu_threads() <= dev._usable_cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert dev.cpu_threads(cores=8, busy=7.0) == 3  # an explicit choice wins


def test_in_process_model_on_a_gpu_gets_bf16_a_big_batch_and_its_own_cache_key(fake_gpu, no_vllm):
    gpu = LocalBackend("smollm2-135m-instruct")
    assert (gpu.device, gpu.dtype, gpu.batch_size) == ("cuda", "bfloat16", 64)
    assert gpu.cache_identity == "smollm2-135m-instruct@bfloat16@cuda"
    info = gpu.describe()
    assert info["device"] == "cuda" and info["dtype"] == "bfloat16" and info["engine"] == "transformers"
    assert info["engine_version"].startswith("transformers==") and "threads" not in info
    client = connect("smollm2-135m-instruct", check=False, use_cache=False, max_concurrency=8, local_engine="auto")
    assert client.max_concurrency == 64  # a GPU batch needs its rows in flight
    assert isinstance(client.backend, LocalBackend)  # auto without vLLM installed: transformers


def test_on_a_cpu_without_bf16_the_precision_stays_and_a_batch_holds_16_rows(cpu_bf16):
    cpu_bf16(amx=False, avx512_bf16=False)
    cpu = LocalBackend("smollm2-135m-instruct", device="cpu")
    assert (cpu.dtype, cpu.batch_size) == ("float32", 16)
    assert cpu.cache_identity == "smollm2-135m-instruct"  # the same cache entries as before 'auto' existed
    info = cpu.describe()
    assert info["device"] == "cpu" and info["threads"] == torch.get_num_threads() >= 1
    # enough requests in flight to fill a batch: steps of 16 rows take about as long as steps of 8 on a CPU
    assert connect("smollm2-135m-instruct", check=False, use_cache=False, max_concurrency=3).max_concurrency == 16
    assert connect("smollm2-135m-instruct", check=False, use_cache=False, max_concurrency=32).max_concurrency == 32


def test_auto_engine_is_vllm_only_with_vllm_and_a_gpu(monkeypatch):
    monkeypatch.setattr(vllm_engine, "find_vllm_python", lambda: "/opt/vllm/bin/python")
    assert vllm_engine.resolve_engine("auto", "cuda") == "vllm"
    assert vllm_engine.resolve_engine("auto", "cpu") == "transformers"
    assert vllm_engine.resolve_engine("vllm", "cpu") == "vllm"
    monkeypatch.setattr(vllm_engine, "find_vllm_python", lambda: None)
    assert vllm_engine.resolve_engine("auto", "cuda") == "transformers"
    with pytest.raises(ParameterError) as err:
        vllm_engine.resolve_engine("vllm", "cuda")
    assert err.value.name == "LOCAL_ENGINE" and "make setup-vllm" in err.value.fix


def test_release_models_drops_them_and_empties_the_gpu_cache(fake_gpu):
    local_backend._LOADED[("x", None, "bfloat16", "cuda")] = SimpleNamespace()
    assert release_models() >= 1
    assert not local_backend._LOADED and fake_gpu


def test_tensor_parallel_size_divides_the_heads(monkeypatch, tmp_path, fake_gpu):
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 12}))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert vllm_engine.tensor_parallel_size(str(tmp_path), "cuda") == 6
    assert vllm_engine.tensor_parallel_size(str(tmp_path), "cpu") == 1


def test_requests_sampled_differently_share_one_batch_of_the_local_model():
    """Only the settings every row must share (max_tokens, top_logprobs, stop) split a batch; temperature, top-p
    and seed go per row (`RowSampler`), so MT-Bench's per-category temperatures and the eval set decode together."""
    import asyncio

    from helpers.llm.types import ChatResult

    backend = LocalBackend("smollm2-135m-instruct", device="cpu")
    calls = []

    def fake_generate(conversations, samplings, salts=None):
        calls.append([s.get("temperature") for s in samplings])
        return [ChatResult(text="ok", finish_reason="stop") for _ in conversations]

    backend._generate = fake_generate

    async def ask():
        asks = [backend.complete([{"role": "user", "content": f"q{i}"}], {"max_tokens": 8, "temperature": t, "seed": 0})
                for i, t in enumerate([0.9, 0.9, 0.0, 0.7])]
        asks.append(backend.complete([{"role": "user", "content": "judge"}], {"max_tokens": 1, "temperature": 0.0}))
        return await asyncio.gather(*asks)

    assert all(r.text == "ok" for r in asyncio.run(ask()))
    assert sorted(map(sorted, calls)) == [[0.0], [0.0, 0.7, 0.9, 0.9]]
