"""A published outputs file as the candidate: an AlpacaEval `model_outputs.json` (records with `instruction`,
`output`, `generator`) matched to the eval set by instruction, so published answers can be judged again."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..params import ParameterError


def read_outputs_file(path: str | Path, parameter: str = "CANDIDATE_OUTPUTS") -> list[dict[str, Any]]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ParameterError(parameter, f"{file} does not exist", "give an AlpacaEval model_outputs.json")
    text = file.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "instruction" in r and "output" in r
                                             for r in rows):
        raise ParameterError(parameter, f"{file} is not a list of records with instruction and output",
                             "use AlpacaEval's model_outputs.json format")
    return rows


def check_unique_instructions(rows: list[dict[str, Any]], path: str | Path,
                              parameter: str = "CANDIDATE_OUTPUTS") -> None:
    """One output per instruction: with two, which one is judged would depend on the file's order."""
    counts = Counter(r["instruction"] for r in rows)
    repeated = {ins: n for ins, n in counts.items() if n > 1}
    if repeated:
        first = next(iter(repeated))
        raise ParameterError(parameter, f"{path} has {len(repeated)} instructions more than once "
                             f"({sum(repeated.values()) - len(repeated)} extra records; first: {first[:60]!r}, "
                             f"{repeated[first]} times)", "keep one output per instruction")


def candidate_outputs(path: str | Path, items: list[dict[str, Any]],
                      parameter: str = "CANDIDATE_OUTPUTS") -> tuple[list[str], str]:
    """The file's output for each eval item (by instruction) and its generator; every item must have one."""
    rows = read_outputs_file(path, parameter)
    check_unique_instructions(rows, path, parameter)
    by_instruction = {r["instruction"]: r for r in rows}
    missing = [it["instruction"][:60] for it in items if it["instruction"] not in by_instruction]
    if missing:
        raise ParameterError(parameter, f"{len(missing)} of {len(items)} eval instructions have no output in {path} "
                             f"(first: {missing[0]!r})", "use outputs for the same eval set (EVAL_SET/EVAL_SOURCE)")
    generators = sorted({str(by_instruction[it["instruction"]].get("generator", "")) for it in items})
    return [str(by_instruction[it["instruction"]]["output"] or "") for it in items], ", ".join(generators)


def generator_name(path: str | Path) -> str:
    """The generator a model_outputs.json names (what the notebook shows as the evaluated model)."""
    rows = read_outputs_file(path)
    return ", ".join(sorted({str(r.get("generator", "")) for r in rows})) or Path(path).stem
