"""The stage around training: the LLM layer reaches the saved model, LoRA merge, judge selection, the script."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.runs import PROJECT_ROOT
from helpers.sft.config import SFTStageConfig
from helpers.sft.answers import load_for_generation
from sft_tiny import EXAMPLES, OVERFIT as OVERFIT_BASE, write_jsonl

OVERFIT = {**OVERFIT_BASE, "compare_examples": 0}



def _run_dir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "run" / "data" / "train.jsonl", EXAMPLES)
    write_jsonl(tmp_path / "run" / "data" / "heldout.jsonl", EXAMPLES)
    return tmp_path / "run"


def test_saved_model_answers_through_the_llm_layer(tmp_path, tiny_base):
    """Stage 4 reaches the model with connect(model=<folder>): same template, same stop."""
    from helpers.llm.client import connect
    from helpers.sft.stage import run_sft_stage

    run_dir = _run_dir(tmp_path)
    cfg = SFTStageConfig(profile="demo", run_dir=str(run_dir), base_model=str(tiny_base), chat_template="chatml", **OVERFIT)
    result = run_sft_stage(cfg)
    client = connect(model=result.selection.best_checkpoint, base_url="", stage="test", role="STUDENT",
                     cache_path=tmp_path / "calls.sqlite")
    replies = client.chat_many([[{"role": "user", "content": e["instruction"]}] for e in EXAMPLES], max_tokens=12,
                               temperature=0.0)
    assert [r.finish_reason for r in replies] == ["stop"] * len(EXAMPLES)
    assert [r.text for r in replies] == [e["output"] for e in EXAMPLES]


def test_lora_checkpoint_is_merged_into_a_standalone_model(tmp_path, tiny_base):
    from helpers.sft.stage import run_sft_stage

    run_dir = _run_dir(tmp_path)
    cfg = SFTStageConfig(profile="demo", run_dir=str(run_dir), base_model=str(tiny_base), chat_template="alpaca",
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
    from helpers.llm.client import connect_function
    from helpers.sft.stage import run_sft_stage

    calls = []

    def judge(messages, sampling):
        calls.append(messages)
        return "A"  # always prefers the output shown first

    client = connect_function(judge, model="fake-judge", stage="test", cache_path=tmp_path / "j.sqlite")
    run_dir = _run_dir(tmp_path)
    cfg = SFTStageConfig(profile="demo", run_dir=str(run_dir), base_model=str(tiny_base),
                         **{**OVERFIT, "selection": "judge", "max_steps": 4, "save_every": 2, "compare_examples": 0,
                            "selection_examples": 2})
    result = run_sft_stage(cfg, judge_client=client)
    scores = result.selection.scores
    assert set(scores) == {"checkpoint-2", "checkpoint-4"}
    assert all("win_rate" in s and "heldout_loss" in s for s in scores.values())
    assert calls, "the judge was asked"
    assert result.selection.criterion == "judge"


@pytest.mark.slow
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


def test_dropping_every_over_long_example_fails_with_a_fix(tmp_path, tiny_base):
    from helpers.params import ParameterError
    from helpers.sft.stage import run_sft_stage

    cfg = SFTStageConfig(profile="demo", run_dir=str(_run_dir(tmp_path)), base_model=str(tiny_base),
                         **{**OVERFIT, "max_length": 16, "long_examples": "drop"})
    with pytest.raises(ParameterError) as err:
        run_sft_stage(cfg)
    assert err.value.name == "MAX_LENGTH" and "LONG_EXAMPLES" in err.value.fix


def test_packed_rows_do_not_attend_across_examples(tiny_base):
    """Padding-free packing (PACKING=True) must give the same loss as padding: position ids isolate the examples."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from helpers.sft.data import tokenize_record
    from helpers.sft.templates import build_template, install_template

    model, tok = load_for_generation(tiny_base)
    spec = build_template("alpaca", tok)
    install_template(spec, tok, model)
    rows = [{"input_ids": e.input_ids, "labels": e.labels}
            for e in (tokenize_record(tok, r, None, spec.end_of_turn) for r in EXAMPLES)]
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    packed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    assert packed["input_ids"].shape[0] == 1
    with torch.no_grad():
        loss_padded = model(**padded, use_cache=False).loss
        loss_packed = model(**packed, use_cache=False).loss
        crossed = {"input_ids": packed["input_ids"], "labels": packed["labels"],
                   "position_ids": torch.arange(packed["input_ids"].shape[1])[None]}
        loss_crossed = model(**crossed, use_cache=False).loss
    assert torch.allclose(loss_padded, loss_packed, atol=1e-5)
    assert not torch.allclose(loss_padded, loss_crossed, atol=1e-5), "the check can tell the difference"


def test_training_with_packing_runs(tmp_path, tiny_base):
    from datasets import Dataset

    from helpers.sft.train import train_sft

    cfg = SFTStageConfig(profile="demo", base_model=str(tiny_base), **{**OVERFIT, "max_steps": 2, "save_every": 2,
                                                              "packing": True, "max_length": 128})
    outcome = train_sft(cfg, Dataset.from_list(EXAMPLES * 2), None, tmp_path / "out", evaluate_first=False)
    assert outcome.extra["global_step"] == 2 and outcome.train_tokens > 0


def test_empty_heldout_from_stage_2_keeps_the_last_checkpoint(tmp_path, tiny_base):
    """The tiny teacher can leave stage 2 without one usable held-out example: say so and keep the last checkpoint."""
    from helpers.params import ParameterError
    from helpers.runs import Run
    from helpers.sft.stage import load_data, run_sft_stage

    run_dir = _run_dir(tmp_path)
    (run_dir / "data" / "heldout.jsonl").write_text("")
    cfg = SFTStageConfig(profile="demo", run_dir=str(run_dir), base_model=str(tiny_base),
                         **{**OVERFIT, "max_steps": 2, "save_every": 2})
    data = load_data(cfg)
    assert data.heldout is None and "no usable held-out example" in data.selection_note
    result = run_sft_stage(cfg, data=data)
    assert result.selection.criterion == "last"
    assert "no usable held-out" in Run(run_dir).stage_info("sft")["selection_fallback"]
    # A held-out file the user names explicitly must be usable.
    named = SFTStageConfig(profile="demo", run_dir=str(run_dir), base_model=str(tiny_base),
                           heldout_data_path=str(run_dir / "data" / "heldout.jsonl"), **OVERFIT)
    with pytest.raises(ParameterError):
        load_data(named)


def test_resumable_training_continues_from_the_newest_checkpoint(tmp_path, tiny_base):
    """A stopped RESUMABLE run continues where it was; a changed setting starts afresh without stale checkpoints."""
    from helpers.sft.stage import load_data
    from helpers.sft.train import list_checkpoints, train_sft

    run_dir = _run_dir(tmp_path)
    out = tmp_path / "ckpt"
    cfg = SFTStageConfig(profile="demo", run_dir=str(run_dir), base_model=str(tiny_base), resumable=True,
                         **{**OVERFIT, "max_steps": 4, "save_every": 2})
    data = load_data(cfg)
    first = train_sft(cfg, data.train, None, out, evaluate_first=False)
    assert [c.name for c in first.checkpoints] == ["checkpoint-2", "checkpoint-4"]
    assert (out / "checkpoint-2" / "trainer_state.json").exists() and (out / "checkpoint-2" / "scheduler.pt").exists()

    shutil.rmtree(out / "checkpoint-4")  # as if the run had been stopped after step 2
    second = train_sft(cfg, data.train, None, out, evaluate_first=False)
    assert second.extra["resumed_from"] == str(out / "checkpoint-2") and second.extra["global_step"] == 4
    assert len(first.extra["step_seconds"]) == 4
    assert len(second.extra["step_seconds"]) == 2, "steps 1-2 must not be trained again"

    changed = SFTStageConfig(profile="demo", run_dir=str(run_dir), base_model=str(tiny_base), resumable=True,
                             **{**OVERFIT, "max_steps": 2, "save_every": 2, "learning_rate": 5e-3})
    third = train_sft(changed, data.train, None, out, evaluate_first=False)
    assert third.extra["resumed_from"] is None
    assert [c.name for c in list_checkpoints(out)] == ["checkpoint-2"]
