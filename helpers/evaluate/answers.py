"""Answers to evaluation sets from the student, the base model or any endpoint, with decoding settings recorded.

The fine-tuned student is a local folder whose tokenizer carries the chat template it was trained with; the base
model is asked through the *same* template so the comparison measures training, not prompt format.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..layout import SELECTION_JSON
from ..params import ParameterError, check_float, check_int


@dataclass
class DecodingConfig:
    """How answers are sampled; recorded with every number computed from them."""

    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature (AlpacaEval setting in the paper: 0.9)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (paper: 1.0)."})
    max_tokens: int = field(default=2048, metadata={"help": "Longest answer in new tokens (paper: 2048; the CPU demo uses far less)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed sent to backends that accept one."})

    def validate(self, prefix: str = "ANSWER") -> DecodingConfig:
        check_float(f"{prefix}_TEMPERATURE", self.temperature, 0.0, 2.0)
        check_float(f"{prefix}_TOP_P", self.top_p, 0.0, 1.0)
        check_int(f"{prefix}_MAX_TOKENS", self.max_tokens, 1, 32768)
        return self

    def sampling(self) -> dict[str, Any]:
        return asdict(self)


def read_selection(run_dir: str | Path, parameter: str = "RUN_DIR") -> dict[str, Any]:
    """Stage 3's choice of checkpoint (`sft/selection.json`), which stage 4 evaluates unless STUDENT_MODEL is set."""
    path = Path(run_dir) / SELECTION_JSON
    if not path.exists():
        raise ParameterError(parameter, f"{path} does not exist (no fine-tuned model in this run)",
                             "run notebooks/03_sft.ipynb for this RUN_DIR first, or set STUDENT_MODEL to a model folder/endpoint id")
    return json.loads(path.read_text())


def saved_chat_template(model_dir: str | Path) -> str | None:
    """The chat template saved with a checkpoint's tokenizer (chat_template.jinja or tokenizer_config.json)."""
    folder = Path(model_dir)
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if config.exists():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, str):
            return template
    return None


def answer_requests(items: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    """One chat per item: earlier turns (WildBench) when present, else the instruction alone."""
    requests = []
    for item in items:
        messages = item.get("messages")
        requests.append(list(messages) if messages else [{"role": "user", "content": item["instruction"]}])
    return requests


def generate_answers(client: Any, items: list[dict[str, Any]], decoding: DecodingConfig,
                     desc: str = "answers") -> list[dict[str, Any]]:
    """One answer per item; failures are kept as empty outputs with their error so they can be counted."""
    return answers_from_results(items, client.chat_many(answer_requests(items), desc=desc, **decoding.sampling()))


def answers_from_results(items: list[dict[str, Any]], results: list[Any]) -> list[dict[str, Any]]:
    """The answer records of `generate_answers` from the client's results, one per item."""
    return [{"id": item["id"], "instruction": item["instruction"], "output": r.text.strip() if r.ok else "",
             "finish_reason": r.finish_reason, "output_tokens": r.output_tokens, "error": r.error}
            for item, r in zip(items, results)]


def generate_two_turn_answers(client: Any, questions: list[dict[str, Any]], decoding: DecodingConfig,
                              desc: str = "two-turn answers") -> list[dict[str, Any]]:
    """MT-Bench style: the second question is asked after the model's own first answer."""
    conversations = client.converse_many([q["turns"][:2] for q in questions], desc=desc, **decoding.sampling())
    return two_turn_from_conversations(questions, conversations)


def two_turn_from_conversations(questions: list[dict[str, Any]], conversations: list[Any]) -> list[dict[str, Any]]:
    """The answer records of `generate_two_turn_answers` from the client's conversations, one per question."""
    out = []
    for q, conv in zip(questions, conversations):
        texts = [t.strip() for t in conv.assistant_texts] + [""] * (2 - len(conv.assistant_texts))
        out.append({"id": q["id"], "category": q["category"], "answers": texts[:2], "error": conv.error})
    return out


def save_answers(path: str | Path, answers: list[dict[str, Any]], generator: str, decoding: DecodingConfig) -> Path:
    """AlpacaEval-style records (`instruction`, `output`, `generator`) plus the decoding settings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for a in answers:
            f.write(json.dumps({**a, "generator": generator, "decoding": decoding.sampling()}, ensure_ascii=False) + "\n")
    return path
