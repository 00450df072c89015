"""The small value types every stage exchanges with the LLM layer.

Kept apart from the client so stages and tests can build and inspect results without importing a backend.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}

# Sampling keys the layer understands; anything else is a programming error caught early.
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "stop", "top_logprobs", "seed")


@dataclass
class ChatResult:
    """One assistant reply, or the record of a request that failed after every retry."""

    text: str = ""
    finish_reason: str | None = None  # "stop", "length", ... as the backend reports it
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False
    error: str | None = None  # None means success; failures are never cached
    model: str = ""
    latency_s: float = 0.0
    attempts: int = 0
    # For each of the first generated tokens, the top alternatives as {token: logprob}; None when not asked
    # for or not offered by the endpoint (judges then fall back to the verdict text).
    top_logprobs: list[dict[str, float]] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def to_dict(self) -> dict[str, Any]:
        # Shallow, with fresh containers: `asdict`'s recursive copy costs more than the cache write it feeds.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.top_logprobs is not None:
            data["top_logprobs"] = [dict(step) for step in self.top_logprobs]
        return data


# A turn is either fixed text or a function of the replies so far (e.g. "rewrite it only if it was cut off");
# a function returning None skips the turn.
Turn = str | Callable[[list[ChatResult]], "str | None"]


@dataclass
class Conversation:
    """A multi-turn chat: the full transcript and one result per assistant turn."""

    messages: list[Message] = field(default_factory=list)
    results: list[ChatResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def error(self) -> str | None:
        return next((r.error for r in self.results if not r.ok), None)

    @property
    def last_text(self) -> str:
        return self.results[-1].text if self.results else ""

    @property
    def assistant_texts(self) -> list[str]:
        return [r.text for r in self.results]

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.results)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "results": [r.to_dict() for r in self.results]}


def normalise_sampling(sampling: dict[str, Any]) -> dict[str, Any]:
    """Drop unset keys and reject unknown ones, so equal requests hash equally in the cache."""
    unknown = set(sampling) - set(SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"unknown sampling parameter(s) {sorted(unknown)}; allowed: {SAMPLING_KEYS}")
    out = {k: v for k, v in sampling.items() if v is not None}
    if "stop" in out and isinstance(out["stop"], str):
        out["stop"] = [out["stop"]]
    return out
