"""The dry run: its request counts equal the requests each stage really sends to a fake OpenAI-compatible server
(stage 1's direct route, stage 2's kit and official flows, stage 3's selection judge, stage 4's notebook), unknown
prices stay unknown, and `helpers run --config configs/paper.yaml --dry-run` runs offline and writes nothing."""
from __future__ import annotations

import json
import threading

import pandas as pd
import pytest

from helpers.dry_run import estimate_table, format_estimate, generate_lines
from helpers.generate.config import GenerateConfig
from helpers.generate.stage import run_generation
from helpers.llm.accounting import CostLine, Throughput
from helpers.llm.client import connect
from helpers.llm.fake_openai import FakeOpenAIServer
from helpers.pipeline import dry_run_pipeline, run_pipeline
from helpers.runs import Run, read_notebook_records
from helpers.skills import STAGE as EXTRACT, SkillExtractionConfig, extract_skills, save_extraction

TEACHER = "fake-teacher-2024-01-01"


def _requests(lines: list[CostLine], stage: str, part: str | None = None) -> int:
    return sum(line.requests for line in lines if line.stage == stage and (part is None or line.part == part))


class Counter:
    """Counts the requests per model a reply function answers."""

    def __init__(self, reply) -> None:
        self.reply, self.by_model, self.lock = reply, {}, threading.Lock()

    def __call__(self, messages, body):
        with self.lock:
            self.by_model[body["model"]] = self.by_model.get(body["model"], 0) + 1
        return self.reply(messages, body)


@pytest.mark.parametrize("version", ["paper", "paper_gpt4turbo"])
def test_stages_1_and_2_estimates_equal_the_requests_sent(tmp_path, version):
    from test_endpoint_pipeline import scripted_teacher

    run_dir = tmp_path / "run"
    params = {"TEACHER_MODEL": TEACHER, "NUM_TOPICS": 3, "SKILLS_PER_TOPIC": 5, "NUM_QUERY_TYPES": 4,
              "NUM_EXAMPLES": 6, "NUM_HELDOUT": 2, "PROMPT_VERSION": version, "SHIRKER_FRACTION": 0.5,
              "MIN_INSTRUCTION_WORDS": 1}
    with FakeOpenAIServer(models=(TEACHER,), reply_fn=scripted_teacher) as server:
        params["TEACHER_BASE_URL"] = server.base_url
        lines = dry_run_pipeline(run_dir, params, ["01_extract_skills", "02_generate"])
        assert server.completions == 0 and not run_dir.exists()  # the estimate called nothing, wrote nothing
        values = {**params, "RUN_DIR": str(run_dir)}
        cfg1 = SkillExtractionConfig.from_params({k: v for k, v in values.items()
                                                  if k in SkillExtractionConfig.parameter_names()})
        client = connect(TEACHER, server.base_url, "", 8, stage=EXTRACT, cache_path=tmp_path / "c1.sqlite")
        run = Run(run_dir)
        run.begin_stage(EXTRACT, cfg1.as_params())
        save_extraction(run, extract_skills(cfg1, client))
        assert server.completions == _requests(lines, EXTRACT) == 5  # topics, 3 topics, query types
        cfg2 = GenerateConfig.from_params({k: v for k, v in values.items() if k in GenerateConfig.parameter_names()})
        client = connect(TEACHER, server.base_url, "", 8, stage="generate", cache_path=tmp_path / "c2.sqlite")
        outcome = run_generation(cfg2, client)
        sent = server.completions - 5
    assert not outcome.failed  # every conversation parsed at once: no retry is hidden in the count
    assert sent == _requests(lines, "generate") == generate_lines(cfg2)[0].requests
    turns = 3 if version == "paper" else 5
    assert sent == 8 * turns + 3  # 6 + 2 conversations, and shirker answers for half of the 6


def test_official_flow_estimate_equals_the_requests_sent(tmp_path):
    from official_clone import GPT, make_clone
    from test_gen_official import Recorder, _inputs

    clone = make_clone(tmp_path / "Instruct-SkillMix")
    skills, queries = _inputs(tmp_path, clone, GPT)
    cfg = GenerateConfig.from_params(dict(
        RUN_DIR=str(tmp_path / "run"), SEED=42, TEACHER_MODEL=GPT, SKILLS_PATH=str(skills),
        QUERY_TYPES_PATH=str(queries), NUM_EXAMPLES=6, NUM_HELDOUT=2, PROMPT_SOURCE="official",
        PROMPT_VERSION=f"generate_{GPT}", INSTRUCT_SKILLMIX_REPO=str(clone), TEMPERATURE=None,
        GENERATE_MAX_TOKENS=4096, MIN_INSTRUCTION_WORDS=1, INSTRUCTION_DEDUP_THRESHOLD=1.0, MAX_ATTEMPTS=2,
        SHIRKER_FRACTION=0.5, SHIRKER_KIND="junk"))
    line = generate_lines(cfg)[0]
    assert "not at hand" not in line.note  # the official prompt files were read, not stood in for
    recorder = Recorder()
    with FakeOpenAIServer(models=(GPT,), reply_fn=recorder) as server:
        client = connect(GPT, server.base_url, "", 4, stage="generate", cache_path=tmp_path / "cache.sqlite")
        outcome = run_generation(cfg, client)
    assert not outcome.failed
    assert len(recorder.bodies) == line.requests == 8 * 5 + 3
    assert line.usd() is not None and line.usd(batch=True) == pytest.approx(line.usd() / 2, abs=0.01)


def test_selection_judge_estimate_equals_the_requests_sent(tmp_path):
    from helpers.sft.config import SFTStageConfig
    from helpers.sft.estimate import estimate_sft
    from helpers.sft.select import select_by_judge

    records = [{"instruction": f"Explain item {i} in a sentence.", "input": "", "output": f"Item {i} is a thing."}
               for i in range(5)]
    for name in ("train", "heldout"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = SFTStageConfig.from_params({"RUN_DIR": str(tmp_path / "run"),
                                      "TRAIN_DATA_PATH": str(tmp_path / "train.jsonl"),
                                      "HELDOUT_DATA_PATH": str(tmp_path / "heldout.jsonl"), "MAX_STEPS": -1,
                                      "NUM_EPOCHS": 3.0, "SAVE_STRATEGY": "epoch", "SELECTION": "judge",
                                      "SELECTION_EXAMPLES": 4, "JUDGE_MODEL": "fake-judge-sft"})
    lines = {line.part: line for line in estimate_sft(cfg, (0, 0), Throughput())}
    checkpoints = [tmp_path / f"checkpoint-{step}" for step in (2, 4, 6)]  # one per epoch
    with FakeOpenAIServer(models=("fake-judge-sft",), reply_fn=lambda m, b: "A") as server:
        judge = connect("fake-judge-sft", server.base_url, "", 4, stage="sft", cache_path=tmp_path / "j.sqlite")
        select_by_judge(checkpoints, lambda c, ins: [f"{c.name} says {i}" for i in ins], judge,
                        [r["instruction"] for r in records[:4]], [r["output"] for r in records[:4]], 0)
        assert server.completions == lines["selection judge"].requests == 3 * 4
    assert lines["training"].gpu_tokens > 0 and lines["training"].gpu_hours > 0 and lines["training"].in_process
    assert lines["held-out answers"].requests == 3 * 4 + 4 + min(cfg.compare_examples, 4)


def _stage4_reply(messages, body):
    if body["model"] == "fake-judge-4":
        return "A" if body.get("max_tokens") == 1 else "The answer is fine. Rating: [[7]]"
    # two sentences, so the probe's brevity stand-in (the first sentence) differs from the answer
    return "A short answer. It goes on about " + " ".join(m["content"][:12] for m in messages if m["role"] == "user")


def test_stage4_estimate_equals_the_requests_the_notebook_sends(tmp_path):
    counter = Counter(_stage4_reply)
    run_dir = tmp_path / "run"
    with FakeOpenAIServer(models=("fake-student-4", "fake-judge-4"), reply_fn=counter) as server:
        params = {"STUDENT_MODEL": "fake-student-4", "STUDENT_BASE_URL": server.base_url, "COMPARE_BASE": False,
                  "JUDGE_MODEL": "fake-judge-4", "JUDGE_BASE_URL": server.base_url, "N_EVAL": 10, "N_MT_BENCH": 3,
                  "SHIRKER_PROBE_FRACTIONS": [0.0, 0.5], "SHIRKER_PROBE_KINDS": ["brevity", "junk"]}
        lines = dry_run_pipeline(run_dir, params, ["04_eval_ablations"])
        assert server.completions == 0
        run_pipeline(run_dir, params, ["04_eval_ablations"], log=lambda _: None, progress=False)
    parts = {line.part: line.requests for line in lines}
    assert counter.by_model["fake-student-4"] == parts["student answers"] + parts["student MT-Bench answers"] == 10 + 6
    judged = parts["pairwise judge"] + parts["shirker probe"] + parts["MT-Bench judge"]
    assert counter.by_model["fake-judge-4"] == judged == 10 + 2 * 5 + 6
    recorded = json.loads((run_dir / "results.json").read_text())["evaluate"]["estimate"]
    assert [r["requests"] for r in recorded if r["part"] == "pairwise judge"] == [10]


def test_unknown_prices_stay_unknown_and_totals_follow():
    priced = CostLine("generate", "teacher", "gpt-4o-mini-2024-07-18", requests=10, input_tokens=10**6,
                      output_tokens=10**6, output_cap_tokens=2 * 10**6)
    unpriced = CostLine("evaluate", "judge", "some-unlisted-model", requests=1, input_tokens=5, output_tokens=1)
    local = CostLine("sft", "training", "m", in_process=True, gpu_tokens=7_200_000, tokens_per_s=1000.0)
    assert priced.usd() == pytest.approx(0.75) and priced.usd(batch=True) == pytest.approx(0.375)
    assert priced.usd(cap=True) == pytest.approx(0.15 + 1.2)
    assert unpriced.usd() is None and local.usd() == 0.0 and local.gpu_hours == pytest.approx(2.0)
    table = estimate_table([priced, local]).set_index("part")
    assert table.loc["TOTAL", "usd_live"] == pytest.approx(0.75) and table.loc["TOTAL", "gpu_hours"] == 2.0
    table = estimate_table([priced, unpriced, local]).set_index("part")
    assert pd.isna(table.loc["TOTAL", "usd_live"]) and pd.isna(table.loc["TOTAL", "usd_batch"])  # never 0
    assert "unknown" in format_estimate([priced, unpriced, local], Throughput()).split("TOTAL")[1].splitlines()[0]


def test_earlier_run_averages_replace_the_estimate():
    line = CostLine("generate", "teacher", "m", requests=100, input_tokens=1, output_tokens=1, output_cap_tokens=10**6)
    line.with_run_averages({"model": "m", "calls": 3, "cache_hits": 1, "input_tokens": 300, "output_tokens": 60,
                            "cached_input_tokens": 100, "cached_output_tokens": 20})
    assert (line.input_tokens, line.output_tokens) == (100 * 100, 100 * 20) and "earlier run" in line.basis
    other = CostLine("generate", "teacher", "m", requests=100, input_tokens=1, output_tokens=1)
    assert other.with_run_averages({"model": "another-model", "calls": 3, "input_tokens": 9}).input_tokens == 1


def test_paper_dry_run_from_the_command_line_is_offline_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from helpers.__main__ import main

    monkeypatch.setenv("ISM_OFFICIAL_URL", "http://127.0.0.1:9/{repository}/{commit}/{path}")  # nothing answers
    monkeypatch.setenv("ISM_CACHE_DIR", str(tmp_path / "empty-cache"))
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # as the command sets them, undone after the test
        monkeypatch.setenv(name, "1")
    run_dir = tmp_path / "paper"
    assert main(["run", "--run-dir", str(run_dir), "--config", "configs/paper.yaml", "--dry-run",
                 "--assume-tokens-per-s", "1250"]) == 0
    out = capsys.readouterr().out
    assert not run_dir.exists()
    for stage in ("extract_skills", "generate", "sft", "evaluate"):
        assert stage in out
    total = next(row for row in out.splitlines() if "TOTAL" in row)
    assert "unknown" not in total and "$" in total and "answering 1,250 generated tokens/s" in out
    generate = next(row for row in out.splitlines() if "teacher conversations" in row)
    assert "gpt-4-turbo-2024-04-09" in generate and "20,500" in generate  # (4,000 + 100) x 5 turns
    assert "counted with the kit's 5-turn" in out  # the official prompt files were not at hand, and it says so
    with pytest.raises(SystemExit):
        main(["run", "--config", "configs/paper.yaml", "--dry-run", "--assume-tokens-per-s", "zero"])
    assert main(["run", "--config", "configs/paper.yaml", "--dry-run", "--assume-train-tokens-per-s", "0"]) == 2


def test_dry_run_parameter_is_checked_and_shared():
    from helpers.config import SHARED
    from helpers.params import ParameterError
    from helpers.pipeline import STAGE_CONFIGS

    assert "dry_run" in SHARED
    for cls in STAGE_CONFIGS.values():
        assert "DRY_RUN" in cls.parameter_names()
    with pytest.raises(ParameterError, match="DRY_RUN"):
        SkillExtractionConfig.from_params({"DRY_RUN": "yes"})


def test_notebooks_with_dry_run_show_the_estimate_and_call_nothing(tmp_path):
    records = [{"instruction": f"Explain item {i} in a sentence.", "input": "", "output": f"Item {i} is a thing."}
               for i in range(4)]
    for name in ("train", "heldout"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run_dir = tmp_path / "run"
    with FakeOpenAIServer(models=(TEACHER, "fake-judge-dry")) as server:
        run_pipeline(run_dir, {"DRY_RUN": True, "TEACHER_MODEL": TEACHER, "TEACHER_BASE_URL": server.base_url,
                               "TRAIN_DATA_PATH": str(tmp_path / "train.jsonl"),
                               "HELDOUT_DATA_PATH": str(tmp_path / "heldout.jsonl"), "SELECTION": "judge",
                               "JUDGE_MODEL": "fake-judge-dry", "JUDGE_BASE_URL": server.base_url},
                     ["01_extract_skills", "03_sft"], log=lambda _: None, progress=False)
        assert server.completions == 0
    results = Run(run_dir).results()
    assert [r["requests"] for r in results["extract_skills"]["estimate"] if r["part"] == "TOTAL"] == [5]
    assert "finished" in Run(run_dir).manifest()["stages"]["extract_skills"]
    assert read_notebook_records(run_dir / "notebooks" / "01_extract_skills.ipynb")["extract_skills"] == \
        results["extract_skills"]  # the estimate is in the executed notebook too, as every record
    assert not (run_dir / "skills.jsonl").exists() and not (run_dir / "sft").exists()  # nothing was extracted or trained
    executed = json.loads((run_dir / "notebooks" / "03_sft.ipynb").read_text())
    shown = "".join("".join(o.get("data", {}).get("text/plain", "")) for c in executed["cells"]
                    for o in c.get("outputs", []))
    assert "selection judge" in shown and "training" in shown
