"""Command line: `python -m helpers run|params|html|report|compare ...` (also installed as `ism`).

    python -m helpers run --run-dir runs/demo                       # all four stages, embedded defaults
    python -m helpers run --run-dir runs/x --config my.yaml -p NUM_EXAMPLES 1000 --only 02_generate
    python -m helpers run --config configs/paper.yaml --dry-run     # requests, tokens, dollars, GPU-hours; no call
    python -m helpers params                                        # every parameter: stages, default, help
    python -m helpers run --run-dir runs/p --config configs/paper.yaml --executor slurm --slurm-profile configs/slurm/paper.yaml
    python -m helpers status --run-dir runs/p                      # its Slurm jobs: pending, running, done, failed
    python -m helpers score-alpaca-eval annotations.json --glm v1   # the leaderboard's win rate and LC
    python -m helpers html --run-dir runs/demo                      # executed notebooks -> HTML
    python -m helpers report --run-dir runs/demo                    # one self-contained page: runs/demo/report.html
    python -m helpers compare runs/a runs/b [--plot cmp]            # recorded results side by side
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
from typing import Any

from nbclient.exceptions import DeadKernelError

from . import report
from .config import merge_overrides, parse_value, read_params_file
from .diskspace import DiskFull
from .params import ParameterError
from .llm.accounting import Throughput
from .pipeline import (NOTEBOOKS, NotebookFailed, dry_run_pipeline, export_html, parameter_table, run_pipeline,
                       timing_lines)
from .runs import Run, resolve_run_dir


def load_params(config: str | None, pairs: list[list[str]] | None) -> dict[str, Any]:
    """A run config (YAML `NAME: value`), then `-p NAME VALUE` pairs (YAML values: `8` is an int, `''` empty)."""
    params = read_params_file(config) if config else {}
    return merge_overrides(params, {name: parse_value(value, name) for name, value in pairs or []})


def format_parameter_table(rows: list[dict[str, str]], width: int | None = None) -> str:
    """One line per parameter (name, stages, default), its help wrapped below the default column."""
    width = width or shutil.get_terminal_size((120, 20)).columns
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in ("name", "stages")}
    widths["default"] = min(28, max(len(row["default"]) for row in rows))
    lead = sum(widths.values()) + 6
    lines = [f"{'name':<{widths['name']}}  {'stages':<{widths['stages']}}  {'default':<{widths['default']}}  help"]
    for row in rows:
        default = row["default"] if len(row["default"]) <= widths["default"] else row["default"][:widths["default"] - 3] + "..."
        wrapped = textwrap.wrap(row["help"], max(width - lead, 30)) or [""]
        lines.append(f"{row['name']:<{widths['name']}}  {row['stages']:<{widths['stages']}}  "
                     f"{default:<{widths['default']}}  {wrapped[0]}")
        lines.extend(" " * lead + more for more in wrapped[1:])
    return "\n".join(lines)


def _select(only: str | None, start: str | None) -> list[str]:
    names = list(NOTEBOOKS)
    if only:
        wanted = [w.strip() for w in only.split(",") if w.strip()]
        names = [n for n in names if any(n.startswith(w) for w in wanted)]
    if start:
        idx = next((i for i, n in enumerate(names) if n.startswith(start)), None)
        if idx is None:
            raise ParameterError("--from", f"{start!r} matches no notebook", f"use one of {', '.join(NOTEBOOKS)}")
        names = names[idx:]
    if not names:
        raise ParameterError("--only", f"{only!r} matches no notebook", f"use prefixes such as 01,02 or names from {', '.join(NOTEBOOKS)}")
    return names


def _add_score_alpaca_eval(sub: Any) -> None:
    s = sub.add_parser("score-alpaca-eval", help="win rate and LC of an alpaca_eval annotations.json, as the leaderboard")
    s.add_argument("annotations", help="annotations.json as alpaca_eval writes it (one model vs one reference)")
    s.add_argument("--glm", default="v1", choices=["v1", "minimal"], help="v1 = the leaderboard's LC; minimal = no GLM data")
    s.add_argument("--glm-data", default="", help="folder with df_gamed.csv (default: $AE_GLM_DATA, else the hub)")


def _score_alpaca_eval(args: argparse.Namespace) -> int:
    from .judge.alpaca_eval_glm import score_annotations_file  # fits with sklearn: imported only for this command

    print(json.dumps(score_annotations_file(args.annotations, args.glm, args.glm_data), indent=2))
    return 0


def _dry_run(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """Print what the run would cost; RUN_DIR is read (an earlier run's averages), never written. The Hugging Face
    hub is read from its local cache only, so the estimate takes seconds offline (a set not cached is counted at
    its published size)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from .dry_run import format_estimate  # pandas formatting: only for this command

    for name, value in (("--assume-tokens-per-s", args.assume_tokens_per_s),
                        ("--assume-train-tokens-per-s", args.assume_train_tokens_per_s)):
        if not value > 0:
            raise ParameterError(name, f"{value} is not a positive throughput", "give tokens per second, e.g. 2500")
    throughput = Throughput(args.assume_tokens_per_s, args.assume_train_tokens_per_s)
    run_dir = args.run_dir or str(params.get("RUN_DIR") or "runs/dry-run")
    lines = dry_run_pipeline(run_dir, params, _select(args.only, args.start), throughput)
    print(format_estimate(lines, throughput))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute the stage notebooks with papermill into a run folder")
    r.add_argument("--run-dir", help="the run folder (created if missing); optional with --dry-run")
    r.add_argument("--config", help="YAML file of NAME: value parameters")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="one parameter (YAML value)")
    r.add_argument("--only", help="comma-separated notebook prefixes to run, e.g. 02,03")
    r.add_argument("--from", dest="start", help="start at this notebook (prefix), e.g. 03")
    r.add_argument("--log-output", action="store_true", help="also log every cell output (tables, figures as text)")
    r.add_argument("--quiet", action="store_true", help="no stage progress lines, only papermill's cell counter")
    r.add_argument("--html", action="store_true", help="also export the executed notebooks to HTML and write report.html")
    r.add_argument("--dry-run", action="store_true", help="call no model, write nothing: print per stage and in total "
                   "the requests, tokens, dollars (live and Batch API) and GPU-hours (also: -p DRY_RUN true)")
    defaults = Throughput()
    r.add_argument("--assume-tokens-per-s", type=float, default=defaults.answer_tokens_per_s,
                   help="dry run: generated tokens per second of in-process answering (default: %(default)s, a 7-8B "
                        "model with vLLM on one A100/H100-class GPU)")
    r.add_argument("--assume-train-tokens-per-s", type=float, default=defaults.train_tokens_per_s,
                   help="dry run: training tokens per second per GPU (default: %(default)s, a 7-8B full fine-tune)")
    r.add_argument("--executor", choices=["local", "slurm"], default="local", help="local: run here; slurm: submit "
                   "one job per stage, chained (SLURM_* parameters; docs/scaling.md)")
    r.add_argument("--slurm-profile", help="YAML of SLURM_* parameters, e.g. configs/slurm/paper.yaml")
    sub.add_parser("params", help="list every parameter: the stages that take it, its default and its help")
    st = sub.add_parser("status", help="a run folder's (or sweep folder's) Slurm jobs: pending, running, requeued, "
                                       "done, failed with the log's last lines")
    st.add_argument("--run-dir", required=True)
    h = sub.add_parser("html", help="export a run folder's executed notebooks to HTML")
    h.add_argument("--run-dir", required=True)
    report.add_commands(sub)
    _add_score_alpaca_eval(sub)
    args = ap.parse_args(argv)
    try:
        if args.cmd in ("report", "compare", "score-alpaca-eval"):
            return _read_only_command(args)
        if args.cmd == "params":
            from .cluster import slurm_parameter_rows

            print(format_parameter_table(parameter_table() + slurm_parameter_rows()))
            return 0
        if args.cmd == "status":
            from .slurm_driver import show_status

            return show_status(resolve_run_dir(args.run_dir))
        if args.cmd == "html":
            for path in export_html(args.run_dir):
                print(path)
            return 0
        params = load_params(args.config, args.param)
        if args.executor == "slurm":
            from .slurm_driver import submit_run

            return submit_run(args.run_dir, params, _select(args.only, args.start), args.slurm_profile, args.dry_run)
        if args.dry_run or params.get("DRY_RUN") is True:
            return _dry_run(args, params)
        if not args.run_dir:
            raise ParameterError("--run-dir", "is missing", "give the run folder, e.g. --run-dir runs/demo")
        executed = run_pipeline(args.run_dir, params, _select(args.only, args.start), log_output=args.log_output,
                                stream_progress=not args.quiet)
        run_dir = resolve_run_dir(args.run_dir)
        timing = timing_lines(Run(run_dir), [p.stem for p in executed])
        if timing:
            print("\nWhere the time went (manifest.json: stages.<stage>.timing, stages._pipeline):")
            print("\n".join(f"  {line}" for line in timing))
        print(f"\nDone. Run folder: {run_dir}")
        print(f"  executed notebooks: {run_dir / 'notebooks'} ({len(executed)})")
        print(f"  figures:            {run_dir / 'figures'}")
        print(f"  manifest:           {run_dir / 'manifest.json'}")
        print(f"  recorded results:   {run_dir / 'results.json'}")
        if args.html:
            for path in export_html(run_dir):
                print(f"  html: {path}")
            print(f"  report:             {report.write_report(run_dir)}")
        return 0
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DiskFull as exc:  # one line: the folder and the space to free, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); the same command resumes the run where it stopped", file=sys.stderr)
        return 130
    except DeadKernelError:
        print("error: the notebook's kernel died (interrupted with Ctrl-C, or out of memory); the same command "
              "resumes the run where it stopped", file=sys.stderr)
        return 1


def _read_only_command(args: argparse.Namespace) -> int:
    """`report`, `compare`, `score-alpaca-eval`: they only read files, so a file they cannot read (missing, torn,
    of another shape) is one line naming it, never a traceback."""
    try:
        if args.cmd == "score-alpaca-eval":
            return _score_alpaca_eval(args)
        return report.run_command(args)
    except ParameterError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"error: {args.cmd} could not use its input ({exc.__class__.__name__}: {exc})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
