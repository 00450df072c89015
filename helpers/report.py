"""Share a run as one page, and put several runs side by side.

    python -m helpers report --run-dir runs/demo          # -> runs/demo/report.html
    python -m helpers compare runs/a runs/b [--plot cmp]  # recorded results side by side (cmp.png / cmp.svg)

`report.html` is self-contained: the figures are embedded (base64 PNG), there is no script, stylesheet or font to
fetch, and the executed notebooks are linked relatively, so the run folder can be zipped, sent and opened from disk.
It leads with the finding (`headline_table`: student vs base vs reference, each number with its judge and item
count), then the figures, the parameters that differ from the notebooks' defaults and the models; every number in
`results.json` with the judge, prompt source and item count recorded for it follows, collapsed, then the
accounting. Only files are read here: the page is built from what the stages wrote.
"""
from __future__ import annotations

import argparse
import ast
import base64
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from .evaluate.config import STAGE as EVAL_STAGE
from .evaluate.record import STUDENT
from .figures import apply_theme, save_figure_files
from .jsonl import read_json_object
from .pipeline import NOTEBOOKS, notebook_parameters
from .runs import resolve_run_dir

# Which parameter of the evaluation stage names the judge of a metric (by the metric's name).
_JUDGE_PARAMETER = (("mt_bench", "MT_BENCH_JUDGE"), ("wb_reward", "WB_REWARD_JUDGE"), ("wb_", "WILDBENCH_JUDGE"), ("win_rate", "PAIRWISE_JUDGE"),
                    ("shirker", "PAIRWISE_JUDGE"))
HEADLINE = ("win_rate", "lc_win_rate", "mt_bench_avg", "wb_score")


def _read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON file as an object ({} when the stage never wrote it); a torn or foreign one is a
    ParameterError naming it."""
    return read_json_object(path, "--run-dir", dict, "a JSON object as the kit writes it") if path.exists() else {}


def _literal(text: Any) -> Any:
    """A parameters-cell default expression as a value (the expression itself when it is not a literal)."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def notebook_defaults() -> dict[str, dict[str, Any]]:
    """Each stage notebook's parameters cell (papermill inspect), as values."""
    return {nb: {k: _literal(v) for k, v in notebook_parameters(nb).items()} for nb in NOTEBOOKS}


def changed_parameters(run_dir: str | Path, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Parameters of the executed notebooks that differ from the defaults (RUN_DIR left out): the values papermill
    injected, from each executed notebook's metadata."""
    run = resolve_run_dir(run_dir)
    defaults = notebook_defaults() if defaults is None else defaults
    rows = []
    for path in sorted((run / "notebooks").glob("*.ipynb")):
        given = _read_json(path).get("metadata", {}).get("papermill", {}).get("parameters") or {}
        declared = defaults.get(path.stem, {})
        for name, value in given.items():
            if name == "RUN_DIR":
                continue
            default = declared.get(name, "(not a parameter of this notebook)")
            if value != default:
                rows.append({"notebook": path.stem, "parameter": name, "value": value, "default": default})
    return pd.DataFrame(rows, columns=["notebook", "parameter", "value", "default"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _judge_context(stage_info: Mapping[str, Any], name: str) -> tuple[str, str]:
    """(judge, prompt source) recorded in the manifest for a metric of this stage, or empty strings."""
    judges = stage_info.get("judges") or {}
    parameter = next((p for key, p in _JUDGE_PARAMETER if key in name), None)
    named_only = (stage_info.get("params") or {}).get(parameter)  # a judge the manifest names by parameter only
    if parameter is None or (parameter not in judges and not named_only):
        return "", ""
    config = judges.get(parameter) or {"name": named_only}
    model = ((stage_info.get("models") or {}).get("judge") or {}).get("model", "")
    judge = " / ".join(str(x) for x in (config.get("name") or parameter, model) if x)
    source = config.get("prompt_source", "")
    if isinstance(source, Mapping):
        source = ", ".join(f"{k}: {v}" for k, v in source.items() if isinstance(v, (str, int, float)))
    return judge, str(source)


def _item_count(named: Mapping[str, Any], stage_params: Mapping[str, Any], name: str) -> Any:
    if "mt_bench" in name:
        return stage_params.get("N_MT_BENCH", "")
    for key in ("n_eval", "n_items", "n_scored"):
        if _is_number(named.get(key)):
            return named[key]
    return ""


def _flatten(prefix: str, value: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Nested dicts as dotted names: {"a": {"b": 1}} under 'x' -> [('x.a.b', 1)]."""
    out = []
    for key, item in value.items():
        label = f"{prefix}.{key}"
        out += _flatten(label, item) if isinstance(item, Mapping) else [(label, item)]
    return out


def recorded_numbers(run_dir: str | Path) -> pd.DataFrame:
    """Every number in results.json: (stage, name, value, judge, prompt_source, n_items). A recorded dict gives
    one row per number in it (or one row when it is `{"value": ..., "judge": ..., ...}`); lists of records (tables)
    are left to `recorded_tables`."""
    run = resolve_run_dir(run_dir)
    results = _read_json(run / "results.json")
    stages = _read_json(run / "manifest.json").get("stages", {})
    rows = []
    for stage, named in results.items():
        if not isinstance(named, Mapping):
            continue
        info = stages.get(stage, {})
        for name, value in named.items():
            entries: list[tuple[str, Any, Mapping[str, Any]]] = []
            if isinstance(value, Mapping) and "value" in value:
                entries.append((name, value["value"], value))
            elif isinstance(value, Mapping):
                entries += [(label, v, {}) for label, v in _flatten(name, value)]
            else:
                entries.append((name, value, {}))
            for label, number, context in entries:
                if not (_is_number(number) or number is None):
                    continue
                judge, source = _judge_context(info, label)
                items = _item_count(named, info.get("params") or {}, label)
                rows.append({"stage": stage, "name": label,
                             "value": None if number is None or (isinstance(number, float) and math.isnan(number))
                             else number,
                             "judge": context.get("judge", judge), "prompt_source": context.get("prompt_source", source),
                             "n_items": next((context[k] for k in ("n_items", "n", "n_scored") if k in context), items)})
    return pd.DataFrame(rows, columns=["stage", "name", "value", "judge", "prompt_source", "n_items"])


def recorded_tables(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Recorded lists of records (e.g. the shirker probe) as tables, keyed 'stage.name'."""
    results = _read_json(resolve_run_dir(run_dir) / "results.json")
    return {f"{stage}.{name}": pd.DataFrame(value) for stage, named in results.items() if isinstance(named, Mapping)
            for name, value in named.items()
            if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)}


# ------------------------------------------------------------------------------------------------ the headline

# The rows of the headline table: (metric as recorded by stage 4, what the row is called).
HEADLINE_ROWS = (("win_rate", "win rate vs reference, % [95 % interval]"), ("lc_win_rate", ""),
                 ("mt_bench_avg", "MT-Bench, 1-10"),
                 ("mt_bench_weighted_avg", "MT-Bench, 1-10, probability-weighted (G-Eval; not a parsed grade)"),
                 ("wb_score", "WB-Score"),
                 ("wb_score_weighted", "WB-Score, probability-weighted (G-Eval; not a parsed grade)"),
                 ("wb_reward", "WB-Reward"))
_NOT_ANSWERERS = ("judge", "reference", "teacher")  # roles of stage 4's manifest that answer no eval item


def _unwrap(value: Any) -> tuple[Any, Mapping[str, Any]]:
    """(number, small-number context) of a recorded value, plain or `{"value", "n", "n_total", "flag"}`."""
    if isinstance(value, Mapping) and "value" in value:
        return value["value"], value
    return value, {}


def evaluated_models(named: Mapping[str, Any], roles: Sequence[str]) -> list[str]:
    """The student first, then every other model that answered in stage 4 (its roles in the manifest, e.g. `base`)
    and has a headline number recorded (`win_rate_base`, ...)."""
    others = [role for role in roles if role not in (STUDENT, *_NOT_ANSWERERS)
              and any(f"{metric}_{role}" in named for metric, _ in HEADLINE_ROWS)]
    return [STUDENT, *others]


def _recorded(named: Mapping[str, Any], metric: str, model: str) -> Any:
    if model == STUDENT:
        return named.get(metric, named.get(f"{metric}_{STUDENT}"))
    return named.get(f"{metric}_{model}")


def _count(named: Mapping[str, Any], params: Mapping[str, Any], metric: str, model: str,
           context: Mapping[str, Any]) -> str:
    """How many items a number rests on, as the page says it: from its flag when it has one, else from the counts
    stage 4 recorded beside it."""
    if context:
        return str(context.get("flag") or f"n={context.get('n')} of {context.get('n_total')}")
    suffix = "" if model == STUDENT else f"_{model}"
    if metric in ("win_rate", "lc_win_rate") and _is_number(named.get("n_eval")):
        unread = named.get(f"n_unparsed_{model}", 0)
        return f"n={named['n_eval'] - unread if _is_number(unread) else named['n_eval']}"
    if metric == "wb_score" and _is_number(named.get("n_eval")) and _is_number(named.get(f"wb_unparsed{suffix}")):
        return f"n={named['n_eval'] - named[f'wb_unparsed{suffix}']}"
    if metric == "mt_bench_avg" and params.get("N_MT_BENCH"):
        return f"{params['N_MT_BENCH']} questions"
    return ""


def _headline_cell(named: Mapping[str, Any], params: Mapping[str, Any], metric: str, model: str) -> str:
    value, context = _unwrap(_recorded(named, metric, model))
    if not _is_number(value):
        return "–" if value is None and not context else str(value or "–")
    text = f"{value:.2f}" if metric.startswith("mt_bench") else f"{value:.1f}"
    if metric == "win_rate":
        se, _ = _unwrap(_recorded(named, "win_rate_se", model))
        if _is_number(se):
            text += f" [{max(0.0, value - 1.96 * se):.1f}, {min(100.0, value + 1.96 * se):.1f}]"
    count = _count(named, params, metric, model, context)
    return f"{text} ({count})" if count else text


def headline_table(run_dir: str | Path) -> pd.DataFrame:
    """The finding of the run: one row per headline metric stage 4 recorded (win rate with its 95 % interval, LC
    under its label, MT-Bench, WB-Score, WB-Reward), its judge, and one column per model: the student, every other
    evaluated model (the base model), and the reference the win rates are measured against (50 % by definition).
    Empty when the evaluation stage recorded nothing."""
    run = resolve_run_dir(run_dir)
    named = _read_json(run / "results.json").get(EVAL_STAGE) or {}
    info = (_read_json(run / "manifest.json").get("stages") or {}).get(EVAL_STAGE, {})
    params = info.get("params") or {}
    models = evaluated_models(named, list(info.get("models") or {}))
    reference = f"reference ({info.get('reference', '?')})"
    rows = []
    for metric, label in HEADLINE_ROWS:
        if not any(_recorded(named, metric, m) is not None for m in models):
            continue
        judge, source = _judge_context(info, metric)
        row = {"metric": label or str(named.get("lc_label") or "LC win rate") + ", %",
               "judge": f"{judge} ({source})" if source else judge}
        row.update({m: _headline_cell(named, params, metric, m) for m in models})
        row[reference] = "50 (baseline)" if metric in ("win_rate", "lc_win_rate") else "–"
        rows.append(row)
    return pd.DataFrame(rows, columns=["metric", "judge", *models, reference] if rows else [])


# ------------------------------------------------------------------------------------------------ the page

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figcaption{font-size:.8em;color:#555}
img{max-width:520px;border:1px solid #eee}.muted{color:#777;font-size:.85em}
summary{cursor:pointer;color:#555}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    if value is None:
        return '<td class="num">–</td>'
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return f"<td>{html.escape(text)}</td>"


def html_table(df: pd.DataFrame, empty: str = "none") -> str:
    if df is None or df.empty:
        return f'<p class="muted">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _figures_html(run: Path) -> str:
    parts = []
    for png in sorted((run / "figures").glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(png.stem)}</figcaption></figure>")
    return "".join(parts) or '<p class="muted">no figures</p>'


def _notebook_links(run: Path) -> str:
    items = []
    for nb in sorted((run / "notebooks").glob("*.ipynb")):
        exported = nb.with_suffix(".html")
        links = [f'<a href="notebooks/{html.escape(nb.name)}">{html.escape(nb.name)}</a>']
        if exported.exists():
            links.append(f'<a href="notebooks/{html.escape(exported.name)}">HTML</a>')
        items.append(f"<li>{' · '.join(links)}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">no executed notebooks</p>'


def _manifest_tables(manifest: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    models, accounting = [], []
    for stage, info in (manifest.get("stages") or {}).items():
        for role, desc in (info.get("models") or {}).items():
            desc = desc if isinstance(desc, Mapping) else {"model": desc}
            models.append({"stage": stage, "role": role, "model": desc.get("model", ""),
                           "backend": desc.get("backend", ""),
                           "details": {k: v for k, v in desc.items() if k not in ("model", "backend")}})
        for role, usage in (info.get("accounting") or {}).items():
            accounting.append({"stage": stage, "role": role, **{k: v for k, v in (usage or {}).items()
                                                                 if _is_number(v) or v is None}})
    return pd.DataFrame(models), pd.DataFrame(accounting)


def _calibration_html(results: Mapping[str, Any]) -> str:
    """Stage 4's calibration row read as a sentence (the paper's model under this run's judge beside the student),
    when the run has one."""
    reading = (results.get("evaluate") or {}).get("calibration")
    if not isinstance(reading, Mapping) or not reading.get("text"):
        return ""
    return (f"<h2>Calibration row</h2><p>{html.escape(str(reading['text']))}</p><p class=\"muted\">Numbers from a "
            "judge other than the paper's are read against this row, not against the paper's table.</p>")


def build_report(run_dir: str | Path, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The HTML of the run's one-page report."""
    run = resolve_run_dir(run_dir)
    manifest = _read_json(run / "manifest.json")
    models, accounting = _manifest_tables(manifest)
    timings = pd.DataFrame([{"notebook": nb, "seconds": info.get("seconds")}
                            for nb, info in (manifest.get("stages", {}).get("_pipeline") or {}).items()
                            if isinstance(info, Mapping)])
    tables = "".join(f"<h3>{html.escape(name)}</h3>{html_table(df)}" for name, df in recorded_tables(run).items())
    versions = ", ".join(f"{k} {v}" for k, v in (manifest.get("versions") or {}).items() if v)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Run report: {html.escape(run.name)}</title>
<style>{_STYLE}</style></head><body>
<h1>Run report: {html.escape(run.name)}</h1>
<p class="muted">created {html.escape(str(manifest.get("created", "?")))} · git {html.escape(str(manifest.get("git_commit")))}
· {html.escape(versions)}</p>
<h2>Headline</h2>
<p class="muted">Win rates are against the reference's answers (50 % = as good as the reference, for this judge); a
number is comparable only with numbers from the same judge on the same items; n is the items it rests on.</p>
{html_table(headline_table(run), "no evaluation recorded")}
{_calibration_html(_read_json(run / "results.json"))}
<h2>Figures</h2>
{_figures_html(run)}
<h2>Parameters that differ from the notebooks' defaults</h2>
{html_table(changed_parameters(run, defaults), "all parameters at their defaults")}
<h2>Models</h2>
{html_table(models, "no models recorded")}
<h2>Recorded numbers</h2>
<details><summary>Every number in results.json, with its judge, prompt source and item count</summary>
{html_table(recorded_numbers(run), "no recorded numbers")}
{tables}
</details>
<h2>Accounting</h2>
{html_table(accounting, "no accounting recorded")}
<h2>Stage times</h2>
{html_table(timings, "not run by the pipeline driver")}
<h2>Executed notebooks</h2>
{_notebook_links(run)}
</body></html>
"""


def write_report(run_dir: str | Path, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write RUN_DIR/report.html and return its path."""
    run = resolve_run_dir(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run folder {run}")
    target = run / "report.html"
    target.write_text(build_report(run, defaults), encoding="utf-8")
    return target


# ------------------------------------------------------------------------------------------------ compare

def compare_runs(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per recorded number (stage.name), one column per run (named by its folder)."""
    columns = {}
    for run_dir in run_dirs:
        numbers = recorded_numbers(run_dir)
        label = resolve_run_dir(run_dir).name
        while label in columns:
            label += "'"
        columns[label] = pd.Series(numbers["value"].to_numpy(), index=numbers["stage"] + "." + numbers["name"],
                                   dtype=object)
    table = pd.DataFrame(columns)
    table.index.name = "result"
    return table


def plot_comparison(table: pd.DataFrame, metrics: Sequence[str] | None = None):
    """Bars per run for the headline metrics present (or `metrics`), one panel each."""
    apply_theme()
    if metrics is None:
        metrics = [i for i in table.index if i.split(".", 1)[-1] in HEADLINE] or list(table.index[:4])
    metrics = [m for m in metrics if m in table.index]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.2 * max(1, len(metrics)), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = pd.to_numeric(table.loc[metric], errors="coerce")
        ax.bar(range(len(values)), values.fillna(0).to_numpy(), color=[f"C{i}" for i in range(len(values))])
        ax.set_xticks(range(len(values)), [str(c) for c in values.index], rotation=20, ha="right")
        ax.set_title(metric, fontsize=9)
    if not metrics:
        axes[0][0].text(0.5, 0.5, "no recorded numbers in common", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    return fig


def add_commands(sub: Any) -> None:
    """The `report` and `compare` subcommands of `python -m helpers`."""
    rep = sub.add_parser("report", help="write RUN_DIR/report.html, a self-contained page of the run")
    rep.add_argument("--run-dir", required=True)
    cmp_ = sub.add_parser("compare", help="print the recorded results of several runs side by side")
    cmp_.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp_.add_argument("--plot", metavar="STEM", help="also save the headline metrics as STEM.png and STEM.svg")


def run_command(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """Carry out `report` / `compare`; 2 when a run folder is missing."""
    missing = [d for d in ([args.run_dir] if args.cmd == "report" else args.run_dirs) if not resolve_run_dir(d).is_dir()]
    if missing:
        out(f"error: no run folder {resolve_run_dir(missing[0])}")
        return 2
    if args.cmd == "report":
        out(str(write_report(args.run_dir)))
        return 0
    table = compare_runs(args.run_dirs)
    with pd.option_context("display.max_rows", None, "display.width", 200):
        out(table.to_string())
    if args.plot:
        for path in save_figure_files(plot_comparison(table), Path(args.plot)):
            out(f"wrote {path}")
    return 0
