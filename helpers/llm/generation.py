"""One batched `generate` for every in-process model: the local backend's replies and stage 3's held-out answers.

Both must decode the same way, or a checkpoint chosen in stage 3 would answer differently when stage 4 reaches it
through `connect(model=<folder>)`: prompts rendered by the caller (chat template text, no extra special tokens), left
padding, the pad token falling back to the end-of-sequence token, and generation stopping at ANY of the model's stop
tokens (the generation config's and the tokenizer's end-of-sequence, which an SFT template may have changed).

Prompt prefixes already seen are not computed again when a `PrefixCache` is passed: a multi-turn chat's next
prompt starts with the previous prompt and reply, whose keys and values the model produced last time. Each row
reuses the longest cached prefix of its own tokens and only its new suffix goes through the model. In the batch,
a row is laid out as [padding, cached prefix, padding, new suffix] with the attention mask off on both paddings;
positions come from the mask, so every real token sees the same positions and keys as without the cache (the
replies agree up to float rounding). Models with sliding-window layers are run without it.

Sampling is per request: each row draws its tokens from its own random generator, seeded from the request (its
prompt, the caller's seed and salt). A request thus gets the same reply whichever other requests share its batch
and in whatever order concurrent conversations arrive, so a run with an empty call cache reproduces the replies of
an earlier one (up to float rounding, which can differ with the batch's padding), and a retry with a new salt draws
a new reply.

What one row yields (`Generated`): the answer's tokens up to, not including, the first stop token; whether the model
stopped by itself (`stopped`, False when it hit `max_new_tokens`); and `output_tokens`, the tokens generated
including that stop token (what an OpenAI-compatible server counts as completion tokens).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from .meter import TokenMeter


@dataclass
class Generated:
    text: str  # decoded answer, special tokens skipped (not stripped: a caller may still cut at stop strings)
    token_ids: list[int]  # answer tokens, the stop token excluded
    stopped: bool  # True: the model emitted a stop token; False: cut at max_new_tokens
    input_tokens: int  # prompt tokens (padding excluded)
    top_logprobs: list[dict[str, float]] | None = field(default=None)  # first steps' alternatives, if asked

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids) + int(self.stopped)


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends an answer: the generation config's end-of-sequence id(s) and the tokenizer's."""
    return stop_token_ids_from(model.generation_config, tokenizer)


def stop_token_ids_from(generation_config: Any, tokenizer: Any) -> set[int]:
    """`stop_token_ids` from a generation config without the model (what the vLLM engine is sent per request)."""
    ids = generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids])
    found.add(tokenizer.eos_token_id)
    found.discard(None)
    return found


@contextmanager
def left_padded(tokenizer: Any) -> Iterator[Any]:
    """Left padding and a pad token for the duration of a batch; the tokenizer is restored afterwards."""
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if pad is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


class PrefixCache:
    """Keys and values of recently computed token sequences, one entry per sequence (real tokens only, on the
    model's device), to be reused as prompt prefixes. Bounded by the number of tokens held; the least recently
    used entries go first. Not thread-safe: use it under the model's lock."""

    def __init__(self, max_tokens: int = 32_768, min_reuse: int = 16) -> None:
        self.max_tokens, self.min_reuse = max_tokens, min_reuse  # shorter shared prefixes are not worth a lookup
        self._entries: OrderedDict[int, tuple[Any, list[tuple[Any, Any]]]] = OrderedDict()
        self._next_id = 0
        self.tokens = 0
        self.reused_tokens = 0  # prompt tokens not computed again, for reports

    def longest_prefix(self, ids: Any) -> tuple[int, int | None]:
        """(length, entry id) of the longest cached prefix of the 1-D token tensor `ids`, at most len(ids) - 1."""
        best, best_id = 0, None
        for entry_id, (cached, _) in self._entries.items():
            n = min(len(cached), len(ids) - 1)
            if n <= best:
                continue
            same = (cached[:n] == ids[:n]).int()
            common = int(same.argmin()) if not bool(same.all()) else n
            if common > best:
                best, best_id = common, entry_id
        return (best, best_id) if best >= self.min_reuse else (0, None)

    def kv(self, entry_id: int) -> list[tuple[Any, Any]]:
        self._entries.move_to_end(entry_id)
        return self._entries[entry_id][1]

    def add(self, ids: Any, kv: list[tuple[Any, Any]], replaces: int | None = None) -> None:
        """Store a sequence; `replaces` names the entry it extends (now redundant)."""
        if replaces is not None and replaces in self._entries:
            self.tokens -= len(self._entries.pop(replaces)[0])
        if len(ids) > self.max_tokens:
            return
        self._entries[self._next_id] = (ids, kv)
        self._next_id += 1
        self.tokens += len(ids)
        while self.tokens > self.max_tokens:
            self.tokens -= len(self._entries.popitem(last=False)[1][0])


def supports_prefix_cache(model: Any) -> bool:
    """Only models whose every layer attends to the whole sequence (no sliding window) keep whole-prefix caches."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    types = getattr(config, "layer_types", None)
    if types is not None:
        return all(t == "full_attention" for t in types)
    return not getattr(config, "sliding_window", None)


def _with_cached_prefixes(model: Any, rows: list[Any], pad_id: int, cache: PrefixCache) -> tuple[dict[str, Any], list]:
    """Inputs for `generate` that reuse each row's longest cached prefix: input_ids and attention_mask covering
    [padding, prefix, padding, suffix], and past_key_values holding the prefixes' keys and values."""
    import torch  # heavy: only processes that run a model in-process pay for importing it
    from transformers import DynamicCache

    found = [cache.longest_prefix(ids) for ids in rows]
    n_cached = max(n for n, _ in found)
    n_new = max(len(ids) - n for ids, (n, _) in zip(rows, found))
    batch = len(rows)
    input_ids = torch.full((batch, n_cached + n_new), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, n_cached + n_new), dtype=torch.long)
    layers = None
    for i, (ids, (n, entry_id)) in enumerate(zip(rows, found)):
        input_ids[i, n_cached - n:n_cached] = ids[:n]
        mask[i, n_cached - n:n_cached] = 1
        input_ids[i, n_cached + n_new - (len(ids) - n):] = ids[n:]
        mask[i, n_cached + n_new - (len(ids) - n):] = 1
        if entry_id is None:
            continue
        kv = cache.kv(entry_id)
        if layers is None:
            layers = [(k.new_zeros((batch, k.shape[0], n_cached, k.shape[2])),
                       v.new_zeros((batch, v.shape[0], n_cached, v.shape[2]))) for k, v in kv]
        for (k_all, v_all), (k, v) in zip(layers, kv):
            k_all[i, :, n_cached - n:] = k[:, :n]
            v_all[i, :, n_cached - n:] = v[:, :n]
        cache.reused_tokens += n
    inputs: dict[str, Any] = {"input_ids": input_ids.to(model.device), "attention_mask": mask.to(model.device)}
    if layers is not None:
        inputs["past_key_values"] = DynamicCache(ddp_cache_data=layers, config=model.config)
    return inputs, found


def _store_prefixes(cache: PrefixCache, out: Any, inputs: dict[str, Any], rows: list[Any], found: list,
                    kept_lengths: list[int]) -> None:
    """Keep each row's prompt + answer keys and values (real tokens only) for its next turn."""
    import torch  # heavy: only processes that run a model in-process pay for importing it

    past = out.past_key_values
    if past is None:
        return
    layers = [(layer.keys, layer.values) for layer in past.layers]
    n_kv = layers[0][0].shape[2]
    generated = out.sequences.shape[1] - inputs["input_ids"].shape[1]
    full_mask = torch.cat([inputs["attention_mask"], inputs["attention_mask"].new_ones((len(rows), generated))], 1)
    for i, ids in enumerate(rows):
        real = full_mask[i, :n_kv].bool()
        length = min(int(real.sum()), len(ids) + kept_lengths[i])
        positions = real.nonzero().squeeze(1)[:length]
        seq = out.sequences[i, positions].cpu()
        kv = [(k[i][:, positions], v[i][:, positions]) for k, v in layers]  # indexing copies: no view of the batch
        cache.add(seq, kv, replaces=found[i][1])


def row_seed(prompt: str, seed: int | None = None, salt: str = "") -> int:
    """The sampling seed of one request: a function of the request alone (see the module docstring)."""
    digest = hashlib.sha256(f"{seed}\x1f{salt}\x1f{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class RowSampler:
    """A logits processor that samples each row with its own generator (temperature, then nucleus top-p, no top-k)
    and leaves only the drawn token possible, so `generate` in greedy mode emits exactly it.

    `temperature` and `top_p` are one value for every row, or one per row: requests with different settings then
    share a batch (a row at temperature 0 takes the most likely token, as greedy decoding does). A batch of one
    setting is drawn in one pass over its rows; a mixed batch row by row, with the same arithmetic per row."""

    def __init__(self, seeds: list[int], temperature: float | Sequence[float], top_p: float | Sequence[float]) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p
        self._per_row = None
        if not isinstance(temperature, (int, float)) or not isinstance(top_p, (int, float)):
            temps = [temperature] * len(seeds) if isinstance(temperature, (int, float)) else list(temperature)
            top_ps = [top_p] * len(seeds) if isinstance(top_p, (int, float)) else list(top_p)
            self._per_row = list(zip(temps, top_ps))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._per_row is None:
            chosen = _draw(scores, self.temperature, self.top_p, self.generators)
        else:
            chosen = torch.cat([_draw(scores[i:i + 1], t, p, [g]) if t > 0 else scores[i:i + 1].argmax(-1, True).cpu()
                                for i, ((t, p), g) in enumerate(zip(self._per_row, self.generators))])
        chosen = chosen.to(scores.device)
        return scores.fill_(float("-inf")).scatter_(-1, chosen, 0.0)


def _draw(scores: Any, temperature: float, top_p: float, generators: list[Any]) -> Any:
    """One token per row of `scores`, drawn with that row's generator; the chosen ids as a (rows, 1) tensor."""
    import torch

    probs = torch.softmax(scores.float() / temperature, dim=-1).cpu()
    if top_p < 1.0:
        ordered, order = probs.sort(dim=-1, descending=True)
        outside = ordered.cumsum(dim=-1) - ordered > top_p  # tokens after the nucleus is full
        ordered[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, ordered)
    # Inverse-CDF sampling with one uniform number per row from that row's generator: batched, and much
    # cheaper than a multinomial per row over a vocabulary of 250k tokens.
    cdf = probs.cumsum(dim=-1)
    u = torch.cat([torch.rand(1, generator=g) for g in generators]) * cdf[:, -1]
    return torch.searchsorted(cdf, u.unsqueeze(-1), right=True).clamp_(max=probs.shape[-1] - 1)


def _one_or_per_row(values: Any) -> Any:
    """A setting given per row stays one value when every row has the same (the batch is drawn in one pass)."""
    if isinstance(values, (list, tuple)):
        return values[0] if len(set(values)) == 1 else list(values)
    return values


def generate_batch(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int,
                   temperature: float | Sequence[float] = 0.0, top_p: float | Sequence[float] = 1.0,
                   seed: int | None | Sequence[int | None] = None, top_logprobs: int = 0,
                   prefix_cache: PrefixCache | None = None, add_special_tokens: bool = False,
                   salts: list[str] | None = None, meter: TokenMeter | None = None) -> list[Generated]:
    """Continue each rendered prompt; greedy at temperature 0, nucleus sampling (no top-k) above it, each row with
    its own generator seeded by `row_seed(prompt, seed, salt)`. `temperature`, `top_p` and `seed` are one value or
    one per prompt (requests with different settings in one batch). With a `prefix_cache`, prompt prefixes
    computed before are reused (see the module docstring).

    `add_special_tokens=True` is for plain-text prompts (not rendered by a chat template): the tokenizer adds its
    own BOS, as a completion server tokenises a raw prompt. A `meter` counts the tokens as they are generated, for
    progress lines (`helpers.llm.meter`).
    """
    import torch  # heavy: only processes that run a model in-process pay for importing it

    stops = stop_token_ids(model, tokenizer)
    with left_padded(tokenizer):
        pad_id = tokenizer.pad_token_id
        if prefix_cache is not None and supports_prefix_cache(model):
            rows = [torch.tensor(ids, dtype=torch.long)
                    for ids in tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]]
            enc, found = _with_cached_prefixes(model, rows, pad_id, prefix_cache)
        else:
            prefix_cache = None
            enc = tokenizer(prompts, return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens).to(model.device)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens, "do_sample": False, "eos_token_id": sorted(stops),
        "pad_token_id": pad_id, "return_dict_in_generate": True, "output_logits": bool(top_logprobs),
        "temperature": None, "top_p": None, "top_k": None,  # the model's sampling defaults stay off
    }
    temperature, top_p = _one_or_per_row(temperature), _one_or_per_row(top_p)
    if max(temperature if isinstance(temperature, list) else [temperature]) > 0:
        from transformers import LogitsProcessorList

        seeds = seed if isinstance(seed, (list, tuple)) else [seed] * len(prompts)
        seeds = [row_seed(p, s, salt) for p, s, salt in zip(prompts, seeds, salts or [""] * len(prompts))]
        kwargs["logits_processor"] = LogitsProcessorList([RowSampler(seeds, temperature, top_p)])
    model.eval()
    with torch.inference_mode(), (meter.counting(stops) if meter is not None else nullcontext()) as streamer:
        out = model.generate(**enc, **kwargs, streamer=streamer)
    prompt_len = enc["input_ids"].shape[1]
    results = []
    for row in range(len(prompts)):
        new_ids = out.sequences[row, prompt_len:].tolist()
        kept, stopped = new_ids, False
        for i, token in enumerate(new_ids):
            if token in stops:
                kept, stopped = new_ids[:i], True
                break
        top = None
        if top_logprobs:
            top = []
            for step in out.logits[: min(5, len(kept) + int(stopped))]:
                values, idx = torch.log_softmax(step[row].float(), dim=-1).topk(top_logprobs)
                top.append({tokenizer.decode([int(i)]): float(v) for v, i in zip(values, idx)})
        results.append(Generated(tokenizer.decode(kept, skip_special_tokens=True), kept, stopped,
                                 int(enc["attention_mask"][row].sum()), top))
    if prefix_cache is not None:
        _store_prefixes(prefix_cache, out, enc, rows, found, [r.output_tokens for r in results])
    return results
