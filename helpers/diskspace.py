"""A full disk, said once and plainly: which folder, how much is free, how much to free.

A stage that runs out of space stops with one line instead of a traceback, and the writers that hit it (JSONL
appends, atomic file writes, the executed notebook) leave nothing half-written, so the same command continues
once space is freed.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

# Room a stage needs beyond the write that failed (its next progress lines, records, figures and the executed
# notebook); stage 3's checkpoints need more, which the message's "at least" leaves open.
MIN_FREE_BYTES = 256 * 1024 * 1024
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """No space left where the kit writes; the message names the folder and the space to free."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in FULL_ERRNOS)


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def free_bytes(folder: str | Path) -> int | None:
    """Free space on the disk holding `folder` (its nearest existing parent), or None when it cannot be told."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_full(folder: str | Path, needed: int | None = None, what: str = "") -> DiskFull:
    """The one-line error for a full disk under `folder`; `needed` = bytes the failed write wanted, if known."""
    free = free_bytes(folder)
    shown = f" ({_size(free)} free)" if free is not None else ""
    wanted = f"; {what} needed {_size(needed)} more" if what and needed else (f"; {what}" if what else "")
    target = max(needed or 0, MIN_FREE_BYTES)
    return DiskFull(f"no space left on the disk of {folder}{shown}{wanted}. Fix: free at least {_size(target)} "
                    "there, then run the same command again (finished work is kept; nothing was left half-written)")
