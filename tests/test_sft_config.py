"""Profiles, config files, fail-fast checks, data loading and checkpoint choice (no training here)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.params import ParameterError
from helpers.runs import PROJECT_ROOT
from helpers.sft.config import PAPER_EFFECTIVE_BATCH_RULE, SFTStageConfig
from helpers.sft.data import load_records
from helpers.sft.select import select_by_heldout_loss
from sft_tiny import EXAMPLES, write_jsonl

REFERENCE = PROJECT_ROOT.parent / "shared" / "reference" / "instruct-skillmix"


def test_paper_profile_is_the_published_recipe():
    cfg = SFTStageConfig(profile="paper").validate()
    assert (cfg.learning_rate, cfg.lr_scheduler, cfg.warmup_ratio, cfg.num_epochs) == (2e-5, "cosine", 0.03, 15.0)
    assert (cfg.max_length, cfg.bf16, cfg.use_lora, cfg.save_strategy) == (1024, True, False, "epoch")
    assert cfg.effective_batch_size == PAPER_EFFECTIVE_BATCH_RULE and cfg.selection == "judge"
    assert cfg.target_effective_batch(1000) == 64 and cfg.target_effective_batch(4000) == 128
    assert cfg.gradient_accumulation(1000, world_size=8) == 2  # 4 per device x 8 GPUs x 2 = 64


def test_demo_profile_is_small():
    cfg = SFTStageConfig(profile="demo").validate()
    assert cfg.max_steps > 0 and cfg.max_length <= 256 and cfg.use_lora


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_shipped_config_files_load(name):
    cfg = SFTStageConfig.load(PROJECT_ROOT / "configs" / "sft" / f"{name}.yaml", ["MAX_STEPS=7", "RUN_DIR=runs/x"])
    assert cfg.profile == name and cfg.max_steps == 7 and cfg.run_dir == str(PROJECT_ROOT / "runs" / "x")


@pytest.mark.parametrize("override,name", [(["CHAT_TEMPLATE=vicuna"], "CHAT_TEMPLATE"),
                                           (["SELECTION=best"], "SELECTION"),
                                           (["LEARNING_RATE=-1"], "LEARNING_RATE"),
                                           (["SAVE_STRATEGY=steps", "SAVE_EVERY=0"], "SAVE_EVERY"),
                                           (["MAX_STEPS=0"], "MAX_STEPS"),
                                           (["NOT_A_PARAM=1"], "NOT_A_PARAM"),
                                           (["JUDGE_API_KEY_ENV=sk-abcdefghijklmnopqrstuvwxyz123456"], "JUDGE_API_KEY_ENV"),
                                           (["WEIGHT_DECAY=-0.1"], "WEIGHT_DECAY"),
                                           (["MAX_GRAD_NORM=-1"], "MAX_GRAD_NORM"),
                                           (["NUM_EXAMPLES=-5"], "NUM_EXAMPLES"),
                                           (["SELECTION_TEMPERATURE=3"], "SELECTION_TEMPERATURE"),
                                           (["SELECTION_TOP_P=0"], "SELECTION_TOP_P"),
                                           (["SELECTION_JUDGE="], "SELECTION_JUDGE")])
def test_bad_parameters_fail_fast(override, name):
    with pytest.raises(ParameterError) as err:
        SFTStageConfig.load(None, override)
    assert err.value.name == name


def _run_dir(tmp_path: Path, train: list[dict]) -> Path:
    write_jsonl(tmp_path / "data" / "train.jsonl", train)
    write_jsonl(tmp_path / "data" / "heldout.jsonl", EXAMPLES)
    return tmp_path


def test_empty_dataset_fails_before_any_model_is_loaded(tmp_path):
    from helpers.sft.stage import run_sft_stage

    cfg = SFTStageConfig(profile="demo", run_dir=str(_run_dir(tmp_path, [])), base_model="no-such-model")
    with pytest.raises(ParameterError) as err:
        run_sft_stage(cfg)
    assert err.value.name == "TRAIN_DATA_PATH" and "empty" in str(err.value)


def test_missing_training_data_names_the_parameter(tmp_path):
    from helpers.sft.stage import run_sft_stage

    with pytest.raises(ParameterError) as err:
        run_sft_stage(SFTStageConfig(profile="demo", run_dir=str(tmp_path)))
    assert err.value.name == "TRAIN_DATA_PATH"


def test_bad_base_model_fails_before_training(tmp_path):
    from helpers.sft.stage import run_sft_stage

    cfg = SFTStageConfig(profile="demo", run_dir=str(_run_dir(tmp_path, EXAMPLES)), base_model="no-such-model")
    with pytest.raises(ParameterError) as err:
        run_sft_stage(cfg)
    assert err.value.name == "BASE_MODEL"
    assert not (tmp_path / "sft").exists()


def test_official_json_list_loads_as_training_data(tmp_path):
    """The released format: a JSON list of records with extra fields (orig_instruction, skills_joined_str...)."""
    records = [{"orig_instruction": "x", "instruction": e["instruction"], "input": "", "output": e["output"],
                "skills_joined_str": "a_skill, b_skill", "query_type": "Information-Seeking"} for e in EXAMPLES]
    path = tmp_path / "official.json"
    path.write_text(json.dumps(records))
    ds = load_records(path, "TRAIN_DATA_PATH")
    assert len(ds) == len(EXAMPLES) and ds[0]["instruction"] == EXAMPLES[0]["instruction"]


def test_released_files_load_when_present():
    path = REFERENCE / "ism_sda_heldout_k2_100.json"
    if not path.exists():
        pytest.skip("reference data not available")
    ds = load_records(path, "HELDOUT_DATA_PATH")
    assert len(ds) == 100 and {"instruction", "output"} <= set(ds.column_names)


def test_selection_by_heldout_loss_picks_the_lowest(tmp_path):
    checkpoints = [tmp_path / "checkpoint-2", tmp_path / "checkpoint-4", tmp_path / "checkpoint-6"]
    history = [{"step": 0, "eval_loss": 3.0}, {"step": 2, "eval_loss": 2.0, }, {"step": 2, "loss": 2.5},
               {"step": 4, "eval_loss": 1.5}, {"step": 6, "eval_loss": 1.7}]
    best, scores = select_by_heldout_loss(checkpoints, history)
    assert best.name == "checkpoint-4" and scores == {"checkpoint-2": 2.0, "checkpoint-4": 1.5, "checkpoint-6": 1.7}
