"""A persistent, content-addressed cache of successful LLM calls.

Why SQLite: one file, atomic commits after every call (a crash loses at most the calls in flight), and safe when
two processes (two notebooks, a sweep's parallel cells) write to it at once thanks to WAL mode and a busy timeout.
Only successes are stored; a failure is always asked again next time.

A commit appends the answer to the write-ahead log, which is what keeps it through a kill. Copying the log into the
database (a checkpoint, which syncs both files to disk) is left to a thread of its own (`_Checkpointer`) every
`CHECKPOINT_EVERY` answers, instead of SQLite's default of running it inside the commit that crosses 1,000 pages:
inside `put`, on the event loop that has many calls in flight (14-17 such stalls of up to 18 ms, 0.1 s in all, per
3,000 answers in stage 2's benchmark).
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..diskspace import disk_full
from ..params import ParameterError, make_writable_folder
from .types import ChatResult, Message

DEFAULT_CACHE_ENV = "ISM_CACHE_DIR"
CHECKPOINT_EVERY = 256  # answers stored between two checkpoints (about SQLite's default of 1,000 log pages)
WAL_RESTART_BYTES = 64 << 20  # a log longer than this is started afresh (see _Checkpointer)


def default_cache_dir() -> Path:
    """Shared by all run folders so a sweep re-pays nothing; override with $ISM_CACHE_DIR."""
    env = os.environ.get(DEFAULT_CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "instruct-skillmix"


def make_cache_folder(path: Path) -> Path:
    """Create a folder of the kit's cache, or fail naming the variable that moves it."""
    return make_writable_folder(path, DEFAULT_CACHE_ENV, f"set {DEFAULT_CACHE_ENV} to a folder you can write")


def cache_key(backend: str, model: str, messages: list[Message], sampling: dict[str, Any], salt: str = "",
              endpoint: str = "") -> str:
    """Content address of one call. `endpoint` (the base URL without credentials, or a shared scope name) keeps two
    servers that give a model the same name apart; in-process models have none, so their keys are unchanged."""
    key: dict[str, Any] = {"backend": backend, "model": model, "messages": messages, "sampling": sampling, "salt": salt}
    if endpoint:
        key["endpoint"] = endpoint
    payload = json.dumps(key, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CacheFileError(ParameterError):
    """The cache file cannot be read as a database: says where it is and how to recover."""

    def __init__(self, path: Path, exc: Exception) -> None:
        super().__init__(DEFAULT_CACHE_ENV, f"the LLM call cache {path} cannot be read ({exc})",
                         f"delete {path} (only saved answers are lost; they are asked again) or set "
                         f"{DEFAULT_CACHE_ENV} to another folder")


class CallCache:
    """Key -> ChatResult store. Thread-safe; one connection per thread."""

    def __init__(self, path: str | Path | None = None) -> None:
        path = Path(path) if path else default_cache_dir() / "llm_calls.sqlite"
        make_cache_folder(path.parent)
        self.path = path
        self._local = threading.local()
        self._puts = 0
        try:
            with self._conn() as con:
                con.execute(
                    "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, model TEXT, result TEXT, created REAL)"
                )
                con.execute("SELECT COUNT(*) FROM calls").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CacheFileError(self.path, exc) from None

    def _conn(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in a thread of their own (see module doc)
            self._local.con = con
        return con

    def get(self, key: str) -> ChatResult | None:
        try:
            row = self._conn().execute("SELECT result FROM calls WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise CacheFileError(self.path, exc) from None
        if row is None:
            return None
        data = json.loads(row[0])
        result = ChatResult(**data)
        result.cached = True
        return result

    def put(self, key: str, result: ChatResult) -> None:
        if not result.ok:
            raise ValueError("failed calls are never cached")
        data = result.to_dict()
        data["cached"] = False
        payload = json.dumps(data, ensure_ascii=False)
        try:
            self._conn().execute(
                "INSERT OR REPLACE INTO calls (key, model, result, created) VALUES (?, ?, ?, ?)",
                (key, result.model, payload, time.time()),
            )
        except sqlite3.OperationalError as exc:  # SQLITE_FULL: one line naming the folder, not a traceback
            if "full" not in str(exc).lower():
                raise
            raise disk_full(self.path.parent, len(payload), f"storing a reply in {self.path.name}") from None
        self._puts += 1
        if self._puts % CHECKPOINT_EVERY == 0:
            _checkpointer().request(self.path)

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM calls").fetchone()[0]


class _Checkpointer:
    """One thread per process that checkpoints the caches' write-ahead logs on request.

    A PASSIVE checkpoint copies the log into the database beside the writers, never waiting for them nor holding
    them up, and syncs the log first, so an answer is on the disk (not only with the operating system) within
    `CHECKPOINT_EVERY` answers, as with SQLite's own checkpoints. While answers keep coming it never copies all of
    the log, and SQLite starts the log afresh only after a checkpoint that did; so once the log is over
    `WAL_RESTART_BYTES`, a RESTART checkpoint copies the rest and has the next commit start it afresh, holding
    writers back for that long (once per several thousand answers; up to its 0.1 s timeout more when another
    process is reading an older snapshot). The log is thus up to `WAL_RESTART_BYTES` long where SQLite kept it near
    4 MB; closing the last connection to the file copies and removes it, as before. A checkpoint that fails (a full
    disk, a reader or writer that does not let go within the timeout) leaves the log as it is, to be copied next
    time."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.done = 0
        self._pending: set[Path] = set()
        self._wake = threading.Condition()
        self._connections: dict[Path, sqlite3.Connection] = {}
        threading.Thread(target=self._run, name="cache checkpoints", daemon=True).start()

    def request(self, path: Path) -> None:
        with self._wake:
            self._pending.add(path)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                path = self._pending.pop()
            try:
                con = self._connections.get(path)
                if con is None:
                    # a short timeout: a RESTART that waits for a reader holds writers back meanwhile
                    con = self._connections[path] = sqlite3.connect(path, timeout=0.1, isolation_level=None)
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if _size(Path(f"{path}-wal")) > WAL_RESTART_BYTES:
                    con.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            except sqlite3.Error:
                self._connections.pop(path, None)
            self.done += 1


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_the_checkpointer: list[_Checkpointer] = []


def _checkpointer() -> _Checkpointer:
    """The process's checkpoint thread (a new one in a forked child, which inherits no threads)."""
    if not _the_checkpointer or _the_checkpointer[0].pid != os.getpid():
        _the_checkpointer[:] = [_Checkpointer()]
    return _the_checkpointer[0]
