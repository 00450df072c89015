"""Proactive rate limits: pace requests below a provider's limits instead of learning them from 429s.

A provider limits requests and tokens per minute; a client with many conversations in flight reaches those limits
at once and, if it only reacts (back off after a 429), most of its requests are refused. Providers count what
arrives within a rolling window, often shorter than the minute the limit is stated in (OpenAI "quantizes" 60,000
requests/minute as 1,000 per second), so a burst that fits in the minute can still be refused within its second.

The `RateLimiter` therefore spaces requests evenly, never in bursts, at `PACE_MARGIN` (97 %) of each configured
rate: one request per 60 / (0.97 RPM) seconds, and a request of n tokens n / (0.97 TPM / 60) seconds before the
next. There is no saved-up allowance, at the start or after an idle spell, so within ANY window of W seconds the
kit sends at most 0.97 x RPM / 60 x (W + `SLACK_S`) requests (+1): 0.98 of the limit within a second. The 2 % left
over absorbs the jitter between when a request is sent and when the provider stamps its arrival (the event loop,
the network, a busy server): about 20 ms within a one-second window. A wake-up late by up to `SLACK_S` does not
shift the schedule (the next request keeps its time, so the rate holds on a busy machine); a longer stall is not
made up with a burst.

Requests wait their turn in order (first come, first served; one `asyncio.sleep` per request, no polling). Tokens
are counted as OpenAI documents it: "your rate limit is calculated as the maximum of max_tokens and the estimated
number of tokens based on the character count of your request", so a request is charged before it goes with its
prompt characters / 4 + `max_tokens` (what it may use, not what it will), and is charged more afterwards only when
the reply reports more. With requests small next to a second's share (TPM / 60), the token pace also holds within
any second; a request larger than that is fine for a provider counting per minute, which is the only way it can be
served at all.

It also adapts to what the provider says in its answers: OpenAI-style `x-ratelimit-limit-*` (per minute) lower
the rates when the tier is lower than configured, `x-ratelimit-remaining-*` at zero hold the next request until
`x-ratelimit-reset-*` (durations like "6m0s" or "20ms") says one unit is back, and a `Retry-After` pauses every
request, not only the refused one.
"""
from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from ..params import ParameterError

CHARS_PER_TOKEN = 4.0
# Output tokens assumed when a request sets no max_tokens (charged more when the reply reports more).
DEFAULT_OUTPUT_TOKENS = 256
# The share of each configured limit the kit paces at: the rest absorbs the jitter between sending a request and its
# arrival at the provider (see the module doc).
PACE_MARGIN = 0.97
# A wake-up late by up to this much keeps the schedule (the rate holds on a busy event loop); later, the schedule
# starts again from now, so a stall is never made up with a burst.
SLACK_S = 0.01

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


class Pacer:
    """One limit's schedule: requests go one after another, each `cost / rate` seconds after the one before (a
    virtual schedule with no burst allowance), at `PACE_MARGIN` of the limit."""

    def __init__(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0 * PACE_MARGIN  # units per second
        self.next_at = float("-inf")  # when the next request may go

    def take(self, amount: float, now: float) -> None:
        """A request of `amount` goes now (not before `next_at`)."""
        self.next_at = max(self.next_at, now - SLACK_S) + amount / self.rate

    def add(self, amount: float) -> None:
        """A request cost more than it was charged: the next one waits that much longer."""
        if amount > 0:
            self.next_at += amount / self.rate

    def hold(self, seconds: float, now: float) -> None:
        """Nothing goes for `seconds` (the provider says so)."""
        self.next_at = max(self.next_at, now + seconds)

    def lower_to(self, per_minute: float) -> None:
        if per_minute < self.per_minute:
            self.per_minute, self.rate = per_minute, per_minute / 60.0 * PACE_MARGIN


class RateLimiter:
    """Paces one client's requests under a requests-per-minute and/or tokens-per-minute limit. See module doc."""

    def __init__(self, max_requests_per_minute: float | int | str | None = None,
                 max_tokens_per_minute: float | int | str | None = None, *,
                 tokens_parameter: str = "MAX_TOKENS_PER_MINUTE") -> None:
        rpm, tpm = _positive(max_requests_per_minute), _positive(max_tokens_per_minute)
        self.tokens_parameter = tokens_parameter  # named in the error when one request exceeds the limit
        self.requests = Pacer(rpm) if rpm else None
        self.tokens = Pacer(tpm) if tpm else None
        self.blocked_until = 0.0
        self.sent = 0
        self.pauses = 0
        self._window = (time.monotonic(), 0)  # (start, sent at start) of the window the shown rate covers
        self._rate = 0.0
        # Requests take their turn one at a time, in order of arrival: one lock per event loop (a lock belongs to
        # the loop it was first used on; the blocking helpers run each batch of calls on a loop of its own).
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def describe(self) -> dict[str, Any]:
        return {"max_requests_per_minute": self.requests.per_minute if self.requests else None,
                "max_tokens_per_minute": self.tokens.per_minute if self.tokens else None}

    def _turn(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._turns.get(loop)
        if lock is None:
            lock = self._turns[loop] = asyncio.Lock()
        return lock

    def _ready_at(self) -> float:
        return max([self.blocked_until, *(p.next_at for p in (self.requests, self.tokens) if p is not None)])

    async def acquire(self, tokens: int) -> int:
        """Wait until one request of about `tokens` tokens may go; returns the charge to `settle` later.
        A request larger than a whole minute's token limit could never be sent (the provider refuses it too): that
        fails at once, naming the parameter, instead of waiting for ever."""
        if self.tokens is not None and tokens > self.tokens.per_minute:
            raise ParameterError(
                self.tokens_parameter, f"is {self.tokens.per_minute:g}, below the ~{tokens} tokens of one request "
                "(its prompt / 4 + max_tokens), so no request could ever be sent",
                "give the provider's real per-minute token limit for your tier, lower the max_tokens of the step, "
                "or leave it empty for no limit")
        async with self._turn():
            # the schedule may move while we sleep (a 429's Retry-After, a header saying nothing is left)
            while (wait := self._ready_at() - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            if self.requests is not None:
                self.requests.take(1, now)
            if self.tokens is not None:
                self.tokens.take(tokens, now)
            self.sent += 1
        return tokens

    def settle(self, charged: int, used: int) -> None:
        """The reply's usage is known: a request that used more than it was charged is charged the rest. One that
        used less gets nothing back: the provider counted its max_tokens on arrival."""
        if self.tokens is not None and used > charged:
            self.tokens.add(used - charged)

    def pause(self, seconds: float) -> None:
        """Nobody sends for `seconds` (a 429's Retry-After)."""
        now = time.monotonic()
        self.blocked_until = max(self.blocked_until, now + seconds)
        self.pauses += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt to a provider's x-ratelimit-* headers (any reply, success or 429). A limit the provider announces
        lowers the configured one, and adds the one that was not configured (e.g. requests when only tokens were)."""
        for name in ("requests", "tokens"):
            pacer: Pacer | None = getattr(self, name)
            limit = _positive_or_zero(headers.get(f"x-ratelimit-limit-{name}"))
            if limit and pacer is None:
                pacer = Pacer(limit)
                setattr(self, name, pacer)
            elif limit and pacer is not None:
                pacer.lower_to(limit)
            if pacer is None:
                continue
            remaining = _positive_or_zero(headers.get(f"x-ratelimit-remaining-{name}"))
            if remaining is None or remaining >= 1:
                continue
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{name}"))
            one_unit = 60.0 / pacer.per_minute * (1 if name == "requests" else DEFAULT_OUTPUT_TOKENS)
            pacer.hold(one_unit if reset is None else min(reset, one_unit), time.monotonic())

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
