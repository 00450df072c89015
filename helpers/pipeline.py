"""Execute the four stage notebooks in order with papermill into one run folder.

Each notebook receives only the parameters its `parameters` cell declares (plus RUN_DIR), so one YAML file can
configure the whole pipeline. Executed copies with their outputs land in `RUN_DIR/notebooks/`; the first failing
notebook stops the run with an error that names the notebook and the cell.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

from .params import ParameterError
from .progress import LineRelay, plain_progress_env, say, stage_summary_lines
from .runs import PROJECT_ROOT, Run, read_notebook_records

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("01_extract_skills", "02_generate", "03_sft", "04_eval_ablations")


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
    path = NOTEBOOK_DIR / (name if str(name).endswith(".ipynb") else f"{name}.ipynb")
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
    """Route each parameter to the notebooks that declare it; unknown names fail now, before any stage runs."""
    notebooks = list(notebooks)
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(params) - known - {"RUN_DIR"})
    if unknown:
        raise ParameterError(
            unknown[0], f"is not a parameter of {', '.join(Path(str(n)).stem for n in notebooks)}",
            f"check the spelling; known parameters: {', '.join(sorted(known))}",
        )
    return {nb: {k: v for k, v in params.items() if k in declared[nb]} for nb in notebooks}


def run_notebook(name: str | Path, run_dir: str | Path, params: Mapping[str, Any], *, log_output: bool = False,
                 progress: bool = True, kernel_name: str | None = None,
                 stream: Callable[[str], None] | None = None) -> Path:
    """Execute one notebook into the run folder. With `stream`, the kernel's progress bars print plain lines and
    every line the notebook writes to stdout/stderr is passed to `stream` as it arrives (prefixed with its name)."""
    import papermill as pm

    run = Run(run_dir)
    src = notebook_path(name)
    out = run.artifact("notebooks", src.name)
    all_params = {**params, "RUN_DIR": str(run.path)}
    prefix = f"  {src.stem} | "
    relays = (LineRelay(prefix, stream), LineRelay(prefix, stream)) if stream else (None, None)  # stdout, stderr
    try:
        with plain_progress_env() if stream else nullcontext():
            pm.execute_notebook(
                str(src), str(out), parameters=all_params, cwd=str(PROJECT_ROOT), log_output=log_output,
                progress_bar=progress and not stream, kernel_name=kernel_name, report_mode=False,
                stdout_file=relays[0], stderr_file=relays[1],
            )
    except pm.PapermillExecutionError as exc:
        raise NotebookFailed(src.stem, exc.cell_index, exc.ename, exc.evalue, out) from None
    finally:
        for relay in relays:
            if relay:
                relay.close()
    return out


def stage_numbers(run: Run, executed: Path) -> list[str]:
    """The numbers the stages of an executed notebook recorded, read back from the run's results.json."""
    return stage_summary_lines(run.results(), read_notebook_records(executed))


def run_pipeline(run_dir: str | Path, params: Mapping[str, Any] | None = None,
                 notebooks: Iterable[str] = NOTEBOOKS, *, log: Callable[[str], None] = say,
                 log_output: bool = False, progress: bool = True, stream_progress: bool = False) -> list[Path]:
    """Run the given notebooks in order into `run_dir`; stop at the first failure (raises NotebookFailed).

    With `stream_progress`, each notebook's own progress lines go to `log` while it runs, and its recorded
    numbers are logged when it ends."""
    params = dict(params or {})
    notebooks = list(notebooks)
    routed = split_parameters(params, notebooks)
    run = Run(run_dir)
    done: list[Path] = []
    for nb in notebooks:
        log(f"[{time.strftime('%H:%M:%S')}] running {nb} -> {run.path / 'notebooks'}")
        start = time.perf_counter()
        done.append(run_notebook(nb, run.path, routed[nb], log_output=log_output, progress=progress,
                                 stream=log if stream_progress else None))
        seconds = round(time.perf_counter() - start, 1)
        run.set_stage_info(nb, {"seconds": seconds, "executed": str(done[-1])}, stage="_pipeline")
        log(f"[{time.strftime('%H:%M:%S')}] {nb} finished in {seconds} s")
        if stream_progress:
            for line in stage_numbers(run, done[-1]):
                log(f"  {line}")
    return done


def export_html(run_dir: str | Path) -> list[Path]:
    """Render the executed notebooks of a run folder as standalone HTML files for sharing."""
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        raise ParameterError("export", "nbconvert is not installed",
                             "run `make setup` (requirements.txt pins nbconvert) or `pip install -r requirements.txt`") from None
    import nbformat

    run = Run(run_dir)
    written = []
    for nb_path in sorted((run.path / "notebooks").glob("*.ipynb")):
        body, _ = HTMLExporter().from_notebook_node(nbformat.read(nb_path, as_version=4))
        target = nb_path.with_suffix(".html")
        target.write_text(body)
        written.append(target)
    return written
