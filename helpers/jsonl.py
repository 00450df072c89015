"""JSON Lines, the one format every stage reads and writes.

Lines end at "\n" only. (`str.splitlines()` also breaks at U+2028, U+2029 and U+0085, which are legal inside JSON
strings, and would cut valid records in two; the writer also escapes them, so other tools' readers are safe too.)

Two reading modes, because the files differ: a user's or the kit's own data file loads completely or fails with
the file and the line (a UTF-8 BOM is accepted); only the kit's own progress files, appended to during a run, may
end in a last line torn by a kill, which a re-run skips (and says so, with a warning) rather than fail on.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .params import ParameterError


class JSONLError(ValueError):
    """A JSONL file that does not load completely; the message names the file and the line."""


def read_jsonl(path: str | Path, tolerate_torn: bool = False) -> list[dict[str, Any]]:
    """All records, or JSONLError naming the file and the line. `tolerate_torn` is for the kit's own progress
    files only: a missing file is empty and an undecodable LAST line (a write cut by a kill) is skipped, with a
    warning; a bad line anywhere else is still an error."""
    path = Path(path)
    if tolerate_torn and not path.exists():
        return []
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise JSONLError(f"{path}, line {line}: not UTF-8 text (save the file as UTF-8)") from None
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if tolerate_torn and i == last:
                warnings.warn(f"{path}: skipped its last line {i + 1}, cut off by an interrupted write; "
                              "that entry is made again", stacklevel=2)
                continue
            raise JSONLError(f"{path}, line {i + 1}: not a JSON record ({exc.msg}, column {exc.colno}); "
                             "fix or remove that line") from None
    return records


def _line(record: dict[str, Any]) -> str:
    """One JSON line; the line separators JSON allows unescaped are escaped, so any line splitter reads it back."""
    text = json.dumps(record, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085") + "\n"


def write_atomic(path: str | Path, text: str) -> Path:
    """Readers never see a half-written file, and a crash leaves the old one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """One record per line, written atomically."""
    return write_atomic(path, "".join(_line(r) for r in records))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record and force it to disk: a killed run keeps every record finished before the kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(_line(record))
        f.flush()
        os.fsync(f.fileno())


class JsonlAppender:
    """Appends records to one JSONL file for the length of a run, without stalling the caller on the disk.

    Each record is written and flushed at once, so a killed process keeps every record appended before the kill
    (the operating system holds it). Forcing it onto the disk (fsync, which can take tens of milliseconds on a busy
    machine) happens in a background thread that covers every line written since its last pass, so an event loop
    appending a record per finished example never waits for the disk. `close()` (or leaving the `with` block)
    syncs the last lines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._dirty = threading.Event()
        self._closing = False
        self._syncer = threading.Thread(target=self._sync_until_closed, name=f"fsync {self.path.name}", daemon=True)
        self._syncer.start()

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        self._dirty.set()

    def _sync_until_closed(self) -> None:
        while True:
            self._dirty.wait()
            if self._closing:
                return
            self._dirty.clear()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file.closed:
            return
        self._closing = True
        self._dirty.set()
        self._syncer.join()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_json_object(path: str | Path, parameter: str, kind: type = dict, what: str = "a JSON object") -> Any:
    """A JSON file the kit or the user wrote, as `kind` (dict or list): a missing, undecodable or torn file, or
    one of another shape, is a ParameterError naming the file and the line, not a traceback from the reader."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ParameterError(parameter, f"{path} does not exist", "give the path of the file") from None
    except UnicodeDecodeError:
        raise ParameterError(parameter, f"{path} is not UTF-8 text", f"give {what} saved as UTF-8") from None
    except OSError as exc:
        raise ParameterError(parameter, f"cannot read {path} ({exc.strerror or exc})", "give a readable file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(parameter, f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})",
                             f"give {what} (the file may be torn: write it again)") from None
    if not isinstance(data, kind):
        raise ParameterError(parameter, f"{path} holds a JSON {type(data).__name__}, not {what}", f"give {what}")
    return data
