"""Every time the README and docs/running.md give for the demo is a measured one: `make bench`
(benchmarks/bench_demo.py) writes benchmarks/demo_time.json, and a sentence about the demo may quote only the total
or the stage times that file holds, together with the date it was measured."""
from __future__ import annotations

import json
import re

import pytest

from helpers.runs import PROJECT_ROOT

MEASURED = PROJECT_ROOT / "benchmarks" / "demo_time.json"
PAGES = [PROJECT_ROOT / "README.md", PROJECT_ROOT / "docs" / "running.md"]
MIN_S = re.compile(r"(\d+)\s*min\s*(\d+)\s*s\b")
SECONDS = re.compile(r"(\d+(?:\.\d+)?)(?:\s*/\s*\d+(?:\.\d+)?)*\s*(?:s|seconds?)\b")
MINUTES = re.compile(r"(\d+(?:\.\d+)?)\s*(?:min|minutes?|hours?)\b")


def as_min_s(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s"


def demo_sentences(text: str) -> list[str]:
    """Sentences of prose (code blocks left out) that speak of the demo's run."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
    return [s for s in re.split(r"(?<=[.;:])\s+(?=[A-Z*`(])", prose)
            if re.search(r"make demo|the demo\b", s, re.I) and re.search(r"\d\s*(?:min|s\b|seconds|minutes)", s)]


def durations(sentence: str) -> list[str]:
    """Each time a sentence names: `N min M s` figures whole, other numbers of seconds or minutes as written."""
    found = [f"{m.group(1)} min {m.group(2)} s" for m in MIN_S.finditer(sentence)]
    rest = MIN_S.sub(" ", sentence)
    found += [m.group(0) for m in SECONDS.finditer(rest)] + [m.group(0) for m in MINUTES.finditer(rest)]
    return found


@pytest.fixture(scope="module")
def measured() -> dict:
    assert MEASURED.exists(), "benchmarks/demo_time.json is missing: run `make bench` (benchmarks/bench_demo.py)"
    return json.loads(MEASURED.read_text())


def test_the_measurement_says_when_where_and_how(measured):
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", measured["date"])
    assert measured["machine"]["cores"] >= 1 and measured["machine"]["cpu_model"]
    assert measured["commit"] and measured["empty_call_cache"] is True
    assert measured["total_s"] > 0 and set(measured["stages"]) == {
        "01_extract_skills", "02_generate", "03_sft", "04_eval_ablations"}
    assert sum(s["seconds"] for s in measured["stages"].values()) <= measured["total_s"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_documented_demo_time_is_the_measured_one(page, measured):
    allowed = {as_min_s(measured["total_s"])}
    allowed |= {f"{round(s['seconds'])} s" for s in measured["stages"].values()}
    if measured.get("setup_materialise_s"):  # what `make setup` adds before the demo
        allowed.add(f"{round(measured['setup_materialise_s'])} s")
    sentences = demo_sentences(page.read_text())
    assert any(as_min_s(measured["total_s"]) in s for s in sentences), \
        f"{page.name} does not quote the measured demo time {as_min_s(measured['total_s'])}"
    for sentence in sentences:
        for duration in durations(sentence):
            # stage times are quoted as a list: "71 / 206 / 361 / 783 s"
            parts = [f"{p.strip()} s" for p in re.sub(r"\s*s$", "", duration).split("/")] if "/" in duration \
                else [duration]
            unmeasured = [d for d in parts if d not in allowed]
            assert not unmeasured, (f"{page.name}: {unmeasured} has no measurement behind it in "
                                    f"benchmarks/demo_time.json ({sorted(allowed)}): {sentence[:200]}")
        if as_min_s(measured["total_s"]) in sentence:
            assert measured["date"] in sentence, f"{page.name}: the demo's time without its date: {sentence[:200]}"


def test_the_rules_catch_an_unmeasured_time():
    text = "On a quiet CPU `make demo` takes about **5 min 33 s**; stages 24 / 97 / 80 / 130 s. `make test` takes 5 minutes."
    sentences = demo_sentences(text)
    assert len(sentences) == 1 and durations(sentences[0]) == ["5 min 33 s", "24 / 97 / 80 / 130 s"]
    assert durations("the demo runs in under 6 minutes") == ["6 minutes"]


def test_make_setup_materialises_the_models_as_the_benchmark_does():
    from helpers.llm.models import MATERIALISE_COMMAND

    makefile = (PROJECT_ROOT / "Makefile").read_text()
    setup = makefile.split("$(STAMP):", 1)[1].split("\nsetup:", 1)[0]
    assert f'-c "{MATERIALISE_COMMAND}"' in setup
    assert "benchmarks/bench_demo.py" in makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
