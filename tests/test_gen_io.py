"""Loading training data in every format stage 2 writes, and the official released file as-is."""
import json
from pathlib import Path

import pytest

from helpers.generate.files import (load_training_data, read_query_types_file, read_skills_file, save_hf_dataset,
                            save_official_json, to_official)
from helpers.jsonl import JsonlAppender, append_jsonl, read_jsonl
from helpers.params import ParameterError

FIXTURES = Path(__file__).parent / "fixtures" / "generate"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "instruct-skillmix"


def test_official_fixture_loads_with_required_columns():
    ds = load_training_data(FIXTURES / "official_sample.json")
    assert len(ds) == 3 and {"instruction", "input", "output"} <= set(ds.column_names)
    assert ds[0]["input"] == "" and ds[1]["query_type"] == "Feedback-Seeking"


def test_reference_release_loads_as_is():
    path = REFERENCE / "ism_sda_k2_1000.json"
    if not path.exists():
        pytest.skip("reference release data not available")
    ds = load_training_data(path)
    assert len(ds) == 1000 and ds[0]["instruction"] and ds[0]["output"]
    held = REFERENCE / "ism_sda_heldout_k2_100.json"
    if held.exists():
        assert "generator" in load_training_data(held).column_names


def test_roundtrip_jsonl_official_and_datasets_folder(tmp_path):
    records = [{"instruction": f"q{i}", "input": "", "output": f"a{i}", "skills_joined_str": "a, b",
                "query_type": "Planning", "generator": "m", "shirker": None if i else "junk",
                "transcript": [{"role": "user", "content": "x"}]} for i in range(3)]
    for r in records:
        append_jsonl(tmp_path / "t.jsonl", r)
    save_official_json(tmp_path / "t.json", records)
    save_hf_dataset(tmp_path / "t_hf", records)
    for p in ("t.jsonl", "t.json", "t_hf"):
        ds = load_training_data(tmp_path / p)
        assert ds["instruction"] == ["q0", "q1", "q2"] and ds["input"] == ["", "", ""]
    assert list(json.loads((tmp_path / "t.json").read_text())[0]) == list(to_official(records[0]))


def test_torn_last_line_is_skipped(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"a": 2')
    assert read_jsonl(p, tolerate_torn=True) == [{"a": 1}]


def test_missing_input_is_filled_and_missing_output_is_an_error(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    assert load_training_data(tmp_path / "a.json")["input"] == [""]
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": "q"}]))
    with pytest.raises(ParameterError, match="output"):
        load_training_data(tmp_path / "b.json")
    with pytest.raises(ParameterError):
        load_training_data(tmp_path / "missing.json")


def test_stage1_inputs_read_from_jsonl():
    assert read_skills_file(FIXTURES / "skills.jsonl")[:2] == ["budget_forecasting", "nutrition_knowledge"]
    qts = read_query_types_file(FIXTURES / "query_types.jsonl")
    assert qts[1] == {"name": "Planning", "definition": "The person wants a plan for a goal.",
                      "examples": ["Plan a three-day trip to Lisbon."]}


def test_appended_records_survive_a_kill_before_close(tmp_path):
    """The progress log syncs to disk in the background, but a record is in the file the moment it is appended."""
    import subprocess
    import sys

    path = tmp_path / "progress.jsonl"
    script = ("import os, signal\nfrom helpers.jsonl import JsonlAppender\n"
              f"log = JsonlAppender({str(path)!r})\n"
              "for i in range(3):\n    log.append({'i': i})\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env={"PYTHONPATH": root}, timeout=60)
    assert done.returncode == -9
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2}]
    with JsonlAppender(path) as log:  # appends to what is there; closing is safe twice
        log.append({"i": 3})
    log.close()
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2, 3]


def test_background_import_of_datasets_gives_the_gil_back_often_then_restores_the_interval(monkeypatch):
    import importlib
    import sys

    from helpers.generate import files

    during = []
    monkeypatch.setattr(importlib, "import_module", lambda name: during.append(sys.getswitchinterval()))
    before = sys.getswitchinterval()
    files._import_datasets()
    assert during == [pytest.approx(files.IMPORT_SWITCH_INTERVAL_S)] and sys.getswitchinterval() == before
