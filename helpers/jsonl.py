"""JSON Lines, the one format every stage reads and writes.

Lines end at "\n" only. (`str.splitlines()` also breaks at U+2028, U+2029 and U+0085, which are legal inside JSON
strings, and would cut valid records in two; the writer also escapes them, so other tools' readers are safe too.)

Two reading modes, because the files differ: a user's or the kit's own data file loads completely or fails with
the file and the line (a UTF-8 BOM is accepted); only the kit's own progress files, appended to during a run, may
end in a last line torn by a kill, which a re-run skips (and says so, with a warning) rather than fail on.

Writers never leave a torn line or a half-written file behind: before the first append a torn last line is cut
(so the next record does not glue onto it), a failed append (a full disk) is cut back to the last whole record,
and whole files are written aside and swapped in. A full disk raises `DiskFull`, naming the folder.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .diskspace import disk_full, is_disk_full
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str | Path, text: str) -> Path:
    """Readers never see a half-written file, and a crash or a full disk leaves the old one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(path.parent, len(data), f"writing {path.name}") from None
        raise
    return path


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """One record per line, written atomically."""
    return write_atomic(path, "".join(_line(r) for r in records))


def repair_torn_tail(path: str | Path) -> None:
    """Before appending: a last line without its newline (a write cut by a kill) is cut off, or, when it is a whole
    record after all, given its newline; otherwise the next record would be glued onto it and the file would no
    longer load."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        start, block = size, 1 << 16
        while start > 0:  # back to the last newline, a block at a time (a line may hold a long transcript)
            start = max(0, start - block)
            f.seek(start)
            newline = f.read(size - start).rfind(b"\n")
            if newline >= 0:
                start += newline + 1
                break
        f.seek(start)
        tail = f.read()
        try:
            whole = isinstance(json.loads(tail.decode("utf-8")), dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            whole = False
        if whole:
            f.seek(size)
            f.write(b"\n")
            return
        f.truncate(start)  # the reader already said it skips this line (read_jsonl with tolerate_torn)


def _append(fd: int, data: bytes, path: Path) -> None:
    """Append `data` whole or not at all: a failed write (a full disk) is cut back to where it started."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        _write_all(fd, data)
    except OSError as exc:
        os.ftruncate(fd, start)
        if is_disk_full(exc):
            raise disk_full(path.parent, len(data), f"appending to {path.name}") from None
        raise


def _open_for_append(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_torn_tail(path)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record and force it to disk: a killed run keeps every record finished before the kill."""
    path = Path(path)
    fd = _open_for_append(path)
    try:
        _append(fd, _line(record).encode("utf-8"), path)
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonlAppender:
    """Appends records to one JSONL file for the length of a run, without stalling the caller on the disk.

    Each record is written whole at once (or, on a full disk, not at all), so a killed process keeps every record
    appended before the kill (the operating system holds it). Forcing it onto the disk (fsync, which can take tens of milliseconds on a busy
    machine) happens in a background thread that covers every line written since its last pass, so an event loop
    appending a record per finished example never waits for the disk. `close()` (or leaving the `with` block)
    syncs the last lines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = _open_for_append(self.path)
        self._closed = False
        self._dirty = threading.Event()
        self._closing = False
        self._syncer = threading.Thread(target=self._sync_until_closed, name=f"fsync {self.path.name}", daemon=True)
        self._syncer.start()

    def append(self, record: dict[str, Any]) -> None:
        _append(self._fd, _line(record).encode("utf-8"), self.path)  # unbuffered: the OS holds it at once
        self._dirty.set()

    def _sync_until_closed(self) -> None:
        while True:
            self._dirty.wait()
            if self._closing:
                return
            self._dirty.clear()
            os.fsync(self._fd)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._dirty.set()
        self._syncer.join()
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)

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
