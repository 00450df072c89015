"""Per-process evidence for a multi-process SFT run, off unless `ISM_SFT_TRACE_DIR` names a folder.

Under `accelerate launch` every process trains, and correctness rests on two claims that the final checkpoint cannot
show: each process is given different training rows, and only the main process writes the run folder. With the
variable set, every process writes two files into that folder (never into the run folder itself):

- `rank<R>.rows.jsonl`: one line per micro-batch the training data loader fetched, with the row indices of the
  tokenised training set (fetch order; the loader reads one micro-batch ahead, so the last line may never be trained);
- `rank<R>.writes.jsonl`: every file opened for writing, folder created, file renamed or deleted under RUN_DIR by
  Python code in that process (a Python audit hook; native writers such as safetensors are not seen, but every save
  path in transformers also writes its JSON files from Python, so a process that saves is caught).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

TRACE_ENV = "ISM_SFT_TRACE_DIR"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.mkdir": 0, "os.remove": 0, "os.rmdir": 0, "shutil.rmtree": 0, "os.truncate": 0,
                "os.rename": 1, "shutil.copyfile": 1, "os.symlink": 1, "os.link": 1}

_files: dict[str, IO[str]] = {}


def trace_dir() -> Path | None:
    value = os.environ.get(TRACE_ENV, "")
    return Path(value) if value else None


def process_rank() -> int:
    """This process's global rank under `accelerate launch` / torchrun (0 when launched alone)."""
    return int(os.environ.get("RANK", "0"))


def _log(kind: str) -> IO[str]:
    """One line-buffered file per process and kind, opened once (writing through it raises no audit event)."""
    if kind not in _files:
        folder = trace_dir()
        folder.mkdir(parents=True, exist_ok=True)
        _files[kind] = open(folder / f"rank{process_rank()}.{kind}.jsonl", "w", buffering=1)
    return _files[kind]


def record_writes_under(run_dir: str | Path) -> None:
    """Log this process's writes under `run_dir` (installs a Python audit hook; no-op without the variable)."""
    if trace_dir() is None:
        return
    root = os.path.realpath(run_dir)
    log = _log("writes")

    def inside(path: Any) -> str | None:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return None  # a file descriptor
        full = os.path.realpath(os.fsdecode(path))
        return full if full == root or full.startswith(root + os.sep) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, flags = args[0], args[2]
            if isinstance(flags, int) and flags & _WRITE_FLAGS and (full := inside(path)):
                log.write(json.dumps({"event": event, "path": full}) + "\n")
        elif event in _PATH_EVENTS and (full := inside(args[_PATH_EVENTS[event]])):
            if event == "os.mkdir" and os.path.isdir(full):
                return  # an existing folder: nothing is written
            log.write(json.dumps({"event": event, "path": full}) + "\n")

    sys.addaudithook(hook)


class RecordingDataset:
    """A map-style dataset that logs the row indices the data loader fetches, then returns the rows unchanged."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.column_names = getattr(dataset, "column_names", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        _log("rows").write(json.dumps({"rows": [int(i) for i in indices]}) + "\n")
        return [self.dataset[int(i)] for i in indices]


def record_training_rows(trainer: Any) -> None:
    """Make `trainer` log the training rows this process is given (no-op without the variable)."""
    if trace_dir() is not None:
        trainer.train_dataset = RecordingDataset(trainer.train_dataset)
