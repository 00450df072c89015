"""Backend for an in-process model answered by vLLM (LOCAL_ENGINE='vllm'): a local vLLM server per model (see
`vllm_engine`), asked through the OpenAI-compatible chat endpoint exactly like any served model.

It differs from a served model where it must match the transformers route (`LocalBackend`):
- **the same model**: the checkpoint folder (an embedded model's materialised one), in LOCAL_DTYPE, asked through a
  custom chat template when one is given (stage 4 asks the base model through the student's template);
- **the same stops**: every request carries the stop tokens the transformers route stops at (the generation
  config's end-of-sequence ids and the tokenizer's, e.g. Llama-3's 128001 and 128009), special tokens skipped;
- **the same seeding idea**: each request samples with its own seed, a function of the request, the caller's seed
  and the salt (a retry's "attempt-2" draws a new sample), so answers do not depend on what else is in flight;
- **its own cache entries**: cached under the backend kind 'vllm' and the folder's fingerprint (a retrained
  folder is a new model), never mixed with the transformers route's replies, never keyed by the server's port.

The server starts on the first request, not at `check()`: a stage that connects a judge and then trains (stage 3)
starts no engine before it is needed.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from .errors import PermanentError
from .generation import row_seed, stop_token_ids_from
from .models import EMBEDDED_MODELS, identity_parts, resolve_model_path
from .openai_backend import OpenAIBackend
from .types import ChatResult, Message
from .vllm_engine import SERVED_NAME, EngineSpec, engine_for, find_vllm_python, running_engine, vllm_version
from ..params import ParameterError


def stop_ids_of(model_path: str) -> list[int]:
    """The stop tokens `generate_batch` would use for this folder, read without loading the weights."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig  # heavy: only where a model is asked

    try:
        generation = GenerationConfig.from_pretrained(model_path)
    except OSError:  # no generation_config.json: transformers derives one from the model config, so do we
        generation = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_path))
    return sorted(stop_token_ids_from(generation, AutoTokenizer.from_pretrained(model_path)))


class VLLMBackend(OpenAIBackend):
    kind = "vllm"

    def __init__(self, model: str, role: str = "TEACHER", chat_template: str | None = None, dtype: str = "float32",
                 device: str = "cpu", timeout_s: float = 600.0) -> None:
        super().__init__(model, "", "", role=role, timeout_s=timeout_s)  # the server knows it as SERVED_NAME
        self.model_name, self.chat_template, self.dtype, self.device = model, chat_template, dtype, device
        self._path: str | None = None
        self._stop_ids: list[int] | None = None
        self._proxy = None  # the server is on this machine: never through HTTP(S)_PROXY

    @property
    def min_concurrency(self) -> int:
        """Requests in flight the engine should see at least: vLLM batches continuously, so on a GPU many."""
        return 256 if self.device.startswith("cuda") else 0

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = resolve_model_path(self.model_name, f"{self.role}_MODEL")
        return self._path

    def spec(self) -> EngineSpec:
        return EngineSpec(self.path, self.dtype, self.device, self.chat_template)

    def describe(self) -> dict[str, Any]:
        upstream = EMBEDDED_MODELS[self.model_name].upstream_id if self.model_name in EMBEDDED_MODELS else None
        python = find_vllm_python()
        return {"backend": self.kind, "model": self.model_name, "base_url": "", "api_key_env": "",
                "upstream": upstream, "custom_chat_template": self.chat_template is not None, "dtype": self.dtype,
                "device": self.device, "engine": "vllm", "engine_version": vllm_version(python) if python else None}

    @property
    def cache_identity(self) -> str:
        """`identity_parts` and the precision (the backend kind 'vllm' keeps these apart from transformers')."""
        return "@".join([*identity_parts(self.model_name, self.chat_template), self.dtype])

    def check(self) -> None:
        """The model folder resolves and has a chat template (or one is given); no engine is started yet."""
        from transformers import AutoTokenizer  # heavy: see above

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path)
        except OSError as exc:
            raise ParameterError(f"{self.role}_MODEL", f"could not read {self.model_name!r} ({str(exc)[:200]})",
                                 "use an embedded model name or a checkpoint folder") from None
        if not (self.chat_template or tokenizer.chat_template):
            raise ParameterError(f"{self.role}_MODEL", f"{self.model_name!r} has no chat template (a base model?)",
                                 "pass chat_template=... (e.g. helpers.sft.templates) or use an instruct/fine-tuned "
                                 "checkpoint")
        self._stop_ids = stop_ids_of(self.path)

    def request_body(self, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> dict[str, Any]:
        """The OpenAI body with the stop ids the transformers route stops at, and the in-process sampler's row seed
        (a function of the request, SEED and the retry salt) for a sampled request; greedy requests carry none."""
        body = super().request_body(messages, sampling, salt)
        body.pop("seed", None)
        if float(sampling.get("temperature") or 0.0) > 0:
            prompt = json.dumps(messages, sort_keys=True, ensure_ascii=False)
            body["seed"] = row_seed(prompt, sampling.get("seed"), salt)
        if self._stop_ids is None:
            self._stop_ids = stop_ids_of(self.path)
        body.update(model=SERVED_NAME, stop_token_ids=self._stop_ids, skip_special_tokens=True)
        return body

    async def complete(self, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> ChatResult:
        try:  # the engine is started (minutes) by the first request, in a thread; later ones find it running
            server = running_engine(self.spec()) or await asyncio.to_thread(engine_for, self.spec())
        except RuntimeError as exc:  # the engine did not start: every request would fail the same way
            raise PermanentError(str(exc)[-1500:]) from None
        self.base_url = server.base_url
        result = await super().complete(messages, sampling, salt)
        result.model = self.model_name
        return result
