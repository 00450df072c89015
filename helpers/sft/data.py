"""Tokenise SFT examples with the loss on the response only (prompt masked, response + end-of-turn learned).

The kit tokenises itself instead of letting TRL render the chat: the prompt and the response are tokenised
separately and concatenated, so a training sequence starts with exactly the ids the model is given at inference
(``render_prompt`` tokenised without special tokens, as ``helpers.llm.client`` does) and no token can merge across the
prompt/response boundary. Labels are -100 on the prompt and equal to the ids on the response and its end-of-turn
token. TRL's ``SFTTrainer`` uses a ``labels`` column as is (it only truncates, drops fully masked rows and packs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..generate.files import load_training_data
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


def load_records(path: str | Path, parameter: str) -> Any:
    """Load training data through stage 2's loader (JSONL, a saved `datasets` folder, or the official JSON list)."""
    try:
        dataset = load_training_data(path, parameter)
    except ParameterError:
        raise
    except (ValueError, OSError) as exc:
        raise ParameterError(parameter, f"could not read {str(path)!r} ({exc})",
                             "use JSONL, a saved `datasets` folder or the official JSON list") from exc
    check_training_records(dataset, parameter)
    return dataset


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
