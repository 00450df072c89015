"""Tokens an in-process model is generating, counted as they are made.

One batched `generate` of a small model on a loaded CPU can run for minutes, and a progress bar that moves only
when a request finishes then looks hung. transformers' `generate` hands every decoding step's new tokens to a
streamer (its `streamer=` argument); `TokenMeter.counting` gives `generate` one that counts them, and progress
lines show the count and the rate (`TokenMeter.note`), so a slow model and a hung one no longer look the same.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any


class TokenMeter:
    """Tokens generated so far and the seconds spent generating them, for one model of one stage; written by the
    thread that generates, read by the one that draws the progress bar."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.tokens = 0
        self._busy_s = 0.0  # seconds inside finished generate calls
        self._since: float | None = None  # start of the generate now running
        self._rows = 0
        self._batch_tokens = 0

    def begin(self, rows: int) -> None:
        with self._lock:
            self._since, self._rows, self._batch_tokens = self._clock(), rows, 0

    def add(self, tokens: int) -> None:
        with self._lock:
            self.tokens += tokens
            self._batch_tokens += tokens

    def end(self) -> None:
        """The generate call finished (or failed); calling it twice is harmless."""
        with self._lock:
            if self._since is not None:
                self._busy_s += self._clock() - self._since
            self._since = None

    def note(self) -> str:
        """What a progress line shows: '1,234 tokens, 24.3 tok/s' (the rate over the time spent generating, the
        current batch included, so it moves while a batch runs), or 'reading 8 prompts, 12 s' while a batch has
        not produced its first token yet; empty before anything was generated."""
        with self._lock:
            now = self._clock()
            running = now - self._since if self._since is not None else 0.0
            if self._since is not None and self._batch_tokens == 0:
                head = f"{self.tokens:,} tokens · " if self.tokens else ""
                return f"{head}reading {self._rows} prompts, {running:.0f} s"
            busy = self._busy_s + running
            if not self.tokens:
                return ""
            return f"{self.tokens:,} tokens, {self.tokens / busy:.1f} tok/s" if busy > 0 else f"{self.tokens:,} tokens"

    @contextmanager
    def counting(self, stop_ids: Collection[int]) -> Iterator["StepCounter"]:
        """A streamer for one `generate` call; the meter knows the call ended even when it raised."""
        try:
            yield StepCounter(self, set(stop_ids))
        finally:
            self.end()


class StepCounter:
    """A transformers streamer (`put` per step, `end`) that counts the tokens of rows still generating. The first
    `put` is the prompt batch; a row's stop token counts (as an OpenAI-compatible server counts completion tokens),
    the padding a finished row gets afterwards does not."""

    def __init__(self, meter: TokenMeter, stop_ids: set[int]) -> None:
        self.meter, self.stop_ids = meter, stop_ids
        self.live: list[bool] | None = None

    def put(self, value: Any) -> None:
        if self.live is None:  # the prompts, (rows, length)
            self.live = [True] * int(value.shape[0])
            self.meter.begin(len(self.live))
            return
        new = 0
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.live[row]:
                new += 1
                self.live[row] = token not in self.stop_ids
        self.meter.add(new)

    def end(self) -> None:
        self.meter.end()
