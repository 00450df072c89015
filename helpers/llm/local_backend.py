"""Backend that runs a causal LM in-process with transformers (the embedded default, or any checkpoint).

Requests from many concurrent conversations are gathered into batches (rendered with the model's chat template and
decoded by `helpers.llm.generation.generate_batch`, the same function stage 3 answers with) because one batched
`generate` is several times faster than the same requests one by one on a CPU. Each model keeps the keys and values
of its recent prompts and replies (`PrefixCache`), so the next turn of a conversation, or another request opening
with the same long judge template, computes only its new tokens. Models are loaded once per process
and shared between clients (the teacher and the judge are often the same small model), on the best device in the
precision LOCAL_DTYPE resolves to there (`helpers.llm.device`); `release_models()` drops them all, so that stage 3
can train, or a vLLM engine start, on a free GPU (the next request loads the model again).
"""
from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .device import (batch_size_for, best_device, describe_placement, is_accelerator, place,
                     release_accelerator_memory, resolve_dtype)
from .errors import PermanentError
from .generation import PrefixCache, generate_batch
from .meter import TokenMeter
from .models import EMBEDDED_MODELS, identity_parts, resolve_model_path
from .types import ChatResult, Message
from ..params import LOCAL_DTYPES, ParameterError
from ..phases import timed

PER_ROW_SAMPLING = ("temperature", "top_p", "seed")  # may differ between the rows of one batch
_LOADED: dict[tuple[str, str | None, str, str], "_LoadedModel"] = {}
_LOAD_LOCK = threading.Lock()


@dataclass
class _LoadedModel:
    tokenizer: Any
    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    prefixes: PrefixCache = field(default_factory=lambda: PrefixCache(max_tokens=16_384))




def _load(path: str, chat_template: str | None, dtype: str = "float32", device: str = "cpu") -> _LoadedModel:
    with _LOAD_LOCK:
        key = (path, chat_template, dtype, device)
        if key not in _LOADED:
            # heavy: transformers is imported only by processes that run a model in-process
            from transformers import AutoModelForCausalLM, AutoTokenizer

            with timed(f"load {Path(path).name}"):
                tokenizer = AutoTokenizer.from_pretrained(path)
                if chat_template:
                    tokenizer.chat_template = chat_template
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
                _LOADED[key] = _LoadedModel(tokenizer, place(model, device))
        return _LOADED[key]


def release_models() -> int:
    """Drop every in-process model this process loaded and give their accelerator memory back; returns how many.
    A backend asked again afterwards loads its model again."""
    with _LOAD_LOCK:
        count = len(_LOADED)
        _LOADED.clear()
    release_accelerator_memory()
    return count


def transformers_version() -> str:
    from importlib.metadata import version

    return f"transformers=={version('transformers')}"


@dataclass
class _Pending:
    messages: list[Message]
    sampling: dict[str, Any]
    future: asyncio.Future
    salt: str = ""


def render_prompt(tokenizer: Any, messages: list[Message]) -> str:
    """The chat template's text of one request. A request that ends with an assistant message asks for the
    continuation of that message (what a judge writes after its own rating prefix, say), not for a new reply."""
    if messages and messages[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(messages, continue_final_message=True, tokenize=False)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class LocalBackend:
    kind = "local"
    continues_final_message = True  # see `render_prompt`; an OpenAI-compatible endpoint answers such a request anew

    def __init__(self, model: str, role: str = "TEACHER", chat_template: str | None = None,
                 batch_size: int | None = None, gather_window_s: float = 0.02, reuse_prefixes: bool = True,
                 dtype: str = "auto", device: str | None = None) -> None:
        if dtype not in LOCAL_DTYPES:
            raise ParameterError("LOCAL_DTYPE", f"unknown dtype {dtype!r}", f"use one of {', '.join(LOCAL_DTYPES)}")
        self.model, self.role, self.chat_template = model, role, chat_template
        self.device = device or best_device()
        # 'auto': bfloat16 on a GPU and on a CPU with bf16 instructions (AMX / AVX512-BF16), where it about halves
        # the time per token; float32 on other CPUs. bf16 replies differ from float32's and are cached apart.
        self.dtype = resolve_dtype(dtype, self.device)
        self.reuse_prefixes = reuse_prefixes  # False: every prompt is computed in full (the slower reference path)
        self.batch_size = batch_size or batch_size_for(self.device)
        self.gather_window_s = gather_window_s
        self.meter = TokenMeter()  # tokens generated so far: the progress bar shows them while a batch runs
        self._path: str | None = None
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Queue] = weakref.WeakKeyDictionary()
        self._workers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()

    @property
    def min_concurrency(self) -> int:
        """Requests in flight needed to fill one batch: an in-process model answers every waiting request of a batch
        in one `generate`, whose steps take about as long for a full batch as for a few rows (see `device`)."""
        return self.batch_size

    def describe(self) -> dict[str, Any]:
        upstream = EMBEDDED_MODELS[self.model].upstream_id if self.model in EMBEDDED_MODELS else None
        return {"backend": self.kind, "model": self.model, "base_url": "", "api_key_env": "",
                "upstream": upstream, "custom_chat_template": self.chat_template is not None,
                **describe_placement(self.device, self.dtype), "batch_size": self.batch_size,
                "engine": "transformers", "engine_version": transformers_version()}

    @property
    def cache_identity(self) -> str:
        """`identity_parts` (name, folder fingerprint, custom template), plus a precision other than float32 and an
        accelerator (whose float rounding differs from the CPU's)."""
        parts = identity_parts(self.model, self.chat_template)
        if self.dtype != "float32":
            parts.append(self.dtype)
        if is_accelerator(self.device):
            parts.append(self.device)
        return "@".join(parts)

    def _loaded(self) -> _LoadedModel:
        if self._path is None:
            self._path = resolve_model_path(self.model, f"{self.role}_MODEL")
        return _load(self._path, self.chat_template, self.dtype, self.device)

    def check(self) -> None:
        try:
            loaded = self._loaded()
        except ParameterError:
            raise
        except OSError as exc:
            raise ParameterError(f"{self.role}_MODEL", f"could not load {self.model!r} locally ({str(exc)[:200]})",
                                 f"use an embedded model name, a checkpoint folder, or set {self.role}_BASE_URL for a served model") from None
        if not loaded.tokenizer.chat_template:
            raise ParameterError(f"{self.role}_MODEL", f"{self.model!r} has no chat template (a base model?)",
                                 "pass chat_template=... (e.g. helpers.sft.templates) or use an instruct/fine-tuned checkpoint")

    # ------------------------------------------------------------------ batching
    async def complete(self, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> ChatResult:
        """One reply; `salt` (a retry's "attempt-2", ...) seeds a different sample of the same request."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = asyncio.Queue()
            self._workers[loop] = loop.create_task(self._worker(queue))
        fut: asyncio.Future = loop.create_future()
        await queue.put(_Pending(messages, sampling, fut, salt))
        return await fut

    async def release_loop(self) -> None:
        loop = asyncio.get_running_loop()
        worker = self._workers.pop(loop, None)
        self._queues.pop(loop, None)
        if worker is not None:
            worker.cancel()

    async def _worker(self, queue: asyncio.Queue) -> None:
        while True:
            first = await queue.get()
            batch = [first]
            await asyncio.sleep(self.gather_window_s)  # let concurrent conversations enqueue their next turn
            while not queue.empty() and len(batch) < self.batch_size * 4:
                batch.append(queue.get_nowait())
            groups: dict[str, list[_Pending]] = {}
            for item in batch:  # rows differing only in how they are sampled share a batch (`RowSampler`)
                shared = sorted((k, v) for k, v in item.sampling.items() if k not in PER_ROW_SAMPLING)
                groups.setdefault(repr(shared), []).append(item)
            for items in groups.values():
                # Similar lengths share a batch: left padding to the longest prompt is pure wasted compute.
                items.sort(key=lambda p: sum(len(m["content"]) for m in p.messages))
                for start in range(0, len(items), self.batch_size):
                    chunk = [p for p in items[start:start + self.batch_size] if not p.future.cancelled()]
                    if not chunk:
                        continue
                    try:
                        results = await asyncio.to_thread(self._generate, [p.messages for p in chunk],
                                                          [p.sampling for p in chunk], [p.salt for p in chunk])
                    except Exception as exc:  # report to every waiter; the client records the failure
                        for p in chunk:
                            if not p.future.done():
                                p.future.set_exception(PermanentError(f"local generation failed: {exc}"))
                        continue
                    for p, r in zip(chunk, results):
                        if not p.future.done():
                            p.future.set_result(r)

    # ------------------------------------------------------------------ generation
    def _generate(self, conversations: list[list[Message]], samplings: list[dict[str, Any]],
                  salts: list[str] | None = None) -> list[ChatResult]:
        """One batched `generate`; the rows share every setting but those in PER_ROW_SAMPLING."""
        sampling = samplings[0]
        loaded = self._loaded()
        tok = loaded.tokenizer
        prompts = [render_prompt(tok, m) for m in conversations]
        with loaded.lock, timed(f"{self.role.lower()} generation", rows=len(prompts)) as counts:
            # one generate per model at a time; it also borrows the shared tokenizer's padding
            rows = generate_batch(loaded.model, tok, prompts, int(sampling.get("max_tokens", 512)),
                                  temperature=[float(s.get("temperature", 0.0) or 0.0) for s in samplings],
                                  top_p=[float(s.get("top_p", 1.0)) for s in samplings],
                                  seed=[s.get("seed") for s in samplings],
                                  top_logprobs=int(sampling.get("top_logprobs", 0) or 0),
                                  prefix_cache=loaded.prefixes if self.reuse_prefixes else None, salts=salts,
                                  meter=self.meter)
            counts.update(tokens=sum(r.output_tokens for r in rows), prompt_tokens=sum(r.input_tokens for r in rows),
                          decode_steps=max((r.output_tokens for r in rows), default=0))
        results = []
        for row in rows:
            text, finish = row.text, "stop" if row.stopped else "length"
            for stop in sampling.get("stop", []) or []:
                if stop in text:
                    text, finish = text.split(stop, 1)[0], "stop"
            results.append(ChatResult(text=text.strip(), finish_reason=finish, input_tokens=row.input_tokens,
                                      output_tokens=row.output_tokens, model=self.model,
                                      top_logprobs=row.top_logprobs))
        return results
