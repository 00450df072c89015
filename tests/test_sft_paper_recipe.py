"""The paper profile trains as the official torchtune runs did and selects checkpoints as the official eval did."""
from __future__ import annotations

import pytest

from helpers.params import ParameterError
from helpers.runs import PROJECT_ROOT, Run
from helpers.sft.config import SFTStageConfig
from sft_tiny import EXAMPLES, write_jsonl


def test_paper_recipe_values():
    cfg = SFTStageConfig(profile="paper").validate()
    assert (cfg.weight_decay, cfg.max_grad_norm) == (0.01, 0.0)
    assert cfg.chat_template == "auto"
    assert (cfg.selection_temperature, cfg.selection_top_p, cfg.max_new_tokens) == (0.9, 1.0, 2048)
    assert cfg.selection_prompt == "official"
    assert cfg.selection_judge == "alpaca_eval:weighted_alpaca_eval_gpt4_turbo"
    shipped = SFTStageConfig.load(PROJECT_ROOT / "configs" / "sft" / "paper.yaml")
    assert (shipped.chat_template, shipped.weight_decay, shipped.max_grad_norm) == ("auto", 0.01, 0.0)
    assert (shipped.selection_temperature, shipped.max_new_tokens) == (0.9, 2048)
    demo = SFTStageConfig(profile="demo")
    assert (demo.weight_decay, demo.max_grad_norm, demo.selection_temperature) == (0.0, 1.0, 0.0)


def test_trainer_gets_weight_decay_and_no_clipping(tmp_path):
    from helpers.sft.train import trl_config

    args = trl_config(SFTStageConfig(profile="paper"), tmp_path, 1000, has_eval=False)
    assert args.weight_decay == 0.01 and args.max_grad_norm == 0.0
    assert trl_config(SFTStageConfig(profile="demo"), tmp_path, 10, has_eval=False).max_grad_norm == 1.0


def test_batch_rule_reads_the_planned_size(tmp_path):
    from helpers.sft.stage import planned_examples

    left_after_filtering = 3987
    assert SFTStageConfig(profile="paper", planned_examples=4000).target_effective_batch(left_after_filtering) == 128
    assert SFTStageConfig(profile="paper").target_effective_batch(left_after_filtering) == 64  # unknown plan: the count
    assert SFTStageConfig(profile="paper", planned_examples=4000).gradient_accumulation(left_after_filtering, world_size=8) == 4
    run = Run(tmp_path)
    assert planned_examples(tmp_path) == 0
    run.record("num_planned", 4000, stage="generate", display=False)
    assert planned_examples(tmp_path) == 4000


def test_unknown_selection_judge_fails_before_training(tmp_path, tiny_base):
    from helpers.sft.stage import run_sft_stage

    write_jsonl(tmp_path / "data" / "train.jsonl", EXAMPLES)
    write_jsonl(tmp_path / "data" / "heldout.jsonl", EXAMPLES)
    cfg = SFTStageConfig(profile="demo", run_dir=str(tmp_path), base_model=str(tiny_base), selection="judge",
                      selection_judge="no_such_judge")
    with pytest.raises(ParameterError) as err:
        run_sft_stage(cfg)
    assert err.value.name == "SELECTION_JUDGE"
    assert not (tmp_path / "sft").exists()


def test_selection_answers_are_sampled_as_asked(tiny_base):
    from helpers.llm.generation import RowSampler
    from helpers.sft.answers import generate_answers, load_for_generation
    from helpers.sft.stage import selection_sampling
    from helpers.sft.templates import build_template, install_template

    model, tokenizer = load_for_generation(tiny_base)
    install_template(build_template("alpaca", tokenizer), tokenizer, model)
    seen = []
    original = model.generate

    def spy(**kwargs):
        samplers = [p for p in kwargs.get("logits_processor") or [] if isinstance(p, RowSampler)]
        seen.append({"sampled": bool(samplers), "temperature": samplers[0].temperature if samplers else None,
                     "top_p": samplers[0].top_p if samplers else None, "max_new_tokens": kwargs["max_new_tokens"]})
        return original(**kwargs)

    model.generate = spy
    sampling = selection_sampling(SFTStageConfig(profile="paper", seed=3))
    first = generate_answers(model, tokenizer, ["Say hello to Ada."], 4, **sampling)
    again = generate_answers(model, tokenizer, ["Say hello to Ada."], 4, **sampling)
    generate_answers(model, tokenizer, ["Say hello to Ada."], 4)
    assert seen[0] == {"sampled": True, "temperature": 0.9, "top_p": 1.0, "max_new_tokens": 4}  # per-row sampling
    assert seen[-1]["sampled"] is False
    assert first == again  # seeded


def test_official_selection_prompt_is_the_validation_prompt_file(tmp_path, tiny_base):
    from helpers.sft.answers import generate_answers, load_for_generation
    from helpers.sft.stage import selection_prompt
    from official_clone import make_clone

    clone = make_clone(tmp_path / "clone")
    assert selection_prompt(SFTStageConfig(profile="demo")) is None  # the chat template
    prompt = selection_prompt(SFTStageConfig(profile="paper", instruct_skillmix_repo=str(clone)))
    reference = (clone / "src/eval_configs/templates/prompt.txt").read_text()
    assert prompt("Say hello to Ada.") == reference.replace("{instruction}", "Say hello to Ada.")
    assert prompt.source["path"] == "src/eval_configs/templates/prompt.txt" and prompt.source["matches_pin"]
    model, tokenizer = load_for_generation(tiny_base)
    seen = []
    original = model.generate

    def spy(**kwargs):
        seen.append(kwargs["input_ids"][0].tolist())
        return original(**kwargs)

    model.generate = spy
    generate_answers(model, tokenizer, ["Say hello to Ada."], 2, prompt_fn=prompt)
    assert seen[0] == tokenizer(prompt("Say hello to Ada."))["input_ids"]  # raw text with the tokenizer's own BOS


def test_missing_selection_prompt_fails_before_training(tmp_path, tiny_base):
    from helpers.sft.stage import run_sft_stage

    write_jsonl(tmp_path / "data" / "train.jsonl", EXAMPLES)
    write_jsonl(tmp_path / "data" / "heldout.jsonl", EXAMPLES)
    (tmp_path / "empty_clone").mkdir()
    cfg = SFTStageConfig(profile="demo", run_dir=str(tmp_path), base_model=str(tiny_base), selection="judge",
                      selection_prompt="official", instruct_skillmix_repo=str(tmp_path / "empty_clone"))
    with pytest.raises(ParameterError) as err:
        run_sft_stage(cfg)
    assert err.value.name == "INSTRUCT_SKILLMIX_REPO"
    assert not (tmp_path / "sft").exists()
