"""Stage 3's answers on a (fake) GPU: the device, precision and batch they get, the memory given back after every
checkpoint and before training, an engine stopped after every checkpoint, and what the manifest records."""
from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch

from helpers.llm import local_backend, vllm_engine
from helpers.sft import stage
from helpers.sft.answers import Answer
from helpers.sft.config import SFTStageConfig
from sft_tiny import EXAMPLES, OVERFIT, write_jsonl


class FakeModel:
    """Stands for a loaded model: records where it was moved; `generate_answers` is replaced in these tests."""

    def __init__(self, dtype: str) -> None:
        self.dtype, self.device = dtype, "cpu"

    def to(self, device):
        self.device = device
        return self

    def eval(self):
        return self


@pytest.fixture
def fake_gpu(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    monkeypatch.setattr(vllm_engine, "find_vllm_python", lambda: None)
    return emptied


def test_checkpoint_answers_run_on_the_gpu_in_bf16_and_free_it_after_each_checkpoint(monkeypatch, fake_gpu):
    loaded, calls = [], []

    def load(folder, dtype="float32"):
        model = FakeModel(dtype)
        loaded.append(weakref.ref(model))
        return model, "tokenizer"

    def generate(model, tokenizer, instructions, max_new_tokens, batch_size, desc, **sampling):
        calls.append({"device": model.device, "dtype": model.dtype, "batch": batch_size, "emptied": len(fake_gpu)})
        return [Answer(f"answer {i}", True, 2) for i in range(len(instructions))]

    monkeypatch.setattr(stage, "load_for_generation", load)
    monkeypatch.setattr(stage, "generate_answers", generate)
    answer = stage._answer_with_checkpoint(SFTStageConfig(profile="demo"), "unused-base")
    for name in ("checkpoint-1", "checkpoint-2"):
        assert answer(Path(name), ["q1", "q2"]) == ["answer 0", "answer 1"]
    assert calls == [{"device": "cuda", "dtype": "bfloat16", "batch": 64, "emptied": 0},
                     {"device": "cuda", "dtype": "bfloat16", "batch": 64, "emptied": 1}]  # freed in between
    assert len(fake_gpu) == 2
    gc.collect()
    assert all(ref() is None for ref in loaded), "a checkpoint's model outlived its answers"


def test_with_vllm_each_checkpoint_is_served_from_its_folder_and_its_engine_stopped(monkeypatch, fake_gpu):
    served, stopped = [], []
    monkeypatch.setattr(vllm_engine, "find_vllm_python", lambda: "/opt/vllm/bin/python")
    monkeypatch.setattr(stage, "engine_answers", lambda folder, instructions, *a, **k: (
        served.append((folder, k["dtype"], k["device"], len(stopped))) or [Answer("x", True, 1)] * len(instructions)))
    monkeypatch.setattr(stage, "stop_engines", lambda: stopped.append(1))
    monkeypatch.setattr(stage, "load_for_generation", lambda *a, **k: pytest.fail("vLLM answers without loading here"))
    answer = stage._answer_with_checkpoint(SFTStageConfig(profile="demo"), "unused-base")
    answer(Path("run/sft/checkpoint-1"), ["q"])
    answer(Path("run/sft/checkpoint-2"), ["q"])
    assert served == [("run/sft/checkpoint-1", "bfloat16", "cuda", 0), ("run/sft/checkpoint-2", "bfloat16", "cuda", 1)]
    assert len(stopped) == 2


def test_manifest_names_device_precision_and_engine_of_the_answers(monkeypatch, fake_gpu):
    info = stage.answer_engine(SFTStageConfig(profile="demo"))
    assert info["device"] == "cuda" and info["dtype"] == "bfloat16" and info["batch_size"] == 64
    assert info["engine"] == "transformers" and info["engine_version"].startswith("transformers==")
    monkeypatch.setattr(vllm_engine, "find_vllm_python", lambda: "/opt/vllm/bin/python")
    monkeypatch.setattr(stage, "find_vllm_python", lambda: "/opt/vllm/bin/python")
    monkeypatch.setattr(stage, "vllm_version", lambda python: "vllm==9.9")
    vllm_info = stage.answer_engine(SFTStageConfig(profile="demo"))
    assert (vllm_info["engine"], vllm_info["engine_version"]) == ("vllm", "vllm==9.9")
    cpu = stage.answer_engine(SFTStageConfig(profile="demo", local_engine="transformers"))
    assert cpu["engine"] == "transformers"


class Trained(Exception):
    pass


def test_models_and_engines_are_released_before_training(monkeypatch, tmp_path, tiny_base, fake_gpu):
    write_jsonl(tmp_path / "run" / "data" / "train.jsonl", EXAMPLES)
    local_backend._LOADED[("judge", None, "float32", "cpu")] = object()  # e.g. an in-process judge
    stopped = []
    monkeypatch.setattr(stage, "stop_engines", lambda: stopped.append(1))

    def train(*args, **kwargs):
        assert not local_backend._LOADED and stopped and fake_gpu, "training started with models or engines resident"
        raise Trained

    monkeypatch.setattr(stage, "train_sft", train)
    cfg = SFTStageConfig(profile="demo", run_dir=str(tmp_path / "run"), base_model=str(tiny_base),
                         chat_template="alpaca", **{**OVERFIT, "selection": "last"})
    with pytest.raises(Trained):
        stage.run_sft_stage(cfg)
