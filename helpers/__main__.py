"""Command line: `python -m helpers run|params|html|report|compare ...` (also installed as `ism`).

    python -m helpers run --run-dir runs/demo                       # all four stages, embedded defaults
    python -m helpers run --run-dir runs/x --config my.yaml -p NUM_EXAMPLES 1000 --only 02_generate
    python -m helpers params                                        # every notebook parameter and its default
    python -m helpers html --run-dir runs/demo                      # executed notebooks -> HTML
    python -m helpers report --run-dir runs/demo                    # one self-contained page: runs/demo/report.html
    python -m helpers compare runs/a runs/b [--plot cmp]            # recorded results side by side
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from . import report
from .params import ParameterError
from .pipeline import NOTEBOOKS, NotebookFailed, export_html, notebook_parameters, run_pipeline
from .runs import resolve_run_dir


def _parse_value(text: str) -> Any:
    """`-p NUM_EXAMPLES 8` gives an int, `-p TEACHER_BASE_URL ''` an empty string: YAML rules."""
    value = yaml.safe_load(text)
    return "" if value is None else value


def load_params(config: str | None, pairs: list[list[str]] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if config:
        data = yaml.safe_load(Path(config).read_text()) or {}
        if not isinstance(data, dict):
            raise ParameterError("--config", f"{config} is not a mapping of NAME: value", "write one `NAME: value` per line")
        params.update(data)
    for name, value in pairs or []:
        params[name] = _parse_value(value)
    return params


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute the stage notebooks with papermill into a run folder")
    r.add_argument("--run-dir", required=True, help="the run folder (created if missing)")
    r.add_argument("--config", help="YAML file of NAME: value parameters")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="one parameter (YAML value)")
    r.add_argument("--only", help="comma-separated notebook prefixes to run, e.g. 02,03")
    r.add_argument("--from", dest="start", help="start at this notebook (prefix), e.g. 03")
    r.add_argument("--log-output", action="store_true", help="also log every cell output (tables, figures as text)")
    r.add_argument("--quiet", action="store_true", help="no stage progress lines, only papermill's cell counter")
    r.add_argument("--html", action="store_true", help="also export the executed notebooks to HTML and write report.html")
    sub.add_parser("params", help="list every notebook parameter with its default")
    h = sub.add_parser("html", help="export a run folder's executed notebooks to HTML")
    h.add_argument("--run-dir", required=True)
    report.add_commands(sub)
    args = ap.parse_args(argv)
    if args.cmd in ("report", "compare"):
        return report.run_command(args)

    try:
        if args.cmd == "params":
            print(json.dumps({nb: notebook_parameters(nb) for nb in NOTEBOOKS}, indent=2))
            return 0
        if args.cmd == "html":
            for path in export_html(args.run_dir):
                print(path)
            return 0
        params = load_params(args.config, args.param)
        executed = run_pipeline(args.run_dir, params, _select(args.only, args.start), log_output=args.log_output,
                                stream_progress=not args.quiet)
        run_dir = resolve_run_dir(args.run_dir)
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
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
