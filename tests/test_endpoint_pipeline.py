"""Stages 1-2 through papermill against a key-protected OpenAI-compatible server (the fake one, scripted like a
capable teacher): the real endpoint path end to end, exact counts, and no trace of the key anywhere on disk."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from helpers.llm.fake_openai import FakeOpenAIServer
from helpers.pipeline import run_pipeline
from helpers.runs import Run, read_notebook_records

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "generate"))
from fake_teacher import FakeTeacher  # noqa: E402

SENTINEL = "sk-SENTINEL-4c1d9e7b-never-store-me"
TOPICS = ["Cooking at home", "Personal finance", "Software debugging"]
QUERY_TYPES = """1. **Information-Seeking**: the person wants facts or explanations.
- "What is compound interest?"
- "Why does bread rise?"
2. **Planning**: the person wants a plan for something they will do.
- "Plan a week of cheap dinners."
- "Plan my first month of learning Rust."
3. **Feedback-Seeking**: the person wants an opinion on their own work.
- "Is this cover letter convincing?"
- "Can you review my function?"
4. **Comparative**: the person wants two options weighed against each other.
- "Should I rent or buy?"
- "Python or Go for a CLI tool?"
"""


def scripted_teacher(messages, body):
    last = messages[-1]["content"]
    if "distinct topics" in last:
        return "\n".join(f"{i + 1}. {t}" for i, t in enumerate(TOPICS))
    topic = re.search(r'on the topic "([^"]+)"', last)
    if topic:
        slug = re.sub(r"\W+", "_", topic.group(1).lower()).strip("_")
        return "\n".join(f"{i + 1}. {slug}_{w}" for i, w in enumerate(
            ["planning", "analysis", "explanation", "troubleshooting", "teaching"]))
    if "kinds of queries" in last:
        return QUERY_TYPES
    return FakeTeacher()._reply(messages)


@pytest.fixture()
def keyed_server(monkeypatch):
    monkeypatch.setenv("ISM_TEST_TEACHER_KEY", SENTINEL)
    with FakeOpenAIServer(models=("fake-teacher-2024-01-01",), api_key=SENTINEL, reply_fn=scripted_teacher) as srv:
        yield srv


def test_stages_1_and_2_over_an_endpoint_leave_no_secret(keyed_server, tmp_path):
    run_dir = tmp_path / "run"
    params = {
        "TEACHER_MODEL": "fake-teacher-2024-01-01", "TEACHER_BASE_URL": keyed_server.base_url,
        "TEACHER_API_KEY_ENV": "ISM_TEST_TEACHER_KEY", "MAX_CONCURRENCY": 16,
        "NUM_TOPICS": 3, "SKILLS_PER_TOPIC": 5, "NUM_QUERY_TYPES": 4,
        "NUM_EXAMPLES": 6, "NUM_HELDOUT": 2, "PROMPT_VERSION": "paper", "SHIRKER_FRACTION": 0.5,
    }
    executed = run_pipeline(run_dir, params, ("01_extract_skills", "02_generate"), log=lambda _: None, progress=False)
    assert keyed_server.completions > 0

    results = Run(run_dir).results()
    assert results["extract_skills"]["num_skills"] == 15
    assert results["extract_skills"]["num_query_types"] == 4
    gen = results["generate"]
    assert gen["num_examples"] == 6 and gen["num_heldout"] == 2 and gen["num_shirkers"] == 3
    assert read_notebook_records(executed[1])["generate"]["num_examples"] == 6

    manifest = Run(run_dir).manifest()
    teacher = manifest["stages"]["generate"]["models"]["teacher"]
    assert teacher["model"] == "fake-teacher-2024-01-01" and teacher["api_key_env"] == "ISM_TEST_TEACHER_KEY"
    assert manifest["stages"]["generate"]["accounting"]["teacher"]["calls"] > 0

    scanned = 0
    for folder in (run_dir, Path(os.environ["ISM_CACHE_DIR"])):
        for path in folder.rglob("*"):
            if path.is_file():
                scanned += 1
                assert SENTINEL.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    assert scanned > 10
