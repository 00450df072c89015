"""Where a stage's time goes: named phases (model loads, generation, training) timed in the process that runs the
stage, written into the manifest when the stage ends and printed by the pipeline driver when the run ends.

A stage runs in its own kernel, so the phases live in this process: `Run.end_stage` stores them as the stage's
`timing` entry and clears them, so work done before `begin_stage` (a model materialised while a notebook previews
its data) counts for the stage, and a second stage in one process starts afresh. Each phase keeps its total seconds, how often it ran and
any counts it was given (tokens, rows, decoding or training steps); `tokens_per_s` is derived where tokens were
counted. Decoding steps (the longest reply of each batch) are the count a busy machine does not change: a step
costs about the same for 1 or 16 rows on a CPU, so fewer steps is less time whatever the load. Phases may
overlap (a model load inside a training set-up, say): the time covered by any phase is kept apart, as the union of
their intervals, so that the driver can say how much of a stage no phase accounts for.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
_TOTALS: dict[str, dict[str, float]] = {}
_INTERVALS: list[tuple[float, float]] = []
_FIRST_NS: list[int] = []  # wall-clock start of the earliest phase (time.time_ns), to set against other clocks


def reset() -> None:
    """Forget every phase (a new stage begins in this process)."""
    with _LOCK:
        _TOTALS.clear()
        _INTERVALS.clear()
        _FIRST_NS.clear()


def add(name: str, seconds: float, started: float | None = None, **counts: float) -> None:
    """Count one run of phase `name` that took `seconds` (begun at `started`, `time.perf_counter()`), with counts
    such as tokens=..., rows=... added to the phase's totals."""
    with _LOCK:
        entry = _TOTALS.setdefault(name, {"seconds": 0.0, "count": 0})
        entry["seconds"] += seconds
        entry["count"] += 1
        for key, value in counts.items():
            entry[key] = entry.get(key, 0) + value
        now = time.perf_counter()
        begin = started if started is not None else now - seconds
        _INTERVALS.append((begin, begin + seconds))
        begin_ns = time.time_ns() - int((now - begin) * 1e9)
        _FIRST_NS[:] = [min([begin_ns, *_FIRST_NS])]


@contextmanager
def timed(name: str, **counts: float) -> Iterator[dict[str, float]]:
    """Time the block as one run of phase `name`; the block may add counts to the dict it is given. A block that
    raised is counted too: its time was spent."""
    extra: dict[str, float] = dict(counts)
    start = time.perf_counter()
    try:
        yield extra
    finally:
        add(name, time.perf_counter() - start, start, **extra)


def _covered(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for begin, finish in sorted(intervals):
        if finish <= end:
            continue
        total += finish - max(begin, end)
        end = finish
    return total


def snapshot() -> dict[str, Any]:
    """The phases so far, for the manifest: {"phases": {name: {seconds, count, ...}}, "covered_s": seconds in any
    phase, "first_ns": when the first began (None without phases)}; seconds rounded to 0.1 s, `tokens_per_s` where
    tokens were counted."""
    with _LOCK:
        phases = {name: dict(entry) for name, entry in _TOTALS.items()}
        covered = _covered(list(_INTERVALS))
        first_ns = _FIRST_NS[0] if _FIRST_NS else None
    for entry in phases.values():
        if entry.get("tokens") and entry["seconds"] > 0:
            entry["tokens_per_s"] = round(entry["tokens"] / entry["seconds"], 1)
        entry["seconds"] = round(entry["seconds"], 1)
    return {"phases": phases, "covered_s": round(covered, 1), "first_ns": first_ns}


def summary_lines(stage: str, total_s: float, info: Mapping[str, Any]) -> list[str]:
    """What the driver prints for one stage: its wall time, the start-up before the stage began (kernel, imports,
    parameters), each phase, each model's calls, and the time no phase accounts for."""
    lines = [f"{stage}: {total_s:.1f} s"]
    startup = info.get("startup_s")
    if startup is not None:
        lines.append(f"  {'start-up (kernel, imports)':<34} {startup:7.1f} s")
    timing = info.get("timing") or {}
    for name, entry in sorted((timing.get("phases") or {}).items(), key=lambda kv: -kv[1].get("seconds", 0)):
        details = [f"x{entry['count']}"] if entry.get("count", 1) != 1 else []
        details += [f"{int(entry[k]):,} {k.replace('_', ' ')}"
                    for k in ("tokens", "prompt_tokens", "rows", "decode_steps", "steps") if entry.get(k)]
        if entry.get("tokens_per_s"):
            details.append(f"{entry['tokens_per_s']} tok/s")
        lines.append(f"  {name:<34} {entry.get('seconds', 0):7.1f} s  {', '.join(details)}".rstrip())
    for role, usage in sorted((info.get("accounting") or {}).items()):
        if isinstance(usage, dict) and usage.get("calls") is not None:
            lines.append(f"  {role + ' calls':<34} {usage['calls']:>7}    {usage.get('cache_hits', 0)} from the "
                         f"cache, {usage.get('output_tokens', 0):,} tokens out")
    if timing and startup is not None:
        rest = total_s - startup - timing.get("covered_s", 0.0)
        lines.append(f"  {'other (cells, plots, files)':<34} {max(rest, 0.0):7.1f} s")
    return lines
