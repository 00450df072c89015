"""benchmarks/bench_gpu.py runs (here on a CPU, at tiny sizes, on the tests' tiny model) and reports what docs/gpu.md
quotes; its pipeline section is driven with a stand-in runner (the real stages are the smoke test's)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from helpers.llm.device import batch_size_for
from helpers.runs import Run

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sft_and_answer_sections_run_at_tiny_sizes(tiny_base, capsys):
    assert _bench().main(["--tiny", "--model", str(tiny_base), "--no-vllm", "--sections", "sft,answers"]) == 0
    text = capsys.readouterr().out
    result = json.loads(text[text.rindex("{\n  \"benchmark\""):])  # trainer logs print dicts before it
    assert result["device"] == "cpu" and result["tiny"] is True
    for mode in ("padding", "packing"):
        assert result["sft"][mode]["tokens_per_s"] > 0 and result["sft"][mode]["tokens"] > 0
    assert result["sft"]["packing_over_padding"] > 0
    answers = result["answers"]
    assert answers["transformers"]["tokens_per_s"] > 0 and answers["transformers"]["batch_size"] == batch_size_for("cpu")
    assert answers["vllm"] == "not run (--no-vllm)"


def test_pipeline_section_times_stages_03_04_on_a_run_folder_made_by_01_02(tmp_path):
    calls = []

    def runner(run_dir, params, stages, progress=True):
        calls.append(list(stages))
        run = Run(run_dir)
        if stages[0] == "03_sft":
            run.begin_stage("sft", {})
            run.set_stage_info("answers", {"device": "cpu", "dtype": "float32", "engine": "transformers"})
            run.begin_stage("evaluate", {})
            run.add_model("STUDENT", {"device": "cpu", "dtype": "float32", "engine": "transformers",
                                      "engine_version": "transformers==x", "model": "m"})

    out = _bench().pipeline_section(tiny=True, runner=runner, run_dir=tmp_path / "run")
    assert calls == [["01_extract_skills", "02_generate"], ["03_sft", "04_eval_ablations"]]
    assert set(out["seconds"]) == {"01+02", "03+04"} and out["stages_03_04_s"] >= 0
    assert out["sft_answers"]["engine"] == "transformers"
    assert out["evaluate_models"] == {"student": {"device": "cpu", "dtype": "float32", "engine": "transformers",
                                                  "engine_version": "transformers==x"}}
