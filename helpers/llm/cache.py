"""A persistent, content-addressed cache of successful LLM calls.

Why SQLite: one file, atomic commits after every call (a crash loses at most the calls in flight), and safe when
two processes (two notebooks, a sweep's parallel cells) write to it at once thanks to WAL mode and a busy timeout.
Only successes are stored; a failure is always asked again next time.
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

from .types import ChatResult, Message

DEFAULT_CACHE_ENV = "ISM_CACHE_DIR"


def default_cache_dir() -> Path:
    """Shared by all run folders so a sweep re-pays nothing; override with $ISM_CACHE_DIR."""
    env = os.environ.get(DEFAULT_CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "instruct-skillmix"


def cache_key(backend: str, model: str, messages: list[Message], sampling: dict[str, Any], salt: str = "") -> str:
    payload = json.dumps(
        {"backend": backend, "model": model, "messages": messages, "sampling": sampling, "salt": salt},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CallCache:
    """Key -> ChatResult store. Thread-safe; one connection per thread."""

    def __init__(self, path: str | Path | None = None) -> None:
        path = Path(path) if path else default_cache_dir() / "llm_calls.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        with self._conn() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, model TEXT, result TEXT, created REAL)"
            )

    def _conn(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
        return con

    def get(self, key: str) -> ChatResult | None:
        row = self._conn().execute("SELECT result FROM calls WHERE key = ?", (key,)).fetchone()
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
        self._conn().execute(
            "INSERT OR REPLACE INTO calls (key, model, result, created) VALUES (?, ?, ?, ?)",
            (key, result.model, json.dumps(data, ensure_ascii=False), time.time()),
        )

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM calls").fetchone()[0]
