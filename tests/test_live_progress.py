"""Progress that shows life: while an in-process model generates one long batch, the progress lines keep moving
(tokens generated so far and their rate), in plain mode as the pipeline driver streams them, so a slow model never
looks like a hung one."""
from __future__ import annotations

import re
import sys
import time

import pytest

from helpers import progress
from helpers.llm.client import ChatClient
from helpers.llm.local_backend import LocalBackend
from helpers.llm.meter import StepCounter, TokenMeter
from helpers.progress import PLAIN_ENV, LineRelay
from sft_tiny import build_model_folder

TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
INTERVAL_S = 0.3  # the plain-mode interval for these tests (5 s in real runs)
STEP_S = 0.1  # seconds each forward pass of the slowed model takes: one batch of 40 tokens, 4 s or more
GAP_S = 2.0  # the longest silence allowed (lenient for a busy machine; silence without the meter is the whole batch)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_meter_counts_rows_until_they_stop_and_says_what_it_is_doing():
    import torch

    clock = _Clock()
    meter = TokenMeter(clock)
    assert meter.note() == ""
    with meter.counting({0}) as streamer:
        assert isinstance(streamer, StepCounter)
        streamer.put(torch.ones((2, 5), dtype=torch.long))  # the prompts
        clock.now = 3.0
        assert meter.note() == "reading 2 prompts, 3 s"
        streamer.put(torch.tensor([7, 8]))
        streamer.put(torch.tensor([0, 9]))  # row 0 stops: its stop token counts
        streamer.put(torch.tensor([0, 0]))  # row 0 is padding now; row 1 stops
        clock.now = 4.0
        assert meter.tokens == 5 and meter.note() == "5 tokens, 1.2 tok/s"
    clock.now = 10.0  # idle time after the batch does not lower the rate
    assert meter.note() == "5 tokens, 1.2 tok/s"


def test_meter_knows_a_failed_generate_ended():
    meter = TokenMeter()
    with pytest.raises(RuntimeError):
        with meter.counting({0}) as streamer:
            streamer.put(__import__("torch").ones((1, 3)))
            raise RuntimeError("out of memory")
    assert "reading" not in meter.note()


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """A tiny checkpoint whose every forward pass takes STEP_S: one batch of 40 tokens runs for seconds."""
    folder = build_model_folder(tmp_path_factory.mktemp("slow") / "m")
    backend = LocalBackend(str(folder), chat_template=TEMPLATE, reuse_prefixes=False)
    model = backend._loaded().model
    forward = model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(STEP_S)
        return forward(*args, **kwargs)

    model.forward = slow_forward
    yield backend, model, backend._loaded().tokenizer
    model.forward = forward


def _plain_lines(monkeypatch) -> list[tuple[float, str]]:
    """Plain progress on stderr, relayed line by line as the pipeline driver does, each with its arrival time."""
    monkeypatch.setenv(PLAIN_ENV, "1")
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", INTERVAL_S)
    lines: list[tuple[float, str]] = []
    monkeypatch.setattr(sys, "stderr", LineRelay("", lambda line: lines.append((time.monotonic(), line))))
    return lines


def _largest_gap(lines: list[tuple[float, str]], start: float, end: float) -> float:
    times = [start, *(t for t, _ in lines), end]
    return max(b - a for a, b in zip(times, times[1:]))


def _token_counts(lines: list[tuple[float, str]]) -> list[int]:
    return [int(m.group(1).replace(",", "")) for _, line in lines if (m := re.search(r"([\d,]+) tokens", line))]


def test_a_slow_in_process_model_is_never_silent_while_it_generates(slow_model, monkeypatch):
    backend, _, _ = slow_model
    client = ChatClient(backend, use_cache=False, max_concurrency=2)
    lines = _plain_lines(monkeypatch)
    start = time.monotonic()
    replies = client.chat_many([[{"role": "user", "content": "Name a colour."}],
                                [{"role": "user", "content": "Say hello to Ada."}]],
                               desc="slow answers", max_tokens=40)
    end = time.monotonic()
    assert all(r.ok for r in replies) and end - start > 2 * GAP_S  # one batch that takes a while
    assert _largest_gap(lines, start, end) < GAP_S, [line for _, line in lines]
    counts = _token_counts(lines)
    assert len(counts) >= 3 and counts == sorted(counts) and counts[-1] > counts[0]
    assert all(line.startswith("slow answers") for _, line in lines), [line for _, line in lines]


def test_stage3_answers_show_tokens_while_a_batch_runs(slow_model, monkeypatch):
    from helpers.sft.answers import generate_answers

    _, model, tokenizer = slow_model
    lines = _plain_lines(monkeypatch)
    start = time.monotonic()
    answers = generate_answers(model, tokenizer, ["Name a colour.", "Give one fruit."], max_new_tokens=40,
                               desc="held-out answers")
    end = time.monotonic()
    assert len(answers) == 2 and end - start > 2 * GAP_S
    assert _largest_gap(lines, start, end) < GAP_S, [line for _, line in lines]
    assert len(_token_counts(lines)) >= 3
