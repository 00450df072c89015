"""Proactive rate limits: pace requests below a provider's limits instead of learning them from 429s.

A provider limits requests and tokens per minute; a client with many conversations in flight reaches those limits
at once and, if it only reacts (back off after a 429), most of its requests are refused. The `RateLimiter` spaces
requests with two token buckets (requests, tokens) refilled at the configured per-minute rates. A request reserves
its share up front and sleeps until the share is available (one `asyncio.sleep` per call, no polling), so the
order of arrival is kept and the CPU cost per call is a few arithmetic operations. The token share is estimated
before the call (characters / 4 of the prompt + `max_tokens`) and corrected with the usage the reply reports.

It also adapts to what the provider says in its answers: OpenAI-style `x-ratelimit-limit-*` (per minute) lower
the rates when the tier is lower than configured, `x-ratelimit-remaining-*` at zero pause the bucket until
`x-ratelimit-reset-*` (durations like "6m0s" or "20ms") says one unit is back, and a `Retry-After` pauses every
request, not only the refused one.
"""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..params import ParameterError

CHARS_PER_TOKEN = 4.0
# Output tokens assumed when a request sets no max_tokens (corrected by the reply's usage).
DEFAULT_OUTPUT_TOKENS = 256
# How much unused capacity a bucket may save up, in seconds of its rate. Kept well below the one second or more
# that providers allow, so that a burst after an idle spell never meets a provider bucket that is already low.
BURST_S = 0.1

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """Seconds from OpenAI's reset format ("6m0s", "1h2m", "20ms", "0.5s") or a bare number of seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """The inverse of `parse_duration`, in the provider's style ("20ms", "1.5s", "6m0s")."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s"


def estimate_tokens(messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any]) -> int:
    """What a provider will count against the token limit before it has run the request."""
    chars = sum(len(m.get("content") or "") for m in messages)
    return int(chars / CHARS_PER_TOKEN) + int(sampling.get("max_tokens") or DEFAULT_OUTPUT_TOKENS)


def _positive(value: float | int | str | None) -> float | None:
    """None for 'no limit' (None, empty, 0); otherwise the number."""
    if value is None or value == "":
        return None
    value = float(value)
    return value if value > 0 else None


def _positive_or_zero(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


class Bucket:
    """A token bucket that hands out reservations: `reserve(n)` takes n now and says how long to wait for them."""

    def __init__(self, per_minute: float, burst_s: float = BURST_S) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self, amount: float, now: float) -> float:
        self._refill(now)
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def give_back(self, amount: float) -> None:
        """Correct an earlier reservation (negative: it cost more than reserved)."""
        self.level = min(self.capacity, self.level + amount)

    def drain(self, seconds: float, now: float) -> None:
        """Nothing is available for `seconds` (the provider says so)."""
        self._refill(now)
        self.level = min(self.level, -seconds * self.rate)

    def lower_to(self, per_minute: float) -> None:
        if per_minute < self.per_minute:
            self.per_minute, self.rate = per_minute, per_minute / 60.0
            self.capacity = max(1.0, self.rate * BURST_S)
            self.level = min(self.level, self.capacity)


class RateLimiter:
    """Paces one client's requests under a requests-per-minute and/or tokens-per-minute limit. See module doc."""

    def __init__(self, max_requests_per_minute: float | int | str | None = None,
                 max_tokens_per_minute: float | int | str | None = None, *, burst_s: float = BURST_S,
                 tokens_parameter: str = "MAX_TOKENS_PER_MINUTE") -> None:
        rpm, tpm = _positive(max_requests_per_minute), _positive(max_tokens_per_minute)
        self.tokens_parameter = tokens_parameter  # named in the error when one request exceeds the limit
        self.requests = Bucket(rpm, burst_s) if rpm else None
        self.tokens = Bucket(tpm, burst_s) if tpm else None
        self.blocked_until = 0.0
        self.sent = 0
        self.pauses = 0
        self._window = (time.monotonic(), 0)  # (start, sent at start) of the window the shown rate covers
        self._rate = 0.0

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def describe(self) -> dict[str, Any]:
        return {"max_requests_per_minute": self.requests.per_minute if self.requests else None,
                "max_tokens_per_minute": self.tokens.per_minute if self.tokens else None}

    async def acquire(self, tokens: int) -> int:
        """Wait until one request of about `tokens` tokens may go; returns the reservation to `settle` later.
        A request larger than a whole minute's token limit could never be sent (the provider refuses it too): that
        fails at once, naming the parameter, instead of waiting for ever."""
        if self.tokens is not None and tokens > self.tokens.per_minute:
            raise ParameterError(
                self.tokens_parameter, f"is {self.tokens.per_minute:g}, below the ~{tokens} tokens of one request "
                "(its prompt / 4 + max_tokens), so no request could ever be sent",
                "give the provider's real per-minute token limit for your tier, lower the max_tokens of the step, "
                "or leave it empty for no limit")
        now = time.monotonic()
        delay = max(self.blocked_until - now, 0.0)
        if self.requests is not None:
            delay = max(delay, self.requests.reserve(1, now))
        if self.tokens is not None:
            delay = max(delay, self.tokens.reserve(tokens, now))
        if delay > 0:
            await asyncio.sleep(delay)
            # a pause announced while we slept (a 429 elsewhere) applies to us too
            while (wait := self.blocked_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
        self.sent += 1
        return tokens

    def settle(self, reserved: int, used: int) -> None:
        """The reply's usage is known: give back (or take) the difference from the estimate."""
        if self.tokens is not None and used > 0:
            self.tokens.give_back(reserved - used)

    def pause(self, seconds: float) -> None:
        """Nobody sends for `seconds` (a 429's Retry-After)."""
        now = time.monotonic()
        self.blocked_until = max(self.blocked_until, now + seconds)
        self.pauses += 1
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.drain(seconds, now)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt to a provider's x-ratelimit-* headers (any reply, success or 429). A limit the provider announces
        lowers the configured one, and adds the one that was not configured (e.g. requests when only tokens were)."""
        for name in ("requests", "tokens"):
            bucket: Bucket | None = getattr(self, name)
            limit = _positive_or_zero(headers.get(f"x-ratelimit-limit-{name}"))
            if limit and bucket is None:
                bucket = Bucket(limit)
                setattr(self, name, bucket)
            elif limit and bucket is not None:
                bucket.lower_to(limit)
            if bucket is None:
                continue
            remaining = _positive_or_zero(headers.get(f"x-ratelimit-remaining-{name}"))
            if remaining is None or remaining >= 1:
                continue
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{name}"))
            one_unit = 60.0 / bucket.per_minute * (1 if name == "requests" else DEFAULT_OUTPUT_TOKENS)
            wait = one_unit if reset is None else min(reset, one_unit)
            bucket.drain(wait, time.monotonic())

    # ------------------------------------------------------------------ what the progress bar shows
    def current_rate_per_minute(self) -> float:
        """Requests sent per minute over the last few seconds."""
        now = time.monotonic()
        start, sent = self._window
        if now - start >= 2.0:
            self._rate = (self.sent - sent) / (now - start) * 60.0
            self._window = (now, self.sent)
        return self._rate

    def postfix(self) -> str:
        rate = self.current_rate_per_minute()
        limit = f"/{self.requests.per_minute:.0f}" if self.requests else ""
        text = f"{rate:.0f}{limit} req/min"
        if self.tokens:
            text += f", limit {self.tokens.per_minute:.0f} tok/min"
        return text
