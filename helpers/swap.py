"""Replace a stage's outputs together: write them all under temporary names, then swap them in.

A stage writes several files that belong together (stage 2: train/held-out JSONL, the official JSON lists, the
`datasets` folders). Writing them one after another in place means a kill half-way leaves a mix of this run's and
the previous run's files. Here everything is written into a staging folder first (a kill there leaves the old set
untouched: that is nearly all of the time spent), then moved into place by renames. The renames are listed in a
journal first, so a kill during the swap itself (milliseconds) is completed by the next `replace_together` or
`finish_interrupted_swap` in that folder before anything else happens there.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

JOURNAL = ".swap.json"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def finish_interrupted_swap(folder: str | Path) -> int:
    """Complete a swap a kill interrupted (see the module docstring); returns how many outputs it moved."""
    folder = Path(folder)
    journal = folder / JOURNAL
    if not journal.exists():
        return 0
    plan = json.loads(journal.read_text(encoding="utf-8"))
    staging, trash = folder / plan["staging"], folder / plan["trash"]
    trash.mkdir(exist_ok=True)
    moved = 0
    for name in plan["names"]:
        new, target = staging / name, folder / name
        if not new.exists():
            continue  # already moved before the kill
        if target.exists() or target.is_symlink():
            _remove(trash / name)
            os.replace(target, trash / name)
        os.replace(new, target)
        moved += 1
    journal.unlink()
    _remove(trash)
    _remove(staging)
    return moved


def replace_together(folder: str | Path, write: Callable[[Path], dict[str, Path]]) -> dict[str, Path]:
    """`write(staging_folder)` writes every output inside the staging folder and returns {key: path there}; the
    outputs then replace their namesakes in `folder` together. Returns {key: final path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    finish_interrupted_swap(folder)
    staging, trash = folder / f".staging-{os.getpid()}", folder / f".replaced-{os.getpid()}"
    _remove(staging)
    staging.mkdir()
    try:
        staged = write(staging)
    except BaseException:
        _remove(staging)  # the old outputs stay as they were
        raise
    names = sorted({Path(p).relative_to(staging).parts[0] for p in staged.values()})
    tmp = folder / (JOURNAL + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump({"staging": staging.name, "trash": trash.name, "names": names}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / JOURNAL)
    finish_interrupted_swap(folder)
    return {key: folder / Path(p).relative_to(staging) for key, p in staged.items()}
