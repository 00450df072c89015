"""What a whole run would cost before anything is spent: `python -m helpers run --config FILE --dry-run`.

Every selected stage's config is built from the parameters it would receive (the same routing and checks as a real
run), and each stage's estimate module counts its requests from the prompts it would send, its plans and its
decoding caps: stage 1 `skills.estimate`, stage 2 `generate.estimate` (the notebook's own estimate), stage 3
`sft.estimate`, stage 4 `evaluate.estimate`. Where RUN_DIR holds an earlier run, its per-request token averages
replace the estimates (a small paid run first makes the big run's estimate real). Nothing is called, nothing is
written, and missing upstream artifacts are stood in for (said in each line's note), so it runs offline in seconds.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .config import StageConfig
from .evaluate.config import EvalConfig
from .evaluate.estimate import estimate_evaluation
from .generate import estimate_generation, load_flow, load_stage1_inputs, make_plans
from .generate.config import GenerateConfig
from .generate.prompt_versions import get_version
from .layout import MANIFEST_JSON, RESULTS_JSON
from .llm.accounting import CostLine, Throughput, price_date, price_for, sum_or_unknown
from .official import SOURCES
from .params import ParameterError
from .runs import resolve_run_dir
from .sft.config import SFTStageConfig
from .sft.estimate import estimate_sft
from .skills.config import SkillExtractionConfig
from .skills.estimate import estimate_extraction
from .skills.fallbacks import shipped_fallback_skills, shipped_query_types

GENERATE = "generate"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def earlier_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, results) of an earlier run in the folder, or empty mappings; the folder is not created."""
    path = resolve_run_dir(run_dir)
    return _read(path / MANIFEST_JSON), _read(path / RESULTS_JSON)


def _usage(manifest: Mapping[str, Any], stage: str) -> dict[str, Any]:
    return (manifest.get("stages", {}).get(stage) or {}).get("accounting") or {}


def generate_lines(cfg: GenerateConfig, usage: dict[str, Any] | None = None) -> list[CostLine]:
    """Stage 2 through the notebook's own estimate (`estimate_generation`); stage 1's lists and the official prompt
    files are stood in for when they are not at hand (the shipped lists, the kit's 5-turn `paper_gpt4turbo`)."""
    notes = []
    try:
        skills, query_types = load_stage1_inputs(cfg)
    except (ParameterError, OSError):  # not written yet (stage 1 runs first) or not downloadable here
        skills, query_types = shipped_fallback_skills(), shipped_query_types()
        notes.append("stage 1's lists not there yet: the plan is drawn from the shipped lists")
    try:
        flow = load_flow(cfg)
    except ParameterError:
        flow = get_version("paper_gpt4turbo" if cfg.prompt_source == "official" else cfg.prompt_version)
        notes.append("official prompt files not at hand (INSTRUCT_SKILLMIX_REPO or network): counted with the "
                     "kit's 5-turn paper_gpt4turbo turns")
    train, heldout = make_plans(cfg, skills, query_types)
    est = estimate_generation(train + heldout, flow, model=cfg.teacher_model, max_tokens=cfg.generate_max_tokens,
                              shirker_fraction=cfg.shirker_fraction)
    typical, upper = est["typical"], est["upper_bound"]
    notes.append(f"{est['conversations']} conversations x {est['turns_per_conversation']} turns; retries of "
                 f"unparseable examples (up to MAX_ATTEMPTS={cfg.max_attempts}) not included")
    line = CostLine(GENERATE, "teacher conversations", cfg.teacher_model, requests=typical["calls"],
                    input_tokens=typical["input_tokens"], output_tokens=typical["output_tokens"],
                    output_cap_tokens=upper["output_tokens"], input_cap_tokens=upper["input_tokens"],
                    in_process=False, note="; ".join(notes))
    return [line.with_run_averages((usage or {}).get("teacher"))]


def _measured_train_speed(manifest: Mapping[str, Any], results: Mapping[str, Any], base_model: str) -> float | None:
    """Stage 3's measured training throughput in an earlier run of the same base model, else None."""
    params = (manifest.get("stages", {}).get("sft") or {}).get("params") or {}
    speed = (results.get("sft") or {}).get("train_tokens_per_s")
    return float(speed) if params.get("BASE_MODEL") == base_model and isinstance(speed, (int, float)) and speed > 0 \
        else None


def stage_lines(name: str, cfg: StageConfig, throughput: Throughput, manifest: Mapping[str, Any],
                results: Mapping[str, Any], planned: tuple[int, int]) -> list[CostLine]:
    """One stage's lines, from its own estimate module."""
    if name == "01_extract_skills":
        return estimate_extraction(cfg, _usage(manifest, "extract_skills").get("teacher"))
    if name == "02_generate":
        return generate_lines(cfg, _usage(manifest, GENERATE))
    if name == "03_sft":
        return estimate_sft(cfg, planned, throughput, _measured_train_speed(manifest, results, cfg.base_model))
    return estimate_evaluation(cfg, throughput, _usage(manifest, "evaluate"))


def planned_examples(params: Mapping[str, Any]) -> tuple[int, int]:
    """(training, held-out) examples stage 2 will plan with these parameters: what stage 3 is estimated on before
    stage 2 has written anything."""
    defaults = GenerateConfig.defaults()
    return (int(params.get("NUM_EXAMPLES", defaults["NUM_EXAMPLES"])),
            int(params.get("NUM_HELDOUT", defaults["NUM_HELDOUT"])))


OFFICIAL_PARAMETERS = {source.parameter for source in SOURCES.values()}


def estimate_config(cls: type[StageConfig], values: Mapping[str, Any]) -> tuple[StageConfig, str]:
    """The stage's config checked as for a real run, except that an official file that cannot be had here (a
    judge's prompts, the paper's prompt files: offline without a clone) does not stop the estimate: the config is
    then built unchecked and the estimate counts without that file (said in the returned note)."""
    try:
        return cls.from_params(values, inputs=False), ""
    except ParameterError as exc:
        if exc.name not in OFFICIAL_PARAMETERS:
            raise
        cfg = cls(**{k.lower(): v for k, v in values.items() if k in cls.parameter_names()})
        return cfg, f"{exc.name}'s files not at hand here: counted without them"


def estimate_stages(stages: Mapping[str, tuple[type[StageConfig], Mapping[str, Any]]], run_dir: str | Path,
                    planned: tuple[int, int], throughput: Throughput = Throughput()) -> list[CostLine]:
    """The lines of every stage in `stages` (stage name -> (config class, its parameters)), in order."""
    manifest, results = earlier_run(run_dir)
    lines: list[CostLine] = []
    for name, (cls, values) in stages.items():
        cfg, note = estimate_config(cls, values)
        stage = stage_lines(name, cfg, throughput, manifest, results, planned)
        if note and stage:
            stage[0].note = "; ".join(n for n in (stage[0].note, note) if n)
        lines.extend(stage)
    return lines


def estimate_table(lines: list[CostLine]) -> pd.DataFrame:
    """One row per part, then one total per stage and the grand total (unknown as soon as one part is)."""
    rows = [line.as_row() for line in lines]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    totals = []
    stages = list(table.groupby("stage", sort=False)) if table["stage"].nunique() > 1 else []
    for stage, group in [*stages, ("total", table)]:
        totals.append({"stage": stage, "part": "TOTAL" if stage == "total" else "stage total", "model": "",
                       "requests": int(group["requests"].sum()), "input_tokens": int(group["input_tokens"].sum()),
                       "output_tokens": int(group["output_tokens"].sum()),
                       **{col: _total(group[col]) for col in ("usd_live", "usd_batch", "usd_live_upper")},
                       "gpu_hours": round(float(group["gpu_hours"].fillna(0).sum()), 2)})
    return pd.concat([table, pd.DataFrame(totals)], ignore_index=True)


def _total(column: pd.Series) -> float | None:
    value = sum_or_unknown([None if pd.isna(v) else float(v) for v in column])
    return None if value is None else round(value, 2)


def _money(value: Any) -> str:
    return "unknown" if value is None or pd.isna(value) else f"${value:,.2f}"


def format_estimate(lines: list[CostLine], throughput: Throughput) -> str:
    """The table as plain text, with what the figures assume."""
    table = estimate_table(lines)
    if table.empty:
        return "nothing to estimate"
    local = table["in_process"].eq(True)

    def money(column: str) -> list[str]:
        return ["local" if here else _money(value) for value, here in zip(table[column], local)]

    shown = pd.DataFrame({
        "stage": table["stage"], "part": table["part"], "model": table["model"],
        "requests": table["requests"].map("{:,}".format),
        "input tok": table["input_tokens"].map("{:,}".format), "output tok": table["output_tokens"].map("{:,}".format),
        "$ live": money("usd_live"), "$ batch": money("usd_batch"), "$ live, caps": money("usd_live_upper"),
        "GPU-h": table["gpu_hours"].map(lambda v: "" if v is None or pd.isna(v) or v == 0 else f"{v:,.2f}")})
    notes = [f"  {row.stage} / {row.part}: {row.note}" for row in table.itertuples() if isinstance(row.note, str)
             and row.note]
    basis = sorted({b for b in table.get("basis", pd.Series(dtype=str)).dropna() if b})
    models = sorted({line.model for line in lines if not line.in_process and line.requests})
    dated = ", ".join(f"{m} {price_date(m) or 'undated'}" for m in models if price_for(m) is not None
                      and price_date(m) is not None)
    return "\n".join([
        "Dry run: no model was called, nothing was written.", shown.to_string(index=False), "",
        "Dollars at helpers/llm/prices.yaml ('unknown': the model has no price there; a total with an unknown part "
        "is unknown). '$ live, caps': every reply at its token cap, the upper bound."
        + (f" Prices as of: {dated}." if dated else ""),
        f"GPU-hours assume {throughput.describe()} (--assume-tokens-per-s, --assume-train-tokens-per-s); parts run on "
        "your own machine ('local': training, in-process answering) add no dollars to the totals.", "Token counts: " + "; ".join(basis) + ".",
        "Notes:", *notes])


STAGE_NAMES: dict[type, str] = {SkillExtractionConfig: "01_extract_skills", GenerateConfig: "02_generate",
                                SFTStageConfig: "03_sft", EvalConfig: "04_eval_ablations"}


def recorded_plan(manifest: Mapping[str, Any]) -> tuple[int, int]:
    """(training, held-out) examples stage 2 planned in this run folder, else its defaults."""
    return planned_examples((manifest.get("stages", {}).get(GENERATE) or {}).get("params") or {})


def stage_estimate(cfg: StageConfig, throughput: Throughput = Throughput()) -> pd.DataFrame:
    """One stage's estimate as a table with its total: what a notebook shows before it spends anything (and all it
    does with DRY_RUN=True). Reads RUN_DIR's earlier run for token averages, writes nothing."""
    manifest, results = earlier_run(cfg.run_dir)
    name = STAGE_NAMES[type(cfg)]
    return estimate_table(stage_lines(name, cfg, throughput, manifest, results, recorded_plan(manifest)))


def estimate_view(table: pd.DataFrame) -> pd.DataFrame:
    """The estimate as a notebook shows it: blanks for what does not apply, the bookkeeping columns left out."""
    shown = table.drop(columns=["basis", "in_process"], errors="ignore").astype(object)
    return shown.where(shown.notna(), "")
