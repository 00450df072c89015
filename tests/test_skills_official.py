"""Importing the paper's released lists by name ('official:<teacher>'), with and without the duplicate merge, and
the hand-over to stage 2: the plan drawn from stage 1's files is the official script's plan."""
from __future__ import annotations

import pytest

from helpers.generate.config import GenerateConfig
from helpers.generate.stage import load_stage1_inputs, make_plans
from helpers.params import ParameterError
from helpers.runs import Run
from helpers.skills.extract import SkillExtractionConfig, extract_skills, save_extraction
from official_clone import GPT, make_clone, official_functions, official_plan


@pytest.fixture()
def clone(tmp_path):
    return make_clone(tmp_path / "Instruct-SkillMix")


def _import(clone, merge: bool, method: str = "exact"):
    cfg = SkillExtractionConfig(skill_source="import", skills_path=f"official:{GPT}",
                                query_types_path=f"official:{GPT}", topic_headers="none", import_merge=merge,
                                dedup_method=method, instruct_skillmix_repo=str(clone))
    return extract_skills(cfg)


def test_import_without_merge_keeps_every_line_in_order(clone):
    extraction = _import(clone, merge=False)
    lines = (clone / "datasets" / GPT / "skills.txt").read_text().split("\n")
    assert len(lines) == 1143
    assert [s["skill"] for s in extraction.skills] == lines
    assert extraction.summary()["num_duplicates_merged"] == 0
    assert extraction.official_files["SKILLS_PATH"]["path"] == f"datasets/{GPT}/skills.txt"
    assert extraction.official_files["SKILLS_PATH"]["origin"] == "local clone"


def test_import_with_merge_is_still_the_default(clone):
    assert SkillExtractionConfig().import_merge is True
    extraction = _import(clone, merge=True)
    assert len(extraction.skills) == 1132  # the exact duplicates merged (near ones too with the default method)


def test_official_query_types_keep_the_official_text(clone):
    extraction = _import(clone, merge=False)
    get_query_and_def = official_functions()["get_query_and_def"]
    text = (clone / "datasets" / GPT / "queries.txt").read_text()
    expected = [get_query_and_def(block) for block in text.split("###") if block.strip()]
    assert [(q["official_name"], q["official_text"]) for q in extraction.query_types] == [
        (e["query_str"], e["query_type"]) for e in expected]


def test_stage2_plan_from_stage1_files_is_the_official_plan(tmp_path, clone):
    run = Run(tmp_path / "run")
    save_extraction(run, _import(clone, merge=False))
    cfg = GenerateConfig.from_params({"RUN_DIR": str(run.path), "SEED": 42, "NUM_EXAMPLES": 50, "NUM_HELDOUT": 0,
                                      "PROMPT_SOURCE": "official"}).validate()
    skills, query_types = load_stage1_inputs(cfg)
    assert len(skills) == 1143
    train, _ = make_plans(cfg, skills, query_types)
    ours = [(p.skills_joined_str, p.query_type["official_text"]) for p in train]
    assert ours == [(joined, q["query_type"]) for joined, q in official_plan(GPT, 42, 50)]


def test_bad_official_names_fail_with_the_parameter(tmp_path, clone):
    with pytest.raises(ParameterError) as err:
        SkillExtractionConfig(skill_source="import", skills_path="official:").validate()
    assert err.value.name == "SKILLS_PATH"
    with pytest.raises(ParameterError) as err:
        extract_skills(SkillExtractionConfig(skill_source="import", skills_path="official:no-such-teacher",
                                             instruct_skillmix_repo=str(clone)))
    assert err.value.name == "INSTRUCT_SKILLMIX_REPO"
