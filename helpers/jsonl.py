"""JSON Lines, the one format every stage reads and writes.

Two reading modes, because the files differ: a user's or the kit's own data file must be valid to the last line
(a broken line is an error worth seeing), while a progress file appended to during a run may end in a line torn
by a crash, which a re-run should skip rather than fail on.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path, tolerate_torn: bool = False) -> list[dict[str, Any]]:
    """All records. With `tolerate_torn`, a missing file is empty and undecodable lines are skipped."""
    path = Path(path)
    if tolerate_torn and not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if not tolerate_torn:
                raise
    return records


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
    return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record and force it to disk: a killed run keeps every record finished before the kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
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
