"""Training a tiny random model end to end: it learns to stop, saves, reloads, and the stage records its results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.runs import PROJECT_ROOT, Run
from helpers.sft_config import make_config
from helpers.sft_generate import eos_stop_rate, generate_answers, load_for_generation
from sft_tiny import EXAMPLES, build_model_folder, write_jsonl

OVERFIT = dict(max_steps=40, learning_rate=1e-2, warmup_ratio=0.0, lr_scheduler="constant", per_device_batch_size=4,
               max_length=96, use_lora=False, save_strategy="steps", save_every=20, logging_steps=5,
               max_new_tokens=12, compare_examples=2, selection_examples=4, max_train_examples=0,
               max_heldout_examples=0, selection="heldout_loss")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return build_model_folder(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="module")
def tiny_base_turns(tmp_path_factory) -> Path:
    return build_model_folder(tmp_path_factory.mktemp("tiny_turns") / "base", turn_tokens=True)


def _run_dir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "run" / "data" / "train.jsonl", EXAMPLES)
    write_jsonl(tmp_path / "run" / "data" / "heldout.jsonl", EXAMPLES)
    return tmp_path / "run"


@pytest.mark.parametrize("template", ["alpaca", "chatml"])
def test_stage_overfits_stops_saves_and_records(tmp_path, tiny_base, template):
    from helpers.sft import run_sft_stage

    run_dir = _run_dir(tmp_path)
    cfg = make_config("demo", run_dir=str(run_dir), base_model=str(tiny_base), chat_template=template, **OVERFIT)
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
        assert "<|im_end|>" in tok.get_vocab()  # added for a tokenizer without turn tokens
    answers = generate_answers(model, tok, [e["instruction"] for e in EXAMPLES], max_new_tokens=12)
    assert eos_stop_rate(answers) == 1.0


def test_saved_model_answers_through_the_llm_layer(tmp_path, tiny_base_turns):
    """Stage 4 reaches the model with connect(model=<folder>): same template, same stop."""
    from helpers.llm import connect
    from helpers.sft import run_sft_stage

    run_dir = _run_dir(tmp_path)
    cfg = make_config("demo", run_dir=str(run_dir), base_model=str(tiny_base_turns), chat_template="chatml",
                      **{**OVERFIT, "compare_examples": 0})
    result = run_sft_stage(cfg)
    client = connect(model=result.selection.best_checkpoint, base_url="", stage="test", role="STUDENT",
                     cache_path=tmp_path / "calls.sqlite")
    replies = client.chat_many([[{"role": "user", "content": e["instruction"]}] for e in EXAMPLES], max_tokens=12,
                               temperature=0.0)
    assert [r.finish_reason for r in replies] == ["stop"] * len(EXAMPLES)
    assert [r.text for r in replies] == [e["output"] for e in EXAMPLES]


def test_lora_checkpoint_is_merged_into_a_standalone_model(tmp_path, tiny_base):
    from helpers.sft import run_sft_stage

    run_dir = _run_dir(tmp_path)
    cfg = make_config("demo", run_dir=str(run_dir), base_model=str(tiny_base), chat_template="alpaca",
                      **{**OVERFIT, "use_lora": True, "max_steps": 4, "save_every": 2, "learning_rate": 1e-3,
                         "lora_r": 4, "compare_examples": 1, "selection_examples": 2})
    result = run_sft_stage(cfg)
    best = Path(result.selection.best_checkpoint)
    assert best.name == "merged" and (best / "config.json").exists() and not (best / "adapter_config.json").exists()
    assert (best.parent / "adapter_config.json").exists()
    model, tok = load_for_generation(best)
    assert tok.chat_template


def test_judge_selection_with_a_scripted_judge(tmp_path, tiny_base):
    """SELECTION='judge': every checkpoint answers, the pairwise judge decides (here a scripted one)."""
    from helpers.llm import connect_function
    from helpers.sft import run_sft_stage

    calls = []

    def judge(messages, sampling):
        calls.append(messages)
        return "A"  # always prefers the output shown first

    client = connect_function(judge, model="fake-judge", stage="test", cache_path=tmp_path / "j.sqlite")
    run_dir = _run_dir(tmp_path)
    cfg = make_config("demo", run_dir=str(run_dir), base_model=str(tiny_base),
                      **{**OVERFIT, "selection": "judge", "max_steps": 4, "save_every": 2, "compare_examples": 0,
                         "selection_examples": 2})
    result = run_sft_stage(cfg, judge_client=client)
    scores = result.selection.scores
    assert set(scores) == {"checkpoint-2", "checkpoint-4"}
    assert all("win_rate" in s and "heldout_loss" in s for s in scores.values())
    assert calls, "the judge was asked"
    assert result.selection.criterion == "judge"


def test_script_entry_point_runs_single_process(tmp_path, tiny_base):
    """`python -m helpers.sft` (what `accelerate launch` runs) with a config file and overrides."""
    run_dir = _run_dir(tmp_path)
    cmd = [sys.executable, "-m", "helpers.sft", "--config", str(PROJECT_ROOT / "configs" / "sft" / "demo.yaml"),
           "--set", f"RUN_DIR={run_dir}", f"BASE_MODEL={tiny_base}", "MAX_STEPS=2", "SAVE_EVERY=2",
           "MAX_NEW_TOKENS=4", "USE_LORA=false", "COMPARE_EXAMPLES=0"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "sft" / "selection.json").exists()
    assert '"eos_stop_rate"' in proc.stdout
