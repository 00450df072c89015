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
