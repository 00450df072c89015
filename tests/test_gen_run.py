"""Stage 2 end to end against a scripted fake teacher: transcripts, retries, filters, held-out disjointness,
determinism, shirker sweeps paying only new answers, dry-run estimates, and a SIGKILL followed by a resume."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.generate.config import GenerateConfig
from helpers.generate.estimate import estimate_generation
from helpers.generate.files import load_training_data
from helpers.jsonl import read_jsonl
from helpers.generate.prompt_versions import build_turns, get_version, read_prompt
from helpers.generate.stage import GenerationError, generate_split, load_stage1_inputs, make_plans, run_generation
from helpers.generate.shirkers import shirker_count
from helpers.llm.client import connect_function
from helpers.params import ParameterError

FIXTURES = Path(__file__).parent / "fixtures" / "generate"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(FIXTURES))
from fake_teacher import FakeTeacher  # noqa: E402


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    for name in ("skills.jsonl", "query_types.jsonl"):
        shutil.copy(FIXTURES / name, d / name)
    return d


# The paper's procedure where the notebook's CPU demo defaults differ from it.
PAPER_PROCEDURE = dict(prompt_version="paper", max_attempts=3, drop_truncated=True)


def config(run_dir, **kw):
    base = dict(run_dir=str(run_dir), num_examples=10, num_heldout=4, min_instruction_words=3, generate_max_tokens=512,
                **PAPER_PROCEDURE)
    return GenerateConfig(**{**base, **kw}).validate()


def client_for(teacher, cache):
    return connect_function(teacher, model="fake-teacher", stage="generate", cache_path=cache, max_concurrency=4)


def test_exact_transcript_for_paper_version(run_dir, tmp_path):
    cfg = config(run_dir, num_examples=1, num_heldout=0)
    plans, _ = make_plans(cfg, *__import__("helpers.generate.stage", fromlist=["x"]).load_stage1_inputs(cfg))
    version = get_version("paper")
    examples, failed = generate_split(client_for(FakeTeacher(), tmp_path / "c.sqlite"), plans, version, cfg,
                                      tmp_path / "p.jsonl")
    assert not failed
    t = examples[0]["transcript"]
    assert [m["role"] for m in t] == ["user", "assistant"] * 3
    assert [m["content"] for m in t[0::2]] == build_turns(plans[0], version)
    first = t[0]["content"]
    assert f"### Skills: {plans[0].skills_joined_str}" in first and f"### Task Type: {plans[0].query_type['name']}" in first
    assert plans[0].query_type["definition"] in first
    assert t[2]["content"] == read_prompt("critique.txt") and t[4]["content"] == read_prompt("refine.txt")
    assert examples[0]["response_from_turn"] == "refine" and examples[0]["output"].startswith("Refined answer")


def test_rewrite_turns_always_or_only_after_truncation(run_dir, tmp_path):
    cfg = config(run_dir, num_examples=1, num_heldout=0)
    from helpers.generate.stage import load_stage1_inputs
    plans, _ = make_plans(cfg, *load_stage1_inputs(cfg))
    always, _ = generate_split(client_for(FakeTeacher(), tmp_path / "a.sqlite"), plans, get_version("paper_gpt4turbo"),
                               cfg, tmp_path / "a.jsonl")
    users = [m["content"] for m in always[0]["transcript"] if m["role"] == "user"]
    assert users[1:] == [read_prompt(f) for f in ("rewrite_cut_off.txt", "critique.txt", "refine.txt",
                                                  "rewrite_cut_off_refined.txt")]
    assert always[0]["response_from_turn"] == "rewrite_refined" and always[0]["instruction_from_turn"] == "refine"
    cond, _ = generate_split(client_for(FakeTeacher(truncate_generate=True), tmp_path / "b.sqlite"), plans,
                             get_version("paper_rewrite_if_truncated"), cfg, tmp_path / "b.jsonl")
    users = [m["content"] for m in cond[0]["transcript"] if m["role"] == "user"]
    # the draft was cut off -> rewrite it; the refined reply was complete -> no second rewrite
    assert users[1:] == [read_prompt(f) for f in ("rewrite_cut_off.txt", "critique.txt", "refine.txt")]


def test_full_run_outputs_retries_failures_and_formats(run_dir):
    teacher = FakeTeacher(never_parse={"poetry_meter"}, fail_first={"map_reading"})
    cfg = config(run_dir, num_examples=12, num_heldout=6, max_attempts=2)
    out = run_generation(cfg, client_for(teacher, run_dir / "c.sqlite"))
    s = out.summary()
    planned_failures = {p.example_id for p in out.train_plans + out.heldout_plans if "poetry_meter" in p.skills}
    assert {f["example_id"] for f in out.failed} == planned_failures and planned_failures
    f0 = out.failed[0]
    assert len(f0["reasons"]) == 2 and f0["transcript"] and f0["attempts"] == 2
    retried = [ex for ex in out.train + out.heldout if "map_reading" in ex["skills"]]
    assert retried and all(ex["attempt"] == 2 for ex in retried)
    assert s["num_examples"] == len(out.train) > 0 and s["num_failed"] == len(planned_failures)
    assert s["num_examples"] + s["num_failed_train"] + sum(len(v) for v in out.train_filter.dropped.values()) == 12
    ex = out.train[0]
    for key in ("instruction", "input", "output", "skills_joined_str", "query_type", "generator", "skills", "k",
                "seed", "prompt_version", "shirker", "input_tokens", "output_tokens", "transcript", "attempt",
                "example_id"):
        assert key in ex
    assert ex["generator"] == "fake-teacher" and ex["input"] == "" and ex["skills_joined_str"] == ", ".join(ex["skills"])
    data = run_dir / "data"
    official = json.loads((data / "train_official.json").read_text())
    assert len(official) == len(out.train) and set(official[0]) >= {"instruction", "input", "output",
                                                                   "skills_joined_str", "query_type", "generator"}
    for path in ("train.jsonl", "train_official.json", "train_hf"):
        ds = load_training_data(data / path)
        assert len(ds) == len(out.train) and ds[0]["instruction"] == out.train[0]["instruction"]
    assert len(load_training_data(data / "heldout_hf")) == len(out.heldout)
    assert len(read_jsonl(data / "failed.jsonl")) == len(out.failed)
    train_instr = {e["instruction"] for e in out.train}
    assert not train_instr & {e["instruction"] for e in out.heldout}


def test_heldout_collisions_are_dropped_from_heldout(run_dir):
    def same_per_query_type(messages, sampling):
        first = messages[0]["content"]
        qt = first.split("### Task Type: ")[-1].splitlines()[0]
        return f"### Instruction: Tell me something useful about the {qt} category please.\n### Response: ok"

    cfg = config(run_dir, num_examples=6, num_heldout=6, prompt_version="single_turn", instruction_dedup_threshold=1.0)
    out = run_generation(cfg, client_for(same_per_query_type, run_dir / "c.sqlite"))
    assert len(out.train) == 3  # one per query type; the rest are duplicates
    assert out.heldout == [] and out.summary()["num_heldout_collisions"] == 6


def test_same_seed_same_data_other_seed_other_plan(tmp_path):
    results = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        d = tmp_path / name
        d.mkdir()
        for f in ("skills.jsonl", "query_types.jsonl"):
            shutil.copy(FIXTURES / f, d / f)
        out = run_generation(config(d, seed=seed), client_for(FakeTeacher(), d / "c.sqlite"))
        results.append([(e["example_id"], e["instruction"], e["output"], e["query_type"]) for e in out.train + out.heldout])
    assert results[0] == results[1] and results[0] != results[2]


def test_shirker_sweep_pays_only_new_shirker_answers(tmp_path):
    cache = tmp_path / "shared.sqlite"
    counts, sets = [], []
    for frac in (0.0, 0.2, 0.5):
        d = tmp_path / f"f{frac}"
        d.mkdir()
        for f in ("skills.jsonl", "query_types.jsonl"):
            shutil.copy(FIXTURES / f, d / f)
        teacher = FakeTeacher()
        out = run_generation(config(d, num_examples=20, num_heldout=2, shirker_fraction=frac, shirker_kind="junk"),
                             client_for(teacher, cache))
        counts.append(len(teacher.calls))
        shirk = {e["example_id"] for e in out.train if e["shirker"] == "junk"}
        assert len(shirk) == shirker_count(len(out.train), frac) == out.summary()["num_shirkers"]
        for e in out.train:
            if e["shirker"]:
                assert e["output"].startswith("Well, basically") and e["good_output"].startswith("Refined")
        sets.append(shirk)
    n = len(out.train)
    assert 0 < counts[0] <= 3 * 22  # identical conversations (same pair, order and type) come from the cache
    assert counts[1] == shirker_count(n, 0.2)  # good answers all came from the cache
    assert counts[2] == shirker_count(n, 0.5) - shirker_count(n, 0.2)  # nested: only the new shirkers are paid
    assert sets[1] <= sets[2]


def test_zero_usable_examples_raise_a_clear_error(run_dir):
    cfg = config(run_dir, num_examples=3, num_heldout=0, max_attempts=1)
    out = run_generation(cfg, client_for(lambda m, s: "no format", run_dir / "c.sqlite"))
    assert out.summary()["num_examples"] == 0 and out.summary()["num_failed"] == 3
    assert (run_dir / "data" / "failed.jsonl").exists()
    with pytest.raises(GenerationError, match="MAX_ATTEMPTS"):
        out.require_usable()


def test_dry_run_estimate_counts_calls(run_dir):
    from helpers.generate.stage import load_stage1_inputs
    cfg = config(run_dir, num_examples=10, num_heldout=4, shirker_fraction=0.2)
    train, held = make_plans(cfg, *load_stage1_inputs(cfg))
    est = estimate_generation(train + held, get_version("paper"), model="smollm2-135m-instruct", max_tokens=512,
                              shirker_fraction=0.2)
    assert est["upper_bound"]["calls"] == 14 * 3 + 2
    assert est["upper_bound"]["output_tokens"] == (14 * 3 + 2) * 512
    assert est["upper_bound"]["cost_usd"] == 0.0
    assert est["typical"]["input_tokens"] < est["upper_bound"]["input_tokens"]
    assert estimate_generation(train, get_version("paper"), model="unknown-model", max_tokens=64)["typical"]["cost_usd"] is None


@pytest.mark.parametrize("name,value", [("NUM_EXAMPLES", 0), ("K_SKILLS", 0), ("PROMPT_VERSION", "nope"),
                                        ("TEMPERATURE", 3.0), ("SHIRKER_FRACTION", 1.5), ("SHIRKER_KIND", "rude"),
                                        ("INSTRUCTION_DEDUP_THRESHOLD", 0.0), ("DRY_RUN", "yes"), ("MAX_ATTEMPTS", 0),
                                        ("TEACHER_API_KEY_ENV", "sk-abcdefabcdef")])
def test_bad_parameters_fail_before_any_call(run_dir, name, value):
    params = {**config(run_dir).as_params(), name: value}
    with pytest.raises(ParameterError) as err:
        GenerateConfig.from_params(params).validate()
    assert err.value.name == name


def test_missing_stage1_inputs_say_what_to_do(tmp_path):
    with pytest.raises(ParameterError, match="01_extract_skills") as err:
        GenerateConfig(run_dir=str(tmp_path)).validate()
    assert err.value.name == "SKILLS_PATH"


RESUME_SCRIPT = """
import json, sys
sys.path[:0] = [{root!r}, {fixtures!r}]
from fake_teacher import FakeTeacher
from helpers.generate.config import GenerateConfig
from helpers.generate.stage import run_generation
from helpers.llm.client import connect_function
kill_at = int(sys.argv[1]) or None
teacher = FakeTeacher(counter_file={counter!r}, kill_at=kill_at)
client = connect_function(teacher, model="fake-teacher", cache_path={cache!r}, max_concurrency=4)
cfg = GenerateConfig(run_dir={run!r}, num_examples=12, num_heldout=0, min_instruction_words=3, seed=3,
                     prompt_version="paper", generate_max_tokens=2048, max_attempts=3, drop_truncated=True).validate()
out = run_generation(cfg, client)
print(json.dumps({{"summary": out.summary(), "paid": len(teacher.calls)}}))
"""


def test_killed_run_resumes_without_repaying_completed_calls(run_dir, tmp_path):
    counter, cache = tmp_path / "calls.txt", tmp_path / "c.sqlite"
    script = tmp_path / "gen.py"
    script.write_text(RESUME_SCRIPT.format(root=str(ROOT), fixtures=str(FIXTURES), counter=str(counter),
                                           cache=str(cache), run=str(run_dir)))
    killed = subprocess.run([sys.executable, str(script), "30"], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    progress = read_jsonl(run_dir / "data" / "progress_train.jsonl", tolerate_torn=True)
    assert 0 < len(progress) < 12  # some examples finished before the kill, some did not
    paid_before = len(counter.read_text().splitlines())
    assert paid_before == 30
    done = subprocess.run([sys.executable, str(script), "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["summary"]["num_examples"] == 12
    hashes = counter.read_text().splitlines()
    assert len(hashes) == len(set(hashes)) == 36  # every call paid exactly once across both runs
    assert result["paid"] == 36 - paid_before
    assert len(read_jsonl(run_dir / "data" / "train.jsonl")) == 12


def test_plots_and_renderings_build_from_an_outcome(run_dir):
    import matplotlib
    matplotlib.use("Agg")
    from helpers.generate import plots as gen_plots

    out = run_generation(config(run_dir, num_examples=8, num_heldout=2, shirker_fraction=0.25),
                         client_for(FakeTeacher(never_parse={"poetry_meter"}), run_dir / "c.sqlite"))
    s = out.summary()
    for fig in (gen_plots.skill_usage_figure(out.train_plans, 12), gen_plots.query_type_figure(out.train_plans, out.train),
                gen_plots.pair_coverage_figure(out.train_plans, 12), gen_plots.length_figure(out.train),
                gen_plots.outcome_figure(s)):
        assert fig.axes
    assert int(gen_plots.outcome_table(s).set_index("what").loc["kept: train", "examples"]) == len(out.train)
    assert "shirker: junk" in gen_plots.examples_markdown(sorted(out.train, key=lambda e: e["shirker"] is None), n=8)
    assert "no instruction" in gen_plots.failures_markdown(out.failed) or not out.failed


def test_rerun_after_an_outage_retries_what_failed(run_dir, capsys):
    """Stage 2 against a real HTTP endpoint that fails part of the calls, then comes back: the re-run pays only for
    the failed examples, says how many it retried, and ends with none failed."""
    from helpers.llm.client import connect
    from helpers.llm.fake_openai import FakeOpenAIServer

    cfg = config(run_dir, num_examples=6, num_heldout=2, max_attempts=1)
    with FakeOpenAIServer(models=("teacher",), reply_fn=FakeTeacher()) as srv:
        def teacher():
            return connect("teacher", srv.base_url, "", max_concurrency=1, stage="generate",
                           cache_path=run_dir / "c.sqlite", show_progress=False, max_attempts=1)

        srv.script(["500"] * 4)  # the outage: the first 4 requests fail, one per example (one try each)
        first = run_generation(cfg, teacher())
        failed = first.summary()["num_failed"]
        assert failed == 4 and len(first.train) + len(first.heldout) + failed == 8
        paid = srv.completions
        second = run_generation(cfg, teacher())
        s = second.summary()
        assert s["num_failed"] == 0 and s["num_retried_failed"] == failed and s["num_resumed"] == 8 - failed
        assert srv.completions - paid == failed * 3  # three turns per failed example; successes were not re-paid
        assert "Trying again 4 example(s)" in capsys.readouterr().out
        third = run_generation(cfg, teacher())
        assert third.summary()["num_retried_failed"] == 0 and srv.completions - paid == failed * 3


def test_outputs_are_replaced_together(run_dir, monkeypatch):
    """A failure while writing the new outputs (here: the held-out `datasets` copy) leaves the previous run's files
    all in place, never a new heldout.jsonl beside an old heldout_hf."""
    from helpers.generate import stage

    cfg = config(run_dir, num_examples=4, num_heldout=2)
    run_generation(cfg, client_for(FakeTeacher(), run_dir / "c.sqlite"))
    data = run_dir / "data"
    names = ("train.jsonl", "heldout.jsonl", "train_official.json", "heldout_official.json", "failed.jsonl")
    before = {n: (data / n).read_bytes() for n in names}
    hf_before = sorted(p.name for p in (data / "heldout_hf").iterdir())
    real_save = stage.save_hf_dataset

    def crash_on_heldout(path, records):
        if "heldout" in str(path):
            raise KeyboardInterrupt("killed while saving")
        return real_save(path, records)

    monkeypatch.setattr(stage, "save_hf_dataset", crash_on_heldout)
    with pytest.raises(KeyboardInterrupt):
        run_generation(config(run_dir, num_examples=6, num_heldout=3), client_for(FakeTeacher(), run_dir / "c.sqlite"))
    assert {n: (data / n).read_bytes() for n in names} == before
    assert sorted(p.name for p in (data / "heldout_hf").iterdir()) == hf_before
    assert not [p for p in data.iterdir() if p.name.startswith((".staging", ".replaced", ".swap"))]
    monkeypatch.setattr(stage, "save_hf_dataset", real_save)
    out = run_generation(config(run_dir, num_examples=6, num_heldout=3), client_for(FakeTeacher(), run_dir / "c.sqlite"))
    assert len(read_jsonl(data / "heldout.jsonl")) == len(out.heldout) == len(load_training_data(data / "heldout_hf"))


def test_a_swap_cut_by_a_kill_is_completed_next_time(tmp_path):
    from helpers.swap import JOURNAL, finish_interrupted_swap

    folder = tmp_path / "data"
    (folder / ".staging-1").mkdir(parents=True)
    for name in ("a.jsonl", "b.jsonl"):
        (folder / name).write_text("old")
        (folder / ".staging-1" / name).write_text("new")
    (folder / "a.jsonl").replace(tmp_path / "gone")  # the kill came after a.jsonl was moved aside ...
    (folder / ".staging-1" / "a.jsonl").replace(folder / "a.jsonl")  # ... and the new one moved in
    (folder / JOURNAL).write_text(json.dumps({"staging": ".staging-1", "trash": ".replaced-1",
                                              "names": ["a.jsonl", "b.jsonl"]}))
    assert finish_interrupted_swap(folder) == 1
    assert (folder / "a.jsonl").read_text() == (folder / "b.jsonl").read_text() == "new"
    assert sorted(p.name for p in folder.iterdir()) == ["a.jsonl", "b.jsonl"]


def test_a_plan_repeating_an_earlier_prompt_is_a_sample_of_its_own(run_dir):
    """Two examples with the same skills and query type are two teacher samples, not one cache entry read twice."""
    from helpers.generate.sampling import ExamplePlan, attempt_salt, repeat_salts

    qt = {"name": "Planning"}
    plans = [ExamplePlan("a", "train", 0, ("x", "y"), qt), ExamplePlan("b", "train", 1, ("x", "y"), qt),
             ExamplePlan("c", "train", 2, ("y", "x"), qt), ExamplePlan("d", "heldout", 0, ("x", "y"), qt)]
    assert repeat_salts(plans) == {"a": "", "b": "repeat-1", "c": "", "d": "repeat-2"}
    assert [attempt_salt("", 1), attempt_salt("", 2), attempt_salt("repeat-1", 3)] == ["", "attempt-2",
                                                                                       "repeat-1/attempt-3"]
    salts = []
    teacher = FakeTeacher()

    def reply(messages, sampling):
        return teacher(messages, sampling)

    client = connect_function(reply, model="fake-teacher", stage="generate", cache_path=run_dir / "c.sqlite",
                              max_concurrency=1)
    original = client.achat

    async def spy(messages, salt="", **sampling):
        salts.append(salt)
        return await original(messages, salt=salt, **sampling)

    client.achat = spy
    lines = (FIXTURES / "skills.jsonl").read_text().splitlines()[:3]  # 3 skills, 1 query type: 6 ordered pairs
    (run_dir / "skills.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "query_types.jsonl").write_text((FIXTURES / "query_types.jsonl").read_text().splitlines()[0] + "\n")
    cfg = config(run_dir, num_examples=12, num_heldout=0)
    train, _ = make_plans(cfg, *load_stage1_inputs(cfg))
    repeated = sum(1 for v in repeat_salts(train).values() if v)
    assert repeated, "the test's skill list should make some plans repeat"
    run_generation(cfg, client)
    assert sum(s.startswith("repeat-") for s in salts) >= repeated  # every turn of a repeat is its own request
    assert client.usage.cache_hits == 0  # no repeat read an earlier example's cached replies
