"""Progress a person can follow while the pipeline driver runs a notebook.

Inside a notebook opened in JupyterLab, progress bars are the usual tqdm bars. When the driver executes a notebook,
the kernel's output is invisible until the notebook ends, so the driver sets `ISM_PLAIN_PROGRESS=1` for the
kernels it starts: bars then print a plain-text line every few seconds (and a final one) on stderr, papermill hands
each stream output to a `LineRelay`, and the relay prints it on the terminal with the notebook's name in front.
After each notebook the driver prints the stage's recorded numbers (`stage_summary_lines`).
"""
from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tqdm import std as tqdm_std

PLAIN_ENV = "ISM_PLAIN_PROGRESS"
PLAIN_INTERVAL_S = 5.0  # seconds between two lines of one bar in plain mode
# A plain line is as long as its text: a bar of fixed width, so a long description (calls waiting, tokens generated)
# never cuts the count off, up to PLAIN_WIDTH characters.
PLAIN_FORMAT = "{l_bar}{bar:20}{r_bar}"
PLAIN_WIDTH = 200
INTERACTIVE_REFRESH_S = 1.0  # seconds between two redraws of a live description in a notebook or terminal

# The kernel environment of plain mode: our bars print lines; other libraries' bars redraw at most every few
# seconds, the datasets library's per-map bars (tokenising, filtering: seconds each) stay quiet, and tqdm's warning
# that the kernel has no widgets (irrelevant when nobody watches the notebook) is not printed.
_PLAIN_SETTINGS = ((PLAIN_ENV, "1"), ("TQDM_MININTERVAL", str(PLAIN_INTERVAL_S)),
                   ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"))
_NO_WIDGET_WARNING = "ignore:IProgress not found"

_env_lock = threading.Lock()
_env_users = 0
_env_saved: dict[str, str | None] = {}


def say(line: str) -> None:
    """Print a progress line now, also when stdout is a pipe (`make demo | tee log`) rather than a terminal."""
    print(line, flush=True)


def plain_progress() -> bool:
    """True when progress must be plain-text lines (set by the pipeline driver for the kernels it starts)."""
    return os.environ.get(PLAIN_ENV) == "1"


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """A tqdm bar: the notebook/terminal bar as usual, or in plain mode a text bar that prints a line at most every
    PLAIN_INTERVAL_S seconds on stderr and always its final state (it is kept, not cleared, at the end)."""
    if not plain_progress():
        return _interactive_bar_class()(iterable, **kwargs)
    kwargs.update(leave=True, file=sys.stderr, ascii=True, ncols=PLAIN_WIDTH, dynamic_ncols=False,
                  bar_format=PLAIN_FORMAT)
    kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0) or 0), PLAIN_INTERVAL_S)
    return tqdm_std.tqdm(iterable, **kwargs)


def _interactive_bar_class() -> type:
    """The widget bar inside a Jupyter kernel that has ipywidgets, else the text bar (tqdm.auto would warn about the
    missing widgets in every notebook). A process that has not imported IPython runs no kernel: it gets the text bar
    without paying IPython's import (a tenth of a second, more on a first run) when its first bar opens."""
    if "IPython" not in sys.modules:
        return tqdm_std.tqdm
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and "IPKernelApp" in shell.config:
            import ipywidgets  # noqa: F401  (optional: JupyterLab shows text bars without it)
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm
    except ImportError:
        pass
    return tqdm_std.tqdm


def refresh_interval_s() -> float:
    """How often a bar that shows live work (tokens generated, calls waiting) is redrawn: every second in a notebook
    or terminal, every PLAIN_INTERVAL_S in plain mode, where each redraw is a printed line."""
    return PLAIN_INTERVAL_S if plain_progress() else INTERACTIVE_REFRESH_S


@contextmanager
def live_description(bar: Any, describe: Callable[[], str]) -> Iterator[None]:
    """While the block runs (e.g. batched generation that takes minutes per step of the bar), a thread redraws the
    bar's description with `describe()` every `refresh_interval_s()`, so the line shows life between two updates of
    its count. A line whose text did not change is dropped by `LineRelay`, so an idle bar stays quiet."""
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(refresh_interval_s()):
            bar.set_description_str(describe(), refresh=True)

    thread = threading.Thread(target=redraw, name="progress-redraw", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.set_description_str(describe(), refresh=False)


@contextmanager
def plain_progress_env() -> Iterator[None]:
    """Within this block, kernels started from this process print plain progress lines (thread-safe: sweeps start
    several notebooks at once)."""
    global _env_users
    with _env_lock:
        if _env_users == 0:
            _env_saved.clear()
            warnings = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), _NO_WIDGET_WARNING]))
            for name, value in (*_PLAIN_SETTINGS, ("PYTHONWARNINGS", warnings)):
                _env_saved[name] = os.environ.get(name)
                os.environ[name] = value
        _env_users += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_users -= 1
            if _env_users == 0:
                for name, value in _env_saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value


class LineRelay:
    """A write-only text stream (papermill's `stdout_file` / `stderr_file`) that passes each complete line,
    prefixed, to `emit`. Carriage returns end a line too (that is how a text bar redraws itself); empty lines and a
    line that repeats the previous one (a bar redrawn with only its timings changed) are dropped."""

    def __init__(self, prefix: str, emit: Callable[[str], None]) -> None:
        self.prefix, self.emit = prefix, emit
        self._buffer = ""
        self._last = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = re.split(r"\r\n|\r|\n", self._buffer)
        for line in lines:
            self._send(line)
        return len(text)

    def _send(self, line: str) -> None:
        line = line.rstrip()
        key = re.sub(r"\[[^\]]*\]$", "", line).rstrip()  # a bar's line without its [elapsed<left, rate]
        if line.strip() and key != self._last:
            self._last = key
            self.emit(f"{self.prefix}{line}")

    def flush(self) -> None:
        """Lines are sent as soon as they are complete; a partial line waits for its end (or close())."""

    def close(self) -> None:
        if self._buffer:
            self._send(self._buffer)
            self._buffer = ""


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return None


def stage_summary_lines(results: Mapping[str, Any], stages: Iterable[str], width: int = 110) -> list[str]:
    """The numbers each stage recorded (results.json), as `name=value` pairs wrapped into short lines."""
    lines = []
    for stage in stages:
        named = results.get(stage) or {}
        pairs = [f"{name}={text}" for name, value in named.items() if (text := _number(value)) is not None]
        if not pairs:
            continue
        current = f"{stage}:"
        for pair in pairs:
            if len(current) + len(pair) + 1 > width:
                lines.append(current)
                current = " " * (len(stage) + 1)
            current += f" {pair}"
        lines.append(current)
    return lines
