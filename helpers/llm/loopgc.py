"""Keep the garbage collector's full passes short while an event loop has many calls in flight.

A full collection walks every object the process holds: after the kit's imports (aiohttp, numpy, the `datasets`
import stage 2 starts in the background) that is over 200,000 objects, 50-200 ms during which the event loop
answers nothing, so every request in flight is held up with it. Python starts one whenever the objects that survived
since the last one exceed a quarter of those it kept, which a stage's growing results and a background import reach
several times in a run (4-5 full passes in stage 2's benchmark). `frozen_heap()` moves the objects that exist when a
run of calls starts into the permanent generation (`gc.freeze`) for its duration, so a full pass walks only what the
run created since, and hands them back (`gc.unfreeze`) when the last run in the process ends. Nothing leaks:
frozen objects that became garbage meanwhile are collected by the first full pass after.

Young objects are collected less often meanwhile too: a pass over the youngest generation runs every
`YOUNG_THRESHOLD` allocations instead of Python's 700, which an event loop with 64 calls in flight reaches every few
calls (600 passes and 50 second-generation ones in stage 2's benchmark, each a pause for every call waiting on the
loop; 37 and 4 with this threshold, for about the same total work).

A process whose own code froze objects or turned the collector off is left as it is.
"""
from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000

_lock = threading.Lock()
_depth = 0  # runs of calls under way (several event loops in threads, or nested runs)
_owned = False  # this module froze the heap and will unfreeze it
_thresholds: tuple[int, int, int] = (0, 0, 0)  # the collector's thresholds before, restored after


@contextmanager
def frozen_heap() -> Iterator[None]:
    global _depth, _owned, _thresholds
    with _lock:
        if _depth == 0:
            _owned = gc.isenabled() and gc.get_freeze_count() == 0
            if _owned:
                gc.freeze()
                _thresholds = gc.get_threshold()
                gc.set_threshold(max(_thresholds[0], YOUNG_THRESHOLD), *_thresholds[1:])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _owned:
                gc.set_threshold(*_thresholds)
                gc.unfreeze()
                _owned = False
