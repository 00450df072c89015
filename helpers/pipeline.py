"""Execute the four stage notebooks in order with papermill into one run folder.

Each notebook receives only the parameters its `parameters` cell declares (plus RUN_DIR), so one YAML file can
configure the whole pipeline. Before the first notebook runs, every selected stage's config is built from the
parameters it will receive and validated, so a bad stage-4 value fails before stage 1 pays for a teacher. Executed
copies with their outputs land in `RUN_DIR/notebooks/`; the first failing notebook stops the run with an error that
names the notebook and the cell.

The driver is the one shared module that knows the stages: it imports their config classes (and nothing else of
them) to check parameters and to print the table of every parameter; its dry run hands each stage's config class
and routed parameters to `helpers.dry_run`, which asks the stage's estimate module.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .config import StageConfig, refuse_renamed
from .diskspace import DiskFull, disk_full, is_disk_full
from .evaluate.config import EvalConfig
from .generate.config import GenerateConfig
from .jsonl import write_atomic
from .layout import NOTEBOOKS_DIR, PROJECT_ROOT, RUN_NOTEBOOKS
from .llm.accounting import CostLine, Throughput
from .page_text import clean_outputs
from .params import ParameterError, check_secret_parameters
from .phases import summary_lines
from .progress import LineRelay, plain_progress_env, say, stage_summary_lines
from .runs import Run, check_run_dir, read_notebook_records
from .sft.config import SFTStageConfig
from .skills.config import SkillExtractionConfig

STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    "01_extract_skills": SkillExtractionConfig,
    "02_generate": GenerateConfig,
    "03_sft": SFTStageConfig,
    "04_eval_ablations": EvalConfig,
}
NOTEBOOKS = tuple(STAGE_CONFIGS)


class NotebookFailed(RuntimeError):
    """A stage notebook raised; says which notebook and cell, and where the executed copy is."""

    def __init__(self, notebook: str, cell_index: int | None, ename: str, evalue: str, output_path: Path) -> None:
        self.notebook, self.cell_index, self.ename, self.evalue, self.output_path = (
            notebook, cell_index, ename, evalue, output_path)
        where = f"cell {cell_index}" if cell_index is not None else "an unknown cell"
        super().__init__(f"{notebook} failed in {where}: {ename}: {evalue}\n  executed copy: {output_path}")


def notebook_path(name: str | Path) -> Path:
    """A stage name like '02_generate', or the path of any notebook file."""
    if str(name).endswith(".ipynb") and Path(name).exists():
        return Path(name).resolve()
    path = NOTEBOOKS_DIR / (name if str(name).endswith(".ipynb") else f"{name}.ipynb")
    if not path.exists():
        known = ", ".join(NOTEBOOKS)
        raise ParameterError("notebooks", f"no notebook {name!r}", f"use one of {known}")
    return path


@lru_cache(maxsize=16)
def _declared(path: str, mtime: float) -> dict[str, Any]:
    import papermill as pm

    return {name: info.get("default") for name, info in pm.inspect_notebook(path).items()}


def notebook_parameters(name: str | Path) -> dict[str, str]:
    """The names a notebook's `parameters` cell declares, with their default expressions."""
    path = notebook_path(name)
    return _declared(str(path), path.stat().st_mtime)


def split_parameters(params: Mapping[str, Any], notebooks: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Route each parameter to the notebooks that declare it; unknown and renamed names fail now, before any stage
    runs.

    When only some of the kit's stages run, a name of another stage is known, not an error, so one configuration for
    all four stages (such as configs/paper.yaml) also serves `--only` runs."""
    refuse_renamed(params)
    notebooks = list(notebooks)
    pool = notebooks
    if set(notebooks) <= set(NOTEBOOKS):
        pool = [*notebooks, *(n for n in NOTEBOOKS if n not in notebooks)]
    declared = {nb: notebook_parameters(nb) for nb in pool}
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(params) - known - {"RUN_DIR"})
    if unknown:
        raise ParameterError(
            unknown[0], f"is not a parameter of {', '.join(Path(str(n)).stem for n in pool)}",
            f"check the spelling; known parameters: {', '.join(sorted(known))}",
        )
    return {nb: {k: v for k, v in params.items() if k in declared[nb]} for nb in notebooks}


def check_stages(routed: Mapping[str, Mapping[str, Any]], run_dir: str | Path) -> dict[str, StageConfig]:
    """Build and validate the config of every selected stage from the parameters it will receive.

    A stage's input files (what the stage before it writes) are checked only when that earlier stage is not part of
    this run, i.e. when they must already be in the run folder. Notebooks that are not one of the four stages are
    left to their own checks.
    """
    configs = {}
    selected = [Path(str(nb)).stem for nb in routed]
    for nb, params in routed.items():
        name = Path(str(nb)).stem
        if name not in STAGE_CONFIGS:
            continue
        position = NOTEBOOKS.index(name)
        earlier_runs_first = position > 0 and NOTEBOOKS[position - 1] in selected[:selected.index(name)]
        configs[name] = STAGE_CONFIGS[name].from_params({**params, "RUN_DIR": str(run_dir)},
                                                        inputs=not earlier_runs_first)
    return configs


def dry_run_pipeline(run_dir: str | Path, params: Mapping[str, Any] | None = None,
                     notebooks: Iterable[str] = NOTEBOOKS, throughput: Throughput = Throughput()) -> list[CostLine]:
    """What `run_pipeline` would send, per stage and part, without calling a model or writing anything: the
    parameters are routed and checked as for a real run, but files earlier stages write are not required (the
    estimate stands in for them and says so)."""
    from .dry_run import estimate_stages, planned_examples  # the estimate modules read judge and prompt files

    params = dict(params or {})
    check_secret_parameters(params)
    check_run_dir(run_dir, "--run-dir")
    routed = split_parameters(params, notebooks)
    stages = {Path(str(nb)).stem: (STAGE_CONFIGS[Path(str(nb)).stem], {**values, "RUN_DIR": str(run_dir)})
              for nb, values in routed.items() if Path(str(nb)).stem in STAGE_CONFIGS}
    return estimate_stages(stages, run_dir, planned_examples(params), throughput)


def parameter_table() -> list[dict[str, str]]:
    """Every stage parameter once: its name, the notebooks declaring it, its default and its help."""
    rows: dict[str, dict[str, str]] = {}
    for nb, cls in STAGE_CONFIGS.items():
        helps, defaults = cls.help(), cls.defaults()
        for name in cls.parameter_names():
            row = rows.setdefault(name, {"name": name, "stages": "", "default": repr(defaults[name]),
                                         "help": helps[name]})
            row["stages"] = ",".join(filter(None, [row["stages"], nb[:2]]))
    return list(rows.values())


PARTIAL = ".partial"  # inside RUN_DIR/notebooks: papermill writes here, the finished copy is swapped in


def run_notebook(name: str | Path, run_dir: str | Path, params: Mapping[str, Any], *, log_output: bool = False,
                 progress: bool = True, kernel_name: str | None = None,
                 stream: Callable[[str], None] | None = None) -> Path:
    """Execute one notebook into the run folder. With `stream`, the kernel's progress bars print plain lines and
    every line the notebook writes to stdout/stderr is passed to `stream` as it arrives (prefixed with its name).

    papermill saves the executed copy after every cell, so a kill or a full disk can cut one of those saves short:
    it writes into `notebooks/.partial/` and the copy is swapped in whole (also when the notebook failed, and after
    an interruption when the last save is whole), so `notebooks/` never holds a torn notebook. A full disk, here or
    inside the kernel, ends in one `DiskFull` line naming the folder and the space to free."""
    import papermill as pm

    run = Run(run_dir)
    src = notebook_path(name)
    out = run.artifact(RUN_NOTEBOOKS, src.name)
    aside = run.artifact(RUN_NOTEBOOKS, PARTIAL, src.name)
    all_params = {**params, "RUN_DIR": str(run.path)}
    prefix = f"  {src.stem} | "
    relays = (LineRelay(prefix, stream), LineRelay(prefix, stream)) if stream else (None, None)  # stdout, stderr
    try:
        with plain_progress_env() if stream else nullcontext():
            pm.execute_notebook(
                str(src), str(aside), parameters=all_params, cwd=str(PROJECT_ROOT), log_output=log_output,
                progress_bar=progress and not stream, kernel_name=kernel_name, report_mode=False,
                stdout_file=relays[0], stderr_file=relays[1],
            )
    except pm.PapermillExecutionError as exc:
        _swap_in(aside, out)
        if exc.ename == DiskFull.__name__:
            raise DiskFull(exc.evalue) from None  # the kernel's own one-line message
        if exc.ename in ("OSError", "IOError") and ("[Errno 28]" in exc.evalue or "No space left" in exc.evalue):
            raise disk_full(run.path, what=f"{src.stem} stopped in cell {exc.cell_index} ({exc.evalue})") from None
        raise NotebookFailed(src.stem, exc.cell_index, exc.ename, exc.evalue, out) from None
    except BaseException as exc:
        needed = aside.stat().st_size if aside.exists() else None
        _swap_in(aside, out)
        if is_disk_full(exc):
            raise disk_full(out.parent, needed, f"saving the executed {src.name}") from None
        raise
    else:
        _swap_in(aside, out)
    finally:
        for relay in relays:
            if relay:
                relay.close()
    return out


def _swap_in(aside: Path, out: Path) -> None:
    """Put papermill's copy in place when it is a whole notebook; drop it when a save was cut short."""
    if not aside.exists():
        return
    try:
        json.loads(aside.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        aside.unlink(missing_ok=True)
    else:
        os.replace(aside, out)
    try:
        aside.parent.rmdir()
    except OSError:
        pass  # not empty: left for whoever else writes there


def stage_numbers(run: Run, executed: Path) -> list[str]:
    """The numbers the stages of an executed notebook recorded, read back from the run's results.json."""
    return stage_summary_lines(run.results(), read_notebook_records(executed))


def run_pipeline(run_dir: str | Path, params: Mapping[str, Any] | None = None,
                 notebooks: Iterable[str] = NOTEBOOKS, *, log: Callable[[str], None] = say,
                 log_output: bool = False, progress: bool = True, stream_progress: bool = False) -> list[Path]:
    """Run the given notebooks in order into `run_dir`; stop at the first failure (raises NotebookFailed).

    Before anything is written: a pasted key or a URL with credentials is refused (papermill would store it in the
    executed notebook), so is a run folder that is the kit itself, and every selected stage's parameters are checked.
    One run at a time per run folder. With `stream_progress`, each notebook's own progress lines go to `log` while
    it runs, and its recorded numbers are logged when it ends.
    """
    params = dict(params or {})
    check_secret_parameters(params)
    check_run_dir(run_dir, "--run-dir")
    notebooks = list(notebooks)
    routed = split_parameters(params, notebooks)
    run = Run(run_dir)
    done: list[Path] = []
    with exclusive(run):
        check_stages(routed, run.path)
        for nb in notebooks:
            log(f"[{time.strftime('%H:%M:%S')}] running {nb} -> {run.path / RUN_NOTEBOOKS}")
            starts_before = stage_starts(run)
            start, started_ns = time.perf_counter(), time.time_ns()
            try:
                done.append(run_notebook(nb, run.path, routed[nb], log_output=log_output, progress=progress,
                                         stream=log if stream_progress else None))
            finally:  # the notes matter most when the stage failed
                for note in new_stage_notes(run, starts_before):
                    log(f"  note: {note}")
            seconds = round(time.perf_counter() - start, 1)
            run.set_stage_info(nb, {"seconds": seconds, "executed": str(done[-1]),
                                    **stage_startup(run, starts_before, started_ns)}, stage="_pipeline")
            log(f"[{time.strftime('%H:%M:%S')}] {nb} finished in {seconds} s")
            if stream_progress:
                for line in stage_numbers(run, done[-1]):
                    log(f"  {line}")
    return done


def stage_starts(run: Run) -> dict[str, Any]:
    return {name: (info.get("started"), info.get("begun_ns"))
            for name, info in run.manifest().get("stages", {}).items()
            if isinstance(info, dict)}


def stage_startup(run: Run, starts_before: dict[str, Any], started_ns: int) -> dict[str, Any]:
    """The stages a notebook began, and the seconds from the notebook's start to the first of them or to their first
    timed phase, whichever came first: the kernel's start-up, its imports and the cells before any work."""
    stages = run.manifest().get("stages", {})
    begun = {name: begun_ns for name, (started, begun_ns) in stage_starts(run).items()
             if (started, begun_ns) != starts_before.get(name) and begun_ns}
    if not begun:
        return {}
    first = [(stages[name].get("timing") or {}).get("first_ns") for name in begun]
    first_ns = min([*begun.values(), *(ns for ns in first if ns)])
    return {"stages": sorted(begun, key=begun.get), "startup_s": round(max(first_ns - started_ns, 0) / 1e9, 1)}


def timing_lines(run: Run, notebooks: Iterable[str]) -> list[str]:
    """Where each notebook's time went (`helpers.phases.summary_lines`), from the run's manifest."""
    manifest = run.manifest()
    driver, stages = manifest.get("stages", {}).get("_pipeline", {}), manifest.get("stages", {})
    lines = []
    for nb in notebooks:
        seen = driver.get(Path(str(nb)).stem) or {}
        if "seconds" not in seen:
            continue
        names = seen.get("stages") or []
        info = dict(stages.get(names[0], {})) if len(names) == 1 else {}
        lines += summary_lines(Path(str(nb)).stem, seen["seconds"], {**info, "startup_s": seen.get("startup_s")})
    total = sum((driver.get(Path(str(nb)).stem) or {}).get("seconds", 0.0) for nb in notebooks)
    return [*lines, f"all stages: {total:.1f} s"] if lines else []


def new_stage_notes(run: Run, starts_before: dict[str, Any]) -> list[str]:
    """What the stages begun since `starts_before` told the reader (fallbacks such as a top-up from the shipped
    lists, retried or failed examples): the driver repeats them, so they are not seen only inside a notebook."""
    stages = run.manifest().get("stages", {})
    return [str(note) for name, started in stage_starts(run).items() if started != starts_before.get(name)
            for note in stages[name].get("notes") or []]


@contextmanager
def exclusive(run: Run) -> Iterator[None]:
    """Hold the run folder for one driver: two runs writing one folder at once would pay every call twice and mix
    their artifacts. Refuses at once (no waiting) with a message that says what to do."""
    lock = FileLock(str(run.path / ".pipeline.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ParameterError("--run-dir", f"another run is writing {run.path} right now",
                             "wait for it to finish, or give this run another --run-dir") from None
    try:
        yield
    finally:
        lock.release()


def export_html(run_dir: str | Path) -> list[Path]:
    """Render the executed notebooks of a run folder as standalone HTML files for sharing: their outputs cleaned
    first, so no text a model or a dataset wrote runs as script in the page (`helpers.page_text`)."""
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        raise ParameterError("export", "nbconvert is not installed",
                             "run `make setup` (requirements.txt pins nbconvert) or `pip install -r requirements.txt`") from None
    import nbformat

    run = Run(run_dir)
    written = []
    for nb_path in sorted((run.path / RUN_NOTEBOOKS).glob("*.ipynb")):
        try:
            nb = nbformat.read(nb_path, as_version=4)
        except (OSError, ValueError) as exc:  # a copy torn by a kill or a full disk before writes were swapped in
            warnings.warn(f"{nb_path} is damaged ({exc.__class__.__name__}); not exported, run its stage again",
                          stacklevel=2)
            continue
        body, _ = HTMLExporter().from_notebook_node(clean_outputs(nb))  # what models wrote is text, not script
        written.append(write_atomic(nb_path.with_suffix(".html"), body))
    return written
