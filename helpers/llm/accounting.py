"""Token, call and cost accounting for every LLM client, reported per stage in the run manifest.

Prices live in `helpers/llm/prices.yaml` (USD per million tokens, per dated model snapshot) so users can edit them;
an unknown model is reported with cost `None` instead of a guess. Calls sent through a Batch API are priced at the
model's `batch_input` / `batch_output` prices when the file gives them, else at the list price times
`batch_discount` (OpenAI charges half).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .models import is_embedded

PRICES_PATH = Path(__file__).with_name("prices.yaml")


@lru_cache(maxsize=4)
def load_prices(path: str = str(PRICES_PATH)) -> dict[str, dict[str, float]]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    discount = float(data.get("batch_discount", 1.0))
    return {
        str(k): {"input": float(v["input"]), "output": float(v["output"]),
                 "batch_input": float(v.get("batch_input", float(v["input"]) * discount)),
                 "batch_output": float(v.get("batch_output", float(v["output"]) * discount))}
        for k, v in data.get("models", {}).items()
    }


def price_date(model: str, path: str = str(PRICES_PATH)) -> str | None:
    """When a model's price in prices.yaml was last checked (its row's `as_of`), or None."""
    row = ((yaml.safe_load(Path(path).read_text()) or {}).get("models") or {}).get(model) or {}
    return str(row["as_of"]) if row.get("as_of") else None


def price_for(model: str, prices: dict[str, dict[str, float]] | None = None) -> dict[str, float] | None:
    """Exact id first, then the longest known prefix (so 'gpt-4o-2024-08-06' can match a 'gpt-4o-2024-08-06' row only)."""
    prices = load_prices() if prices is None else prices
    if model in prices:
        return prices[model]
    if is_embedded(model) or model.startswith(("/", ".", "~")):
        return {"input": 0.0, "output": 0.0, "batch_input": 0.0, "batch_output": 0.0}  # runs locally
    return None


def estimate_cost(model: str, input_tokens: int, output_tokens: int, batch: bool = False) -> float | None:
    price = price_for(model)
    if price is None:
        return None
    if batch:
        return (input_tokens * price["batch_input"] + output_tokens * price["batch_output"]) / 1e6
    return (input_tokens * price["input"] + output_tokens * price["output"]) / 1e6


@dataclass
class Usage:
    """Running totals for one client. `calls` counts paid (non-cached) successful calls."""

    model: str = ""
    batch: bool = False  # paid calls went through a Batch API (priced at batch prices)
    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cached_output_tokens: int = 0
    wall_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_call(self, input_tokens: int, output_tokens: int, cached: bool, retries: int = 0) -> None:
        with self._lock:
            self.retries += retries
            if cached:
                self.cache_hits += 1
                self.cached_input_tokens += input_tokens
                self.cached_output_tokens += output_tokens
            else:
                self.calls += 1
                self.input_tokens += input_tokens
                self.output_tokens += output_tokens

    def add_failure(self, retries: int = 0) -> None:
        with self._lock:
            self.failures += 1
            self.retries += retries

    def add_wall(self, seconds: float) -> None:
        with self._lock:
            self.wall_s += seconds

    @property
    def cost_usd(self) -> float | None:
        return estimate_cost(self.model, self.input_tokens, self.output_tokens, batch=self.batch)

    @property
    def cache_hit_rate(self) -> float:
        total = self.calls + self.cache_hits
        return self.cache_hits / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        data["cost_usd"] = self.cost_usd
        data["cache_hit_rate"] = round(self.cache_hit_rate, 4)
        data["wall_s"] = round(self.wall_s, 3)
        return data


# ---------------------------------------------------------------------- dry-run estimates

# A remote model's tokenizer is not at hand offline: ~4 characters per token (English text with GPT-4's and
# Llama-3's tokenizers), and a reply that is not capped lower is taken to be as long as a typical teacher reply
# (the released GPT-4-Turbo responses average ~300 words); stage 2's estimate uses the same two figures.
CHARS_PER_TOKEN = 4.0
TYPICAL_REPLY_TOKENS = 450


def text_tokens(text: str) -> int:
    """Approximate tokens of a text (at least 1)."""
    return max(1, round(len(text) / CHARS_PER_TOKEN))


def typical_reply(cap: int) -> int:
    """The expected length of a reply capped at `cap` tokens."""
    return max(1, min(int(cap), TYPICAL_REPLY_TOKENS))

@dataclass
class CostLine:
    """One part of a stage as a dry run sees it: the requests it would send, their tokens, and what they cost.

    `output_tokens` is the expected reply length (an earlier run's average where RUN_DIR has one, else a typical
    reply within the decoding cap); `output_cap_tokens` has every reply at its cap, the upper bound. A part run on
    the user's own GPUs (`in_process`: training, in-process answering) costs GPU-hours, not dollars: `gpu_tokens`
    (tokens generated or trained on) over the assumed `tokens_per_s`."""

    stage: str
    part: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_cap_tokens: int = 0
    input_cap_tokens: int = 0  # input when every earlier reply of a conversation hit its cap (0: as input_tokens)
    in_process: bool = False
    gpu_tokens: int = 0
    tokens_per_s: float | None = None
    basis: str = "estimated from the prompts"
    note: str = ""

    def usd(self, batch: bool = False, cap: bool = False) -> float | None:
        """Dollars at prices.yaml (None: the model has no price there, never a guessed 0)."""
        if self.in_process or not (self.requests or self.input_tokens or self.output_tokens):
            return 0.0
        if cap:
            return estimate_cost(self.model, self.input_cap_tokens or self.input_tokens, self.output_cap_tokens,
                                 batch=batch)
        return estimate_cost(self.model, self.input_tokens, self.output_tokens, batch=batch)

    @property
    def gpu_hours(self) -> float | None:
        if not self.in_process:
            return None
        return self.gpu_tokens / self.tokens_per_s / 3600 if self.tokens_per_s else None

    def with_run_averages(self, usage: dict[str, Any] | None) -> "CostLine":
        """Replace the estimated tokens per request by an earlier run's averages (paid and cached calls of the same
        model and role), so a re-estimate after a small run reads the teacher's real reply lengths."""
        if not usage or usage.get("model") not in (None, "", self.model) or self.in_process:
            return self
        seen = int(usage.get("calls", 0)) + int(usage.get("cache_hits", 0))
        if not seen or not self.requests:
            return self
        tokens_in = int(usage.get("input_tokens", 0)) + int(usage.get("cached_input_tokens", 0))
        tokens_out = int(usage.get("output_tokens", 0)) + int(usage.get("cached_output_tokens", 0))
        self.input_tokens = round(self.requests * tokens_in / seen)
        self.output_tokens = min(round(self.requests * tokens_out / seen), self.output_cap_tokens or 1 << 62)
        self.basis = f"averages of {seen} requests of an earlier run in RUN_DIR"
        return self

    def as_row(self) -> dict[str, Any]:
        hours = self.gpu_hours
        return {"stage": self.stage, "part": self.part, "model": self.model, "requests": self.requests,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "usd_live": _rounded(self.usd()), "usd_batch": _rounded(self.usd(batch=True)),
                "usd_live_upper": _rounded(self.usd(cap=True)),
                "in_process": self.in_process, "gpu_hours": None if hours is None else round(hours, 2),
                "assumed_tokens_per_s": self.tokens_per_s if self.in_process else None,
                "basis": self.basis, "note": self.note}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def sum_or_unknown(values: list[float | None]) -> float | None:
    """A total that is unknown as soon as one part is: an unknown price never counts as 0."""
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


@dataclass(frozen=True)
class Throughput:
    """The throughput a dry run assumes for work on the user's own GPUs (say it beside every GPU-hour figure).

    Defaults are for a 7-8B model in bf16 on one 80 GB data-centre GPU (A100/H100 class): vLLM answering many
    prompts at once decodes a few thousand tokens per second; a full fine-tune with FSDP and gradient
    checkpointing costs ~8 x 8e9 FLOPs per token, ~2,000 tokens per second at 40 % of an A100's bf16 peak. A small
    model on a CPU is orders of magnitude slower: override with `--assume-tokens-per-s` /
    `--assume-train-tokens-per-s`, or measure with a short run (stage 3 records `train_tokens_per_s`)."""

    answer_tokens_per_s: float = 2500.0
    train_tokens_per_s: float = 2000.0

    def describe(self) -> str:
        return (f"answering {self.answer_tokens_per_s:,.0f} generated tokens/s, training "
                f"{self.train_tokens_per_s:,.0f} tokens/s per GPU")
