"""Backend that runs a causal LM in-process with transformers (the embedded default, or any checkpoint).

Requests from many concurrent conversations are gathered into batches (rendered with the model's chat template and
decoded by `helpers.llm.generation.generate_batch`, the same function stage 3 answers with) because one batched
`generate` is several times faster than the same requests one by one on a CPU. Each model keeps the keys and values
of its recent prompts and replies (`PrefixCache`), so the next turn of a conversation, or another request opening
with the same long judge template, computes only its new tokens. Models are loaded once per process
and shared between clients (the teacher and the judge are often the same small model).
"""
from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PermanentError
from .generation import PrefixCache, generate_batch
from .models import EMBEDDED_MODELS, folder_fingerprint, resolve_model_path
from .types import ChatResult, Message
from ..params import LOCAL_DTYPES, ParameterError

_LOADED: dict[tuple[str, str | None, str], "_LoadedModel"] = {}
_LOAD_LOCK = threading.Lock()


@dataclass
class _LoadedModel:
    tokenizer: Any
    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    prefixes: PrefixCache = field(default_factory=lambda: PrefixCache(max_tokens=16_384))




def _load(path: str, chat_template: str | None, dtype: str = "float32") -> _LoadedModel:
    with _LOAD_LOCK:
        key = (path, chat_template, dtype)
        if key not in _LOADED:
            # heavy: transformers is imported only by processes that run a model in-process
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
            if chat_template:
                tokenizer.chat_template = chat_template
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            model.eval()
            _LOADED[key] = _LoadedModel(tokenizer, model)
        return _LOADED[key]


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
                 batch_size: int = 8, gather_window_s: float = 0.02, reuse_prefixes: bool = True,
                 dtype: str = "float32") -> None:
        if dtype not in LOCAL_DTYPES:
            raise ParameterError("LOCAL_DTYPE", f"unknown dtype {dtype!r}", f"use one of {', '.join(LOCAL_DTYPES)}")
        self.model, self.role, self.chat_template = model, role, chat_template
        # bfloat16 about halves the CPU time per token where the CPU has bf16 instructions (AVX512-BF16 / AMX), but
        # its replies differ from float32's: opt-in only, and cached under their own key.
        self.dtype = dtype
        self.reuse_prefixes = reuse_prefixes  # False: every prompt is computed in full (the slower reference path)
        self.batch_size, self.gather_window_s = batch_size, gather_window_s
        self._path: str | None = None
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Queue] = weakref.WeakKeyDictionary()
        self._workers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()

    def describe(self) -> dict[str, Any]:
        upstream = EMBEDDED_MODELS[self.model].upstream_id if self.model in EMBEDDED_MODELS else None
        return {"backend": self.kind, "model": self.model, "base_url": "", "api_key_env": "",
                "upstream": upstream, "custom_chat_template": self.chat_template is not None, "dtype": self.dtype}

    @property
    def cache_identity(self) -> str:
        """What the call cache knows this model by: the name, plus for a checkpoint folder a fingerprint of its
        files and for a custom chat template its text, so a model retrained into the same folder (or asked through
        another template) never gets an earlier model's cached replies."""
        parts = [self.model]
        folder = Path(self.model).expanduser()
        if self.model not in EMBEDDED_MODELS and folder.is_dir():
            parts.append(folder_fingerprint(folder))
        if self.chat_template is not None:
            parts.append(hashlib.sha256(self.chat_template.encode()).hexdigest()[:16])
        if self.dtype != "float32":
            parts.append(self.dtype)
        return "@".join(parts)

    def _loaded(self) -> _LoadedModel:
        if self._path is None:
            self._path = resolve_model_path(self.model, f"{self.role}_MODEL")
        return _load(self._path, self.chat_template, self.dtype)

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
            for item in batch:
                groups.setdefault(repr(sorted(item.sampling.items())), []).append(item)
            for items in groups.values():
                # Similar lengths share a batch: left padding to the longest prompt is pure wasted compute.
                items.sort(key=lambda p: sum(len(m["content"]) for m in p.messages))
                for start in range(0, len(items), self.batch_size):
                    chunk = [p for p in items[start:start + self.batch_size] if not p.future.cancelled()]
                    if not chunk:
                        continue
                    try:
                        results = await asyncio.to_thread(self._generate, [p.messages for p in chunk],
                                                          chunk[0].sampling, [p.salt for p in chunk])
                    except Exception as exc:  # report to every waiter; the client records the failure
                        for p in chunk:
                            if not p.future.done():
                                p.future.set_exception(PermanentError(f"local generation failed: {exc}"))
                        continue
                    for p, r in zip(chunk, results):
                        if not p.future.done():
                            p.future.set_result(r)

    # ------------------------------------------------------------------ generation
    def _generate(self, conversations: list[list[Message]], sampling: dict[str, Any],
                  salts: list[str] | None = None) -> list[ChatResult]:
        loaded = self._loaded()
        tok = loaded.tokenizer
        prompts = [render_prompt(tok, m) for m in conversations]
        with loaded.lock:  # one generate per model at a time; it also borrows the shared tokenizer's padding
            rows = generate_batch(loaded.model, tok, prompts, int(sampling.get("max_tokens", 512)),
                                  temperature=float(sampling.get("temperature", 0.0) or 0.0),
                                  top_p=float(sampling.get("top_p", 1.0)), seed=sampling.get("seed"),
                                  top_logprobs=int(sampling.get("top_logprobs", 0) or 0),
                                  prefix_cache=loaded.prefixes if self.reuse_prefixes else None, salts=salts)
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
