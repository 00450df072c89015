"""Training a tiny random model end to end: it learns to stop, saves, reloads, and the stage records its results."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.runs import Run
from helpers.sft.config import SFTStageConfig
from helpers.sft.answers import eos_stop_rate, generate_answers, load_for_generation
from sft_tiny import EXAMPLES, OVERFIT as OVERFIT_BASE, build_model_folder, write_jsonl

OVERFIT = OVERFIT_BASE



@pytest.fixture(scope="module")
def tiny_base_turns(tmp_path_factory) -> Path:
    return build_model_folder(tmp_path_factory.mktemp("tiny_turns") / "base", turn_tokens=True)


def _run_dir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "run" / "data" / "train.jsonl", EXAMPLES)
    write_jsonl(tmp_path / "run" / "data" / "heldout.jsonl", EXAMPLES)
    return tmp_path / "run"


@pytest.mark.parametrize("template", ["alpaca", "chatml"])
def test_stage_overfits_stops_saves_and_records(tmp_path, tiny_base, tiny_base_turns, template):
    """Alpaca ends with the tokenizer's EOS; chatml here reuses the vocabulary's own turn tokens."""
    from helpers.sft.stage import run_sft_stage

    run_dir = _run_dir(tmp_path)
    base = tiny_base if template == "alpaca" else tiny_base_turns
    cfg = SFTStageConfig(profile="demo", run_dir=str(run_dir), base_model=str(base), chat_template=template, **OVERFIT)
    result = run_sft_stage(cfg)

    # the trained model ends its answers with the end-of-turn token by itself
    assert result.records["eos_stop_rate"] == 1.0
    assert [a.text for a in result.tuned_answers] == [e["output"] for e in EXAMPLES]
    # selection, manifest and records land where stage 4 reads them
    selection = json.loads((run_dir / "sft" / "selection.json").read_text())
    assert selection["criterion"] == "heldout_loss" and selection["chat_template"] == template
    run = Run(run_dir)
    assert run.stage_info("sft")["best_checkpoint"] == selection["best_checkpoint"]
    recorded = run.results()["sft"]
    for key in ("train_loss_final", "heldout_loss", "train_tokens_per_s", "peak_rss_gb", "best_checkpoint",
                "num_train_examples", "eos_stop_rate"):
        assert key in recorded
    assert recorded["num_train_examples"] == len(EXAMPLES) and recorded["train_tokens_per_s"] > 0
    # the saved folder reloads as a plain model whose tokenizer carries the template, and it still stops
    model, tok = load_for_generation(selection["best_checkpoint"])
    assert tok.chat_template and len(tok) == model.get_input_embeddings().weight.shape[0]
    if template == "chatml":
        assert "<end_of_turn>" in tok.chat_template and "<|im_end|>" not in tok.get_vocab()
    answers = generate_answers(model, tok, [e["instruction"] for e in EXAMPLES], max_new_tokens=12)
    assert eos_stop_rate(answers) == 1.0
