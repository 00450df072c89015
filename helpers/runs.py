"""Run folders: the unit of reproducibility.

A run folder holds every stage's artifacts, figures, the executed notebooks and `manifest.json` (parameters,
package versions, git commit, seeds, model ids, per-stage accounting). Named results recorded by a notebook land in
`results.json` and in the notebook's own output (as a custom MIME bundle), so a script, a test or a sweep can read
them back from either place.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from . import phases
from .figures import save_figure_files
from .jsonl import write_atomic
from .layout import FIGURES, MANIFEST_JSON, PROJECT_ROOT, RESULTS_JSON, STAGE_FOLDERS, figure_stem
from .params import ParameterError, check_secret_parameters, make_writable_folder, redact_url

RECORD_MIME = "application/vnd.instruct-skillmix.record+json"
TRACKED_PACKAGES = ("torch", "transformers", "trl", "openai", "datasets", "peft", "accelerate", "papermill")


KIT_FOLDERS = ("helpers", "data", "tests")  # no run folder inside these; `notebooks/` itself is refused, but an
# explicit notebooks/runs/... is allowed (a relative RUN_DIR resolves against the project root, see resolve_run_dir).


def _holds_kit(path: Path) -> bool:
    """A checkout of the kit: its package, or stage notebooks that were never executed (run folders hold executed
    copies only, which papermill tags in their metadata). A copy that does not load is an executed one torn by a
    kill or a full disk when it is empty or papermill's tags show in what is left (the kit's notebooks have none);
    anything else unreadable is not written over."""
    if (path / "helpers" / "__init__.py").exists():
        return True
    for nb in (path / "notebooks").glob("0*.ipynb"):
        try:
            text = nb.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return True
        try:
            if "papermill" not in json.loads(text).get("metadata", {}):
                return True
        except (ValueError, AttributeError):
            if text.strip() and '"papermill"' not in text:
                return True  # unreadable, and nothing says papermill wrote it: do not write over it
    return False


def _is_kit_path(target: Path) -> bool:
    """Whether a resolved path is the checkout's own: the project root or a folder above it, its package, data,
    tests, configs, docs and benchmarks, the `notebooks/` folder and its stage notebooks, or a file at the root."""
    if target == PROJECT_ROOT or PROJECT_ROOT.is_relative_to(target):
        return True
    if not target.is_relative_to(PROJECT_ROOT):
        return False
    parts = target.relative_to(PROJECT_ROOT).parts
    if parts[0] in (*KIT_FOLDERS, "configs", "docs", "benchmarks", ".git"):
        return True
    if parts[0] == "notebooks":
        return len(parts) == 1 or (len(parts) == 2 and target.suffix == ".ipynb")
    return len(parts) == 1 and not target.is_dir()


def _link_into_kit(path: Path) -> Path | None:
    """The first symlink inside the run folder that leads into the checkout (a run would write through it)."""
    if not path.is_dir():
        return None
    for folder, dirs, files in os.walk(path):  # symlinked folders are not entered, only checked
        for name in (*dirs, *files):
            entry = Path(folder) / name
            if entry.is_symlink() and _is_kit_path(entry.resolve()):
                return entry
    return None


def check_run_dir(run_dir: str | Path | None, parameter: str = "RUN_DIR") -> Path:
    """The run folder, refused when writing there would overwrite the kit itself or cannot work (empty, a file).
    Symlinks are resolved first, the folder's own and any inside it (a `data/` linked to the kit's `data/`)."""
    if run_dir is None or not str(run_dir).strip():
        raise ParameterError(parameter, "is empty, which would write into the current folder",
                             "name a run folder such as runs/demo")
    path = resolve_run_dir(run_dir)
    if path.exists() and not path.is_dir():
        raise ParameterError(parameter, f"{path} is a file, not a folder", "name a folder (it is created if missing)")
    inside_kit_code = path == PROJECT_ROOT / "notebooks" or any(path.is_relative_to(PROJECT_ROOT / name)
                                                               for name in KIT_FOLDERS)
    if path == PROJECT_ROOT or PROJECT_ROOT.is_relative_to(path) or inside_kit_code or _holds_kit(path):
        raise ParameterError(parameter, f"{path} is (or holds) the kit's own files, which a run would overwrite",
                             "use a folder of its own, e.g. runs/demo")
    link = _link_into_kit(path)
    if link is not None:
        raise ParameterError(parameter, f"{link} is a symlink to {link.resolve()}, the kit's own files, which a run "
                             "would overwrite", f"replace the link in {path} by a folder or file of its own")
    return path


def resolve_run_dir(run_dir: str | Path) -> Path:
    """The absolute run folder. A relative RUN_DIR is relative to the project root, not to the working directory:
    the command line and papermill start in the project root but JupyterLab runs a notebook in `notebooks/`, and
    all of them must read and write the same folder. (Outside a project checkout: relative to the working directory.)
    """
    path = Path(run_dir).expanduser()
    if not path.is_absolute():
        root = PROJECT_ROOT if (PROJECT_ROOT / "notebooks").is_dir() else Path.cwd()
        path = root / path
    return path.resolve()


def run_dir_parameter(value: str) -> str:
    """A stage config's RUN_DIR as an absolute path string (see resolve_run_dir); empty stays empty so that the
    config's own check can report it."""
    return str(resolve_run_dir(value)) if str(value).strip() else value


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _jsonable(value: Any) -> Any:
    """Make numpy scalars, paths and dataclasses storable; fail loudly on anything else."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a run record")


def _finite(value: Any) -> Any:
    """NaN and infinities become null: they are not JSON, and a metric that could not be computed is missing."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class Run:
    """One run folder. Safe to open from several notebooks or processes: writes go through a file lock."""

    def __init__(self, run_dir: str | Path, stage: str | None = None) -> None:
        self.path = check_run_dir(run_dir)
        self.figures = self.path / FIGURES
        make_writable_folder(self.figures, "RUN_DIR", "choose a folder you can write, e.g. runs/demo")
        self.stage = stage
        self._lock = FileLock(str(self.path / ".run.lock"))

    # ---------------------------------------------------------------- files
    def artifact(self, *parts: str) -> Path:
        """Path of an artifact inside the run folder; parent folders are created."""
        path = self.path.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_JSON

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_JSON

    def _read(self, path: Path) -> dict[str, Any]:
        return json.loads(path.read_text()) if path.exists() else {}

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        write_atomic(path, json.dumps(data, indent=2, default=_jsonable, ensure_ascii=False))  # whole, or the old one

    @contextmanager
    def _update(self, path: Path):
        with self._lock:
            data = self._read(path)
            yield data
            self._write(path, data)

    def manifest(self) -> dict[str, Any]:
        return self._read(self.manifest_path)

    def results(self) -> dict[str, Any]:
        return self._read(self.results_path)

    # ---------------------------------------------------------------- manifest
    def begin_stage(self, stage: str, params: dict[str, Any], seeds: dict[str, int] | None = None) -> None:
        """Record a stage's parameters and environment. Never secrets: a pasted key is refused here too (the driver
        refuses it before any notebook starts) and URLs are stored without credentials. A re-run of a stage starts
        its records afresh: its manifest entry, its results, its figures and its own folder (`STAGE_FOLDERS`) are
        replaced as a whole, so nothing an earlier run with other parameters wrote is read as this run's."""
        self.stage = stage
        check_secret_parameters({k: v for k, v in params.items() if str(k).upper().endswith("_API_KEY_ENV")})
        clean = {k: redact_url(v) if str(k).upper().endswith("_BASE_URL") else v
                 for k, v in params.items() if not k.startswith("_")}
        with self._update(self.manifest_path) as m:
            m.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            m["run_dir"] = str(self.path)
            m["git_commit"] = git_commit()
            m["versions"] = package_versions()
            m.setdefault("stages", {})[stage] = {  # replaced as a whole: no model or note of an earlier run stays
                "params": clean, "seeds": seeds or {}, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "begun_ns": time.time_ns()}  # tells two starts within one second apart
        with self._update(self.results_path) as r:
            r.pop(stage, None)
        self._remove_stage_outputs(stage)

    def _remove_stage_outputs(self, stage: str) -> None:
        """A re-run's files replace the earlier run's as a whole: the stage's own folder and its figures go first,
        so that a step the new parameters skip leaves no old file behind."""
        for figure in self.figures.glob(f"{stage}_*"):
            if figure.suffix in (".png", ".svg"):
                figure.unlink(missing_ok=True)
        folder = STAGE_FOLDERS.get(stage)
        if folder is None:
            return
        path = self.path / folder
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)

    def set_stage_info(self, key: str, value: Any, stage: str | None = None) -> None:
        """Store one fact about a stage in the manifest, e.g. model ids, the best checkpoint, accounting."""
        stage = stage or self._require_stage()
        with self._update(self.manifest_path) as m:
            m.setdefault("stages", {}).setdefault(stage, {})[key] = value

    def add_model(self, role: str, description: dict[str, Any], stage: str | None = None) -> None:
        """Which model played `role` (teacher, judge, student, ...; stored lower-case) in a stage."""
        stage = stage or self._require_stage()
        with self._update(self.manifest_path) as m:
            m.setdefault("stages", {}).setdefault(stage, {}).setdefault("models", {})[role.lower()] = description

    def add_accounting(self, role: str, usage: Any, stage: str | None = None) -> None:
        """Per-stage, per-role token and cost totals (usage: a helpers.llm.accounting.Usage or a dict)."""
        stage = stage or self._require_stage()
        data = usage.as_dict() if hasattr(usage, "as_dict") else dict(usage)
        with self._update(self.manifest_path) as m:
            m.setdefault("stages", {}).setdefault(stage, {}).setdefault("accounting", {})[role.lower()] = data

    def end_stage(self, stage: str | None = None) -> None:
        """Mark the stage finished and store where its time went (`helpers.phases`)."""
        stage = stage or self._require_stage()
        self.set_stage_info("timing", phases.snapshot(), stage)
        phases.reset()  # the next stage in this process times its own phases
        self.set_stage_info("finished", time.strftime("%Y-%m-%dT%H:%M:%S%z"), stage)

    def stage_info(self, stage: str) -> dict[str, Any]:
        return self.manifest().get("stages", {}).get(stage, {})

    def _require_stage(self) -> str:
        if not self.stage:
            raise RuntimeError("no stage begun: call run.begin_stage(name, params) first")
        return self.stage

    # ---------------------------------------------------------------- results
    def record(self, name: str, value: Any, stage: str | None = None, display: bool = True) -> Any:
        """Store a named result (number, string, small dict/list) for tests, sweeps and readers."""
        stage = stage or self._require_stage()
        value = _finite(json.loads(json.dumps(value, default=_jsonable)))
        with self._update(self.results_path) as r:
            r.setdefault(stage, {})[name] = value
        if display:
            _emit_record(stage, name, value)
        return value

    def save_figure(self, fig: Any, name: str, stage: str | None = None) -> Path:
        """Save as figures/STAGE_NAME.png and .svg; returns the PNG path."""
        stage = stage or self._require_stage()
        return save_figure_files(fig, self.path / figure_stem(stage, name))[0]


def _emit_record(stage: str, name: str, value: Any) -> None:
    """Show the record in a notebook's output so it can be read back from the executed .ipynb."""
    try:  # optional: IPython exists only where notebooks run
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is None:
        return
    display({RECORD_MIME: {"stage": stage, "name": name, "value": value}}, raw=True)


def read_notebook_records(notebook_path: str | Path) -> dict[str, dict[str, Any]]:
    """All records a notebook emitted while it ran: {stage: {name: value}}."""
    nb = json.loads(Path(notebook_path).read_text())
    records: dict[str, dict[str, Any]] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(RECORD_MIME)
            if payload:
                records.setdefault(payload["stage"], {})[payload["name"]] = payload["value"]
    return records
