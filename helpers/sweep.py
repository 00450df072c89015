"""Ablation sweeps: run stages 2-4 over a grid of parameters, one run folder per cell, and collect one table.

    python -m helpers.sweep --grid grid.yaml --out sweeps/shirkers [--parallel 2] [--set NUM_EXAMPLES=200]
    python -m helpers.sweep --grid shirkers --out sweeps/shirkers      # a built-in grid from the paper
    python -m helpers.sweep --grid shirkers --out sweeps/shirkers --seeds 0,1,2   # each cell with 3 seeds

A grid file is YAML:

    base:            # parameters for every cell (any notebook's parameter names)
      NUM_EXAMPLES: 1000
    grid:            # every combination of these values is one cell
      SHIRKER_FRACTION: [0.0, 0.2, 0.5]
      SHIRKER_KIND: [brevity, junk]
    SEEDS: [0, 1, 2] # optional: every cell once per seed (or --seeds 0,1,2)

Stage 1 runs once per distinct set of stage-1 parameters (once, if the grid varies only later stages) in
`OUT/_stage1/…`; its artifacts are copied into each cell's run folder. Cells share the LLM call cache, so repeated
requests are free. With seeds, stages 2-4 of every cell run once per seed (SEED sets the generation plan, the
shirker choice, training and judging order), while stage 1 stays shared. `OUT/sweep.csv` holds one row per
(cell, seed): its parameters, `seed`, status, every recorded result and `items_path`, the per-item judge
preferences the intervals of `helpers.evaluate.ablations` are computed from.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .config import refuse_renamed
from .jsonl import read_json_object
from .layout import EVAL_PAIRWISE_ITEMS, RESULTS_JSON, SKILLS_JSONL, STAGE1_LISTS
from .params import ParameterError, check_secret_parameters
from .pipeline import notebook_parameters, run_pipeline
from .runs import check_run_dir, resolve_run_dir

STAGE1_NOTEBOOK = "01_extract_skills"
LATER_NOTEBOOKS = ("02_generate", "03_sft", "04_eval_ablations")
STAGE1_ARTIFACTS = STAGE1_LISTS
# The parameters a seed of the seed dimension sets in stages 2-4 (stage 1 keeps the base value: it is shared).
SEED_PARAMETERS = ("SEED",)
# Per-item judge preferences written by stage 4 (model, id, preference, ...), relative to a cell's run folder.
PAIRWISE_ITEMS = Path(EVAL_PAIRWISE_ITEMS)

# The paper's ablations (shirker fraction and kind, k, data size, skill source), ready to run.
PAPER_GRIDS: dict[str, dict[str, Any]] = {
    "shirkers": {"grid": {"SHIRKER_FRACTION": [0.0, 0.2, 0.5], "SHIRKER_KIND": ["brevity", "junk"]}},
    "k": {"grid": {"K_SKILLS": [1, 2]}},
    "size": {"grid": {"NUM_EXAMPLES": [1000, 2000, 4000]}},
    "skill_source": {"grid": {"SKILL_SOURCE": ["direct", "dataset"]}},
}


@dataclass
class SweepSpec:
    """What to sweep."""

    base: dict[str, Any] = field(default_factory=dict, metadata={"help": "Parameters shared by every cell."})
    grid: dict[str, list[Any]] = field(default_factory=dict, metadata={"help": "Parameter -> values; cells are all combinations."})
    seeds: list[int] = field(default_factory=list, metadata={"help": "Run every cell once per seed (empty: once, with the base SEED)."})


def load_grid(grid: str | Path, overrides: dict[str, Any] | None = None, seeds: list[int] | None = None) -> SweepSpec:
    """A grid from a YAML file or a built-in name (see PAPER_GRIDS); `overrides` are added to `base`; `seeds`
    (when given) replace the file's SEEDS."""
    if str(grid) in PAPER_GRIDS:
        data = PAPER_GRIDS[str(grid)]
    else:
        path = Path(grid)
        if not path.exists():
            raise ParameterError("--grid", f"{grid!r} is neither a file nor a built-in grid",
                                 f"give a YAML file or one of {', '.join(PAPER_GRIDS)}")
        data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"base", "grid", "SEEDS"}
    if unknown:
        raise ParameterError("--grid", f"unknown top-level keys {sorted(unknown)}", "use only 'base', 'grid' and 'SEEDS'")
    spec = SweepSpec(base=dict(data.get("base") or {}), grid={k: list(v) if isinstance(v, (list, tuple)) else [v]
                                                              for k, v in (data.get("grid") or {}).items()})
    spec.base.update(overrides or {})
    spec.seeds = check_seeds(data.get("SEEDS") if seeds is None else seeds)
    if spec.seeds and any(k in spec.grid for k in SEED_PARAMETERS):
        raise ParameterError("SEEDS", "the grid varies SEED and a seed dimension is given as well",
                             "list the seeds once: either under SEEDS (or --seeds) or as grid values of SEED")
    if not spec.grid:
        raise ParameterError("--grid", "the grid is empty", "list at least one parameter with its values under 'grid'")
    return spec


def expand_grid(spec: SweepSpec) -> list[dict[str, Any]]:
    """All cells in a stable order (first key varies slowest), each the full parameter dict of that cell."""
    keys = list(spec.grid)
    return [{**spec.base, **dict(zip(keys, values))} for values in itertools.product(*(spec.grid[k] for k in keys))]


def check_seeds(seeds: Any) -> list[int]:
    """SEEDS as a list of distinct integers ([] = no seed dimension); '0,1,2' is accepted as well."""
    if seeds is None or seeds == "":
        return []
    if isinstance(seeds, str):
        seeds = [s.strip() for s in seeds.split(",") if s.strip()]
    if isinstance(seeds, int):
        seeds = [seeds]
    try:
        values = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise ParameterError("SEEDS", f"{seeds!r} is not a list of integers", "write e.g. --seeds 0,1,2 or SEEDS: [0, 1, 2]") from None
    if len(set(values)) != len(values):
        raise ParameterError("SEEDS", f"{values} repeats a seed", "list each seed once")
    return values


def expand_seeds(cells: list[dict[str, Any]], seeds: list[int]) -> list[tuple[dict[str, Any], int | None]]:
    """(cell, seed) pairs, every cell once per seed (seed None: no seed dimension, the cell keeps its SEED)."""
    return [(cell, seed) for cell in cells for seed in (seeds or [None])]


def seeded_cell_name(name: str, seed: int | None) -> str:
    """The folder of one seed of a cell: NAME__seed=S (NAME itself without a seed dimension)."""
    return name if seed is None else f"{name}__seed={seed}"


def cell_name(params: dict[str, Any], keys: Iterable[str]) -> str:
    """A folder name from the varied parameters, e.g. SHIRKER_FRACTION=0.2__SHIRKER_KIND=junk.

    Characters a folder name cannot hold safely become '-'; when that happens a short hash of the exact values is
    appended, so values that differ only there (`a/b`, `a:b`, `a b`) still get folders (and rows) of their own.
    """
    raw = "__".join(f"{k}={params[k]}" for k in keys)
    slug = re.sub(r"[^A-Za-z0-9_.=+-]", "-", raw)
    if slug == raw and raw:
        return raw
    digest = hashlib.sha256(json.dumps([[k, params[k]] for k in keys], default=str).encode()).hexdigest()[:8]
    return f"{slug[:80] or 'cell'}-{digest}"


def _declared_by_pipeline(notebook: str) -> set[str]:
    return set(notebook_parameters(notebook))


def _copy_stage1(shared: Path, cell_dir: Path) -> None:
    for name in STAGE1_ARTIFACTS:
        src, dst = shared / name, cell_dir / name
        if src.exists() and not dst.exists():
            shutil.copy2(src, dst)


def _finished_before(cell_dir: Path, params: dict[str, Any]) -> bool:
    """The cell's folder holds a finished run with exactly these parameters (a re-run of the sweep keeps it)."""
    try:
        before = json.loads((cell_dir / "cell.json").read_text())
    except (OSError, ValueError):
        return False
    same = json.dumps(before.get("params"), sort_keys=True, default=str) == json.dumps(params, sort_keys=True,
                                                                                        default=str)
    return same and before.get("status") == "ok" and (cell_dir / RESULTS_JSON).exists()


@dataclass
class CellRun:
    """One (cell, seed) of a sweep: its run folder, the parameters of stages 2-4 and its shared stage-1 folder."""

    name: str
    run_dir: Path
    params: dict[str, Any] = field(metadata={"help": "Parameters of stages 2-4 (SEED set by the seed dimension)."})
    record: dict[str, Any] = field(metadata={"help": "The cell's full parameters, as cell.json and sweep.csv keep them."})
    seed: int | None
    stage1_dir: Path


@dataclass
class SweepPlan:
    """Every run a sweep makes, checked and named before any stage runs (whatever executes it)."""

    out: Path
    stage1: list[tuple[Path, dict[str, Any]]]  # (shared folder, stage-1 parameters), one per distinct set
    cells: list[CellRun]


def plan_sweep(spec: SweepSpec, out_dir: str | Path,
               declared: Callable[[str], set[str]] = _declared_by_pipeline, write: bool = True) -> SweepPlan:
    """Check the grid's parameters and name every run folder; writes OUT/grid.json after the checks (`write`)."""
    out = check_run_dir(out_dir, "--out")  # like RUN_DIR: relative to the project root, never the kit's own files
    stage1_keys = declared(STAGE1_NOTEBOOK)
    later_keys = set().union(*(declared(nb) for nb in LATER_NOTEBOOKS))
    cells = expand_grid(spec)
    refuse_renamed({k for c in cells for k in c})
    unknown = sorted({k for c in cells for k in c} - stage1_keys - later_keys - {"RUN_DIR"})
    if unknown:
        raise ParameterError(unknown[0], "is not a parameter of any stage notebook", "check the spelling in the grid file")
    for cell in cells:  # before grid.json or any run folder can store a pasted key
        check_secret_parameters(cell)
    varied = list(spec.grid)
    names = [cell_name(c, varied) for c in cells]
    if len(set(names)) < len(names):
        raise ParameterError("--grid", "two cells have the same values", "list each value once per parameter")
    if write:
        out.mkdir(parents=True, exist_ok=True)
        (out / "grid.json").write_text(json.dumps({"base": spec.base, "grid": spec.grid, "SEEDS": spec.seeds}, indent=2,
                                                  default=str))
    stage1_dirs: dict[str, Path] = {}
    stage1: list[tuple[Path, dict[str, Any]]] = []
    for cell in cells:  # stage 1 once per distinct stage-1 parameter set
        s1 = {k: v for k, v in cell.items() if k in stage1_keys}
        key = json.dumps(s1, sort_keys=True, default=str)
        if key in stage1_dirs:
            continue
        s1_varied = [k for k in varied if k in stage1_keys]
        stage1_dirs[key] = out / "_stage1" / (cell_name(cell, s1_varied) if s1_varied else "shared")
        stage1.append((stage1_dirs[key], s1))
    runs = []
    for cell, seed in expand_seeds(cells, spec.seeds):
        name = seeded_cell_name(cell_name(cell, varied), seed)
        later = {k: v for k, v in cell.items() if k in later_keys}
        if seed is not None:
            later.update({k: seed for k in SEED_PARAMETERS if k in later_keys})
        s1 = {k: v for k, v in cell.items() if k in stage1_keys}
        runs.append(CellRun(name, out / "cells" / name, later, {**cell, **later}, later.get("SEED"),
                            stage1_dirs[json.dumps(s1, sort_keys=True, default=str)]))
    return SweepPlan(out, stage1, runs)


def run_sweep(spec: SweepSpec, out_dir: str | Path, parallel: int = 1, runner: Callable[..., Any] | None = None,
              declared: Callable[[str], set[str]] = _declared_by_pipeline, log: Callable[[str], None] = print,
              rerun: bool = False) -> pd.DataFrame:
    """Run every cell (stage 1 shared), keep going past failed cells, write and return the collected table.

    Running the same sweep again resumes it: a cell that finished with the same parameters is kept (its students
    are not retrained), failed and unfinished cells run again; `rerun=True` runs every cell again.

    `runner(run_dir, params, notebooks=...)` is `helpers.pipeline.run_pipeline` unless a test injects another.
    """
    runner = runner or run_pipeline
    plan = plan_sweep(spec, out_dir, declared)
    for folder, s1 in plan.stage1:
        if not (folder / SKILLS_JSONL).exists():
            log(f"stage 1 -> {folder}")
            runner(folder, s1, notebooks=(STAGE1_NOTEBOOK,))

    def run_cell(cell: CellRun) -> None:
        cell_dir = cell.run_dir
        cell_dir.mkdir(parents=True, exist_ok=True)
        _copy_stage1(cell.stage1_dir, cell_dir)
        if not rerun and _finished_before(cell_dir, cell.record):
            log(f"cell {cell.name}: finished before with the same parameters, kept (--rerun runs it again)")
            return
        status: dict[str, Any] = {"cell": cell.name, "params": cell.record, "seed": cell.seed, "status": "running"}
        (cell_dir / "cell.json").write_text(json.dumps(status, indent=2, default=str))
        start = time.perf_counter()
        try:
            runner(cell_dir, cell.params, notebooks=LATER_NOTEBOOKS)
            status.update(status="ok", error="")
        except Exception as exc:  # one failed cell must not stop the sweep; the error is kept in the table
            status.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
            log(f"cell {cell.name} failed: {status['error']}")
        status["seconds"] = round(time.perf_counter() - start, 1)
        (cell_dir / "cell.json").write_text(json.dumps(status, indent=2, default=str))

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(run_cell, plan.cells))
    return collect_results(plan.out)


def _flatten(results: dict[str, Any]) -> dict[str, Any]:
    """`{stage: {name: value}}` -> `{"stage.name": value}` for scalar values (tables and lists stay in the run)."""
    flat = {}
    for stage, named in results.items():
        if not isinstance(named, dict):
            continue
        for name, value in named.items():
            if value is None or isinstance(value, (int, float, str, bool)):
                flat[f"{stage}.{name}"] = value
    return flat


def collect_results(out_dir: str | Path, write: bool = True) -> pd.DataFrame:
    """One row per cell folder (a cell and seed): parameters, seed, status, error, seconds, run_dir, items_path
    (per-item judge preferences, empty when stage 4 wrote none) and every recorded scalar result."""
    out = check_run_dir(out_dir, "--out") if write else resolve_run_dir(out_dir)
    if not (out / "cells").is_dir():
        raise ParameterError("--out", f"{out} holds no sweep (no cells/ folder)",
                             "give the folder a sweep wrote, or run the sweep first (without --collect-only)")
    rows = []
    for cell_json in sorted((out / "cells").glob("*/cell.json")):
        cell = read_json_object(cell_json, "--out", dict, "a cell record as the sweep writes it")
        results_path = cell_json.parent / RESULTS_JSON
        results = read_json_object(results_path, "--out") if results_path.exists() else {}
        items = cell_json.parent / PAIRWISE_ITEMS
        rows.append({"cell": cell["cell"], **cell.get("params", {}),
                     "seed": cell.get("seed", cell.get("params", {}).get("SEED")), "status": cell.get("status"),
                     "error": cell.get("error", ""), "seconds": cell.get("seconds"),
                     "run_dir": str(cell_json.parent), "items_path": str(items) if items.exists() else "",
                     **_flatten(results)})
    df = pd.DataFrame(rows)
    if write:
        df.to_csv(out / "sweep.csv", index=False)
    return df


def summarise_sweep(out_dir: str | Path, sweep: pd.DataFrame, grid: dict[str, list[Any]],
                    metric: str = "evaluate.win_rate", log: Callable[[str], None] = print) -> pd.DataFrame:
    """The ablation curves of a finished sweep: for each varied parameter, the mean over seeds of `metric` with its
    95 % interval (bootstrap over items within seeds, then over seeds) in OUT/intervals.csv and
    OUT/figures/sweep_<param>.png/.svg, and each value minus the parameter's first value, paired by seed and item,
    in OUT/paired.csv (the grid's first value of each parameter is its baseline). With two varied parameters the
    other one draws the lines. Returns the intervals."""
    import matplotlib.pyplot as plt  # the plotting stack is loaded only here

    from .evaluate.ablations import ablation_intervals, ok_rows, paired_comparisons
    from .evaluate.interval_plots import plot_ablation
    from .figures import save_figure_files

    out = resolve_run_dir(out_dir)
    ok = ok_rows(sweep)
    curves, paired = [], []
    varied = list(grid)
    for x in varied:
        if x not in ok or ok[x].nunique() < 2:
            continue
        others = [v for v in varied if v != x and v in ok and ok[v].nunique() > 1]
        line = others[0] if len(others) == 1 else None
        curve = ablation_intervals(ok, x, line, metric)
        if curve.empty or curve["estimate"].isna().all():
            continue
        fig = plot_ablation(curve, x, line, per_seed=ok, title=f"{metric} vs {x}")
        png = save_figure_files(fig, out / "figures" / f"sweep_{x.lower()}")[0]
        plt.close(fig)
        curves.append(curve.assign(parameter=x))
        paired.append(paired_comparisons(ok, x, grid[x][0], by=line, metric=metric).assign(parameter=x))
        log(f"{x}: {len(curve)} settings -> {png}")
    intervals = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    if curves:
        intervals.to_csv(out / "intervals.csv", index=False)
        pd.concat(paired, ignore_index=True).to_csv(out / "paired.csv", index=False)
    return intervals


def _grid_of(out: str | Path) -> dict[str, list[Any]]:
    """The grid a sweep folder was made with (grid.json), for --collect-only and --status without --grid."""
    path = resolve_run_dir(out) / "grid.json"
    if not path.exists():
        raise ParameterError("--grid", f"{path} does not exist", "give --grid, or --out a folder a sweep wrote")
    return dict(read_json_object(path, "--out", dict, "grid.json as the sweep writes it").get("grid") or {})


def _submit_slurm(spec: SweepSpec, args: argparse.Namespace, slurm: dict[str, Any]) -> int:
    """--executor slurm: check everything, then submit stage 1 and one array per later stage (or print them)."""
    from . import slurm_driver as driver  # submitit and the cluster checks: only for this executor

    cfg = driver.slurm_config(slurm, args.slurm_profile)
    plan = plan_sweep(spec, args.out, write=not args.dry_run)
    queued = {} if args.dry_run else driver.queued_cells(plan.out)
    jobs, gpus, cells = driver.plan_sweep_jobs(plan, cfg, _finished_before, rerun=args.rerun, queued=queued)
    code = driver.submit_or_show(jobs, cfg, gpus, args.dry_run,
                                 before_submit=lambda: driver.mark_submitted(cells, args.rerun))
    if not args.dry_run and jobs.batches:
        print(f"\nwatch:   python -m helpers.sweep --status --out {args.out}\n"
              f"collect: python -m helpers.sweep --collect-only --out {args.out}  (finished cells, any time)")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", help=f"YAML grid file or one of {', '.join(PAPER_GRIDS)} (--collect-only and "
                                       "--status read the sweep folder's grid.json without it)")
    parser.add_argument("--out", required=True, help="sweep folder, e.g. sweeps/shirkers")
    parser.add_argument("--parallel", type=int, default=1, help="cells run at the same time (each starts its own kernels)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra base parameter (YAML value), repeatable; SLURM_* names set the Slurm executor")
    parser.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2: every cell once per seed (stage 1 shared)")
    parser.add_argument("--collect-only", action="store_true",
                        help="only rebuild sweep.csv (and the curves) from the cell folders (also while jobs run)")
    parser.add_argument("--rerun", action="store_true",
                        help="run every cell again (default: keep cells that finished with the same parameters)")
    parser.add_argument("--executor", choices=["local", "slurm"], default="local",
                        help="local: run the cells here; slurm: submit them as job arrays (docs/scaling.md)")
    parser.add_argument("--slurm-profile", help="YAML of SLURM_* parameters, e.g. configs/slurm/paper.yaml")
    parser.add_argument("--dry-run", action="store_true", help="slurm: print the sbatch scripts and the dependency "
                                                               "graph, submit nothing")
    parser.add_argument("--status", action="store_true", help="slurm: per cell pending, running, requeued, done or "
                                                              "failed (with the failing job's last log lines)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        # A time limit stays text: YAML would read 1:30:00 as the number 5400.
        overrides[key] = value if key == "SLURM_TIME" and not value.lstrip().startswith("{") else yaml.safe_load(value)
    slurm = {k: overrides.pop(k) for k in list(overrides) if k.startswith("SLURM_")}
    try:
        if args.status:
            from .slurm_driver import show_status

            return show_status(resolve_run_dir(args.out))
        if args.executor == "local" and (slurm or args.slurm_profile or args.dry_run):
            raise ParameterError(next(iter(slurm), "--slurm-profile" if args.slurm_profile else "--dry-run"),
                                 "is an option of the Slurm executor", "add --executor slurm, or leave it out")
        if args.collect_only:
            grid = load_grid(args.grid, overrides).grid if args.grid else _grid_of(args.out)
            df = collect_results(args.out)
        else:
            if not args.grid:
                raise ParameterError("--grid", "is missing", "give a YAML grid file or a built-in grid name")
            spec = load_grid(args.grid, overrides, check_seeds(args.seeds) if args.seeds else None)
            slurm.update({k: spec.base.pop(k) for k in list(spec.base) if k.startswith("SLURM_")})
            if args.executor == "local" and slurm:
                raise ParameterError(next(iter(slurm)), "is a parameter of the Slurm executor",
                                     "add --executor slurm, or leave it out")
            if args.executor == "slurm":
                return _submit_slurm(spec, args, slurm)
            grid = spec.grid
            df = run_sweep(spec, args.out, parallel=args.parallel, rerun=args.rerun)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(df.drop(columns=["run_dir", "items_path"], errors="ignore").to_string(index=False))
    print(f"\nwrote {resolve_run_dir(args.out) / 'sweep.csv'}")
    intervals = summarise_sweep(args.out, df, grid) if not df.empty else pd.DataFrame()
    if not intervals.empty:
        shown = ["parameter", *[c for c in intervals if c.isupper()], "estimate", "low", "high", "n_seeds", "n_items"]
        print(intervals[[c for c in dict.fromkeys(shown) if c in intervals]].to_string(index=False))
        print(f"wrote {resolve_run_dir(args.out) / 'intervals.csv'}, paired.csv and figures/sweep_*.png")
    if args.collect_only:
        return 0
    return 0 if df.empty or (df["status"] == "ok").all() else 1


if __name__ == "__main__":
    sys.exit(main())
