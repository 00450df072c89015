"""Tokenise SFT examples with the loss on the response only (prompt masked, response + end-of-turn learned).

The kit tokenises itself instead of letting TRL render the chat: the prompt and the response are tokenised
separately and concatenated, so a training sequence starts with exactly the ids the model is given at inference
(``render_prompt`` tokenised without special tokens, as ``helpers.llm.client`` does) and no token can merge across the
prompt/response boundary. Labels are -100 on the prompt and equal to the ids on the response and its end-of-turn
token. TRL's ``SFTTrainer`` uses a ``labels`` column as is (it only truncates, drops fully masked rows and packs).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..generate.files import load_training_data, records_to_dataset
from ..jsonl import JSONLError, read_jsonl
from ..layout import HELDOUT_JSONL, TRAIN_JSONL
from ..params import ParameterError
from .templates import record_to_messages, render_conversation, render_prompt

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    """One training sequence and why it looks the way it does."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    truncated: bool

    @property
    def learned_positions(self) -> list[int]:
        return [i for i, label in enumerate(self.labels) if label != IGNORE_INDEX]


def tokenize_messages(tokenizer: Any, messages: list[dict[str, str]], max_length: int | None = None,
                      end_of_turn: str | None = None, learn_header: bool = False) -> TokenizedExample:
    """Prompt ids (masked) followed by response ids (learned); truncated at the end to `max_length`.

    With `learn_header` the assistant turn's header is learned with the response (torchtune's Llama-3 masking): the
    masked part then ends where the user turn ends, before the generation prompt.

    With `end_of_turn` given, the sequence ends right after the last end-of-turn token: the separator a template
    writes between turns is not trained, so the last learned token is the one that stops generation.

    Truncation keeps the start (as TRL does): an over-long example loses the end of its response and therefore its
    end-of-turn token; `truncated` says so, and the notebook reports how many examples it hit.
    """
    prompt_text = (render_conversation(tokenizer, messages[:-1]) if learn_header
                   else render_prompt(tokenizer, messages[:-1]))
    full_text = render_conversation(tokenizer, messages)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently from the full conversation")
    completion_text = full_text[len(prompt_text):]
    if end_of_turn and end_of_turn in completion_text:
        completion_text = completion_text[: completion_text.rindex(end_of_turn) + len(end_of_turn)]
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    input_ids = list(prompt_ids) + list(completion_ids)
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(completion_ids)
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return TokenizedExample(input_ids, labels, len(prompt_ids), truncated)


def tokenize_record(tokenizer: Any, record: dict[str, Any], max_length: int | None = None,
                    end_of_turn: str | None = None, learn_header: bool = False) -> TokenizedExample:
    return tokenize_messages(tokenizer, record_to_messages(record), max_length, end_of_turn, learn_header)


def tokenize_dataset(dataset: Any, tokenizer: Any, max_length: int | None, end_of_turn: str | None = None,
                     desc: str = "tokenising", learn_header: bool = False) -> Any:
    """A `datasets.Dataset` with `input_ids`, `labels`, `prompt_length`, `truncated` (other columns dropped)."""

    def _one(record: dict[str, Any]) -> dict[str, Any]:
        ex = tokenize_record(tokenizer, record, max_length, end_of_turn, learn_header)
        return {"input_ids": ex.input_ids, "labels": ex.labels, "prompt_length": ex.prompt_length,
                "truncated": ex.truncated}

    return dataset.map(_one, remove_columns=list(dataset.column_names), desc=desc)


def check_training_records(dataset: Any, parameter: str) -> None:
    """Fail fast on an empty dataset or one without the official `instruction` / `output` fields."""
    if dataset is None or len(dataset) == 0:
        raise ParameterError(parameter, "the dataset is empty",
                             "run stage 2 (notebooks/02_generate.ipynb) first, or point it at a file with examples")
    missing = {"instruction", "output"} - set(dataset.column_names)
    if missing:
        raise ParameterError(parameter, f"records lack the field(s) {sorted(missing)}",
                             "use the official format: records with 'instruction', 'input' and 'output'")


def resolve_data_paths(run_dir: str | Path, train_path: str = "", heldout_path: str = "") -> tuple[Path, Path | None]:
    """Training and held-out data: explicit paths win, otherwise stage 2's files in the run folder."""
    run_dir = Path(run_dir)
    train = Path(train_path).expanduser() if train_path else run_dir / TRAIN_JSONL
    if not train.exists():
        raise ParameterError("TRAIN_DATA_PATH", f"{str(train)!r} does not exist",
                             "run stage 2 first, or set TRAIN_DATA_PATH to a JSONL file, a saved `datasets` folder "
                             "or the official released JSON list")
    if heldout_path:
        heldout = Path(heldout_path).expanduser()
        if not heldout.exists():
            raise ParameterError("HELDOUT_DATA_PATH", f"{heldout_path!r} does not exist",
                                 "point it at the held-out set, or leave it empty")
    else:
        heldout = run_dir / HELDOUT_JSONL
        heldout = heldout if heldout.exists() else None
    return train, heldout


def record_problem(record: Any) -> str | None:
    """Why a training record cannot be trained on, or None. An empty response would train on the end-of-sequence
    token alone; a record without one cannot be rendered as a conversation at all."""
    if not isinstance(record, dict):
        kind = "list" if isinstance(record, list) else type(record).__name__
        return f"is a JSON {kind}, not a record (an object with 'instruction' and 'output')"
    for name in ("instruction", "output"):
        value = record.get(name)
        if value is None:
            return f"has no '{name}'"
        if not isinstance(value, str):
            return f"has a '{name}' that is not text ({type(value).__name__})"
        if not value.strip():
            return f"has an empty '{name}'"
    return None


def _raw_records(path: Path, parameter: str) -> tuple[list[Any], list[str]] | None:
    """The records of a JSONL or JSON file as written, each with where it is ("line 3", "record 3"); None for a
    saved `datasets` folder (checked after loading, by row)."""
    if path.is_dir():
        return None
    if path.suffix == ".jsonl":
        try:
            records = read_jsonl(path)
        except JSONLError as exc:
            raise ParameterError(parameter, str(exc), "fix the line, or point it at another file") from None
        text = path.read_bytes().decode("utf-8-sig")  # read_jsonl decoded it: the same lines, numbered
        return records, [f"line {i + 1}" for i, line in enumerate(text.split("\n")) if line.strip()]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None  # load_training_data says what is wrong with it
    records = data.get("data", data) if isinstance(data, dict) else data
    return (records, [f"record {i + 1}" for i in range(len(records))]) if isinstance(records, list) else None


def load_records(path: str | Path, parameter: str, skip_invalid: bool = False) -> Any:
    """Load training data through stage 2's loader (JSONL, a saved `datasets` folder, or the official JSON list).

    Every record must have a non-empty `instruction` and `output`: the first that does not fails the stage,
    naming the file, the line (or record) and the rule, with how many such records there are. With
    `skip_invalid` (SKIP_INVALID_EXAMPLES) they are left out instead, with a warning that counts them."""
    file = Path(path).expanduser()
    raw = _raw_records(file, parameter) if file.exists() else None
    bad = [] if raw is None else [(where, problem) for record, where in zip(*raw)
                                  if (problem := record_problem(record)) is not None]
    if bad and not skip_invalid:
        raise _invalid(file, bad, len(raw[0]), parameter)
    try:
        dataset = (load_training_data(path, parameter) if not bad
                   else _dataset([r for r in raw[0] if record_problem(r) is None]))
    except ParameterError:
        raise
    except (ValueError, OSError) as exc:
        raise ParameterError(parameter, f"could not read {str(path)!r} ({exc})",
                             "use JSONL, a saved `datasets` folder or the official JSON list") from exc
    if raw is None and len(dataset) and {"instruction", "output"} <= set(dataset.column_names):
        bad = [(f"row {i + 1}", problem) for i, row in enumerate(dataset)
               if (problem := record_problem(row)) is not None]
        if bad and not skip_invalid:
            raise _invalid(file, bad, len(dataset), parameter)
        if bad:
            dataset = dataset.select([i for i, row in enumerate(dataset) if record_problem(row) is None])
    if bad:
        warnings.warn(f"{parameter}: skipped {len(bad)} of {len(bad) + len(dataset)} records of {file} that "
                      f"cannot be trained on (first: {bad[0][0]} {bad[0][1]})", stacklevel=2)
    check_training_records(dataset, parameter)
    return dataset


def _invalid(file: Path, bad: list[tuple[str, str]], total: int, parameter: str) -> ParameterError:
    where, problem = bad[0]
    more = f" ({len(bad)} of {total} records cannot be trained on)" if len(bad) > 1 else ""
    return ParameterError(parameter, f"{file}, {where}: the record {problem}{more}",
                          "fix or remove those records (each needs a non-empty 'instruction' and 'output'), or set "
                          "SKIP_INVALID_EXAMPLES=True to train without them (they are counted)")


def _dataset(records: list[dict[str, Any]]) -> Any:
    """The usable records as a dataset, as stage 2's loader builds it (`input` "" where missing)."""
    return records_to_dataset([{**r, "input": r.get("input") or ""} for r in records])


def masked_view(tokenizer: Any, example: TokenizedExample) -> list[tuple[str, bool]]:
    """(token text, learned?) pairs, for showing which part of a training sequence carries the loss."""
    return [(tokenizer.decode([tid]), label != IGNORE_INDEX) for tid, label in zip(example.input_ids, example.labels)]


def format_masked_view(view: list[tuple[str, bool]]) -> str:
    """Plain-text rendering: masked prompt as is, learned tokens wrapped in [[...]] spans."""
    out, inside = [], False
    for text, learned in view:
        if learned and not inside:
            out.append("[[")
        if not learned and inside:
            out.append("]]")
        inside = learned
        out.append(text)
    if inside:
        out.append("]]")
    return "".join(out)
