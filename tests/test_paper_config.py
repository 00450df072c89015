"""configs/paper.yaml: every setting reaches a notebook, validates in its stage, and is listed in the paper-settings
tables of docs/paper.md and of its notebook."""
from __future__ import annotations

import json
import re

import yaml

from helpers.generate.config import GenerateConfig
from helpers.pipeline import NOTEBOOKS, notebook_path, split_parameters
from helpers.runs import PROJECT_ROOT
from helpers.sft.config import SFTStageConfig
from helpers.skills.extract import SkillExtractionConfig

PAPER = yaml.safe_load((PROJECT_ROOT / "configs" / "paper.yaml").read_text())
NOT_PROCEDURE = {"MAX_CONCURRENCY"}  # throughput, not part of the paper's procedure


def _docs_rows() -> list[str]:
    text = (PROJECT_ROOT / "docs" / "paper.md").read_text()
    table = text[text.index("| stage | setting |"):]
    return [line for line in table.split("\n")[2:] if line.startswith("|")][: table.count("\n| ")]


def test_every_setting_reaches_a_notebook():
    routed = split_parameters(PAPER, NOTEBOOKS)
    assert set(PAPER) == set().union(*(set(p) for p in routed.values()))


def test_one_stage_can_run_with_the_whole_config():
    assert set(split_parameters(PAPER, ["03_sft"])) == {"03_sft"}


def test_every_setting_is_in_the_docs_table():
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "\n".join(_docs_rows())))
    assert set(PAPER) - NOT_PROCEDURE <= named


def test_each_notebook_shows_its_stage_rows():
    rows = _docs_rows()
    for stage, name in enumerate(NOTEBOOKS, start=1):
        cells = json.loads(notebook_path(name).read_text())["cells"]
        shown = next("".join(c["source"]) for c in cells
                     if c["cell_type"] == "markdown" and "### Paper settings" in "".join(c["source"]))
        assert [line for line in shown.split("\n") if line.startswith(f"| {stage} |")] == [
            r for r in rows if r.startswith(f"| {stage} |")]


def test_stage_configs_accept_the_paper_values(tmp_path):
    routed = split_parameters(PAPER, NOTEBOOKS)
    stage1 = {k.lower(): v for k, v in routed["01_extract_skills"].items()
              if k.lower() in SkillExtractionConfig.__dataclass_fields__}
    cfg1 = SkillExtractionConfig(**stage1).validate()
    assert (cfg1.skill_source, cfg1.import_merge, cfg1.temperature) == ("import", False, None)
    for name in ("skills.jsonl", "query_types.jsonl"):
        (tmp_path / name).write_text("")
    cfg2 = GenerateConfig.from_params({**routed["02_generate"], "RUN_DIR": str(tmp_path)}).validate()
    assert (cfg2.prompt_source, cfg2.official_prompt_version) == ("official", "generate_gpt-4-turbo-2024-04-09")
    assert (cfg2.temperature, cfg2.generate_max_tokens, cfg2.num_examples, cfg2.seed) == (None, 4096, 4000, 42)
    stage3 = {k.lower(): v for k, v in routed["03_sft"].items() if k != "PROFILE"}
    cfg3 = SFTStageConfig(profile=routed["03_sft"]["PROFILE"], **stage3).validate()
    # stage 3 reads stage 2's planned NUM_EXAMPLES from the run folder (PLANNED_EXAMPLES 0): 128 from 4,000 on
    assert (cfg3.chat_template, cfg3.planned_examples) == ("llama3_alpaca", 0)
    assert SFTStageConfig(profile="paper", planned_examples=4000).target_effective_batch(3990) == 128
    assert cfg3.selection_judge == "alpaca_eval:weighted_alpaca_eval_gpt4_turbo"
