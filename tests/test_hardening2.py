"""Hostile and careless input, round 2: script in shared pages, keys in URL queries and in error text, papermill run
directly with a pasted key, batch output lines with U+2028, torn progress lines, torn executed notebooks, a full
disk, and run folders that reach into the checkout through a symlink."""
from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

from helpers import pipeline
from helpers.__main__ import main
from helpers.generate.plots import examples_markdown, failures_markdown
from helpers.jsonl import JSONLError, JsonlAppender, append_jsonl, read_jsonl, write_atomic
from helpers.llm.client import connect
from helpers.llm.fake_openai import FakeOpenAIServer
from helpers.params import ParameterError, check_base_url, check_secret_parameters, redact_url
from helpers.runs import PROJECT_ROOT, Run, check_run_dir

SENTINEL = "Zq7Sentinel9x"
KEY = f"sk-proj-{SENTINEL}Key0123456789"
ATTACK = (f"<script>window.{SENTINEL}=1</script> <img src=x onerror=\"{SENTINEL}()\"> "
          f"[click](javascript:{SENTINEL}()) <iframe src=\"https://evil.example/{SENTINEL}\"></iframe>")


class _ActiveParts(HTMLParser):
    """What a browser would run or load from a page: script bodies, event handlers, javascript: URLs, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.active: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self._in_script = tag == "script"
        if tag in ("iframe", "object", "embed"):
            self.active.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or (name in ("href", "src", "action", "formaction", "xlink:href")
                                          and unquote(value or "").strip().lower().startswith("javascript:")):
                self.active.append(f"{name}={value}")
            if name == "src" and tag == "img" and SENTINEL in (value or ""):
                self.active.append(f"img src={value}")

    def handle_endtag(self, tag):
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data):
        if self._in_script:
            self.active.append(data)


def _active(page: str) -> list[str]:
    parser = _ActiveParts()
    parser.feed(page)
    return [part for part in parser.active if SENTINEL in part or part.startswith("<")]


def _grep(folder: Path, needle: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


# ------------------------------------------------------------------------------------------ 1. shared pages
def _example(text: str) -> dict:
    return {"example_id": f"train-0 {text}", "query_type": text, "skills_joined_str": f"a, {text}",
            "instruction": f"Explain {text}\nsecond line", "output": f"Here: {text}", "attempt": 1,
            "instruction_from_turn": "refine", "shirker": None}


def test_stage_2_markdown_shows_model_text_as_text():
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    failed = [{"example_id": "train-1", "skills_joined_str": f"x, {ATTACK}", "reasons": [f"no pair: {ATTACK}"],
               "transcript": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ATTACK}]}]
    for markdown in (examples_markdown([_example(ATTACK)]), failures_markdown(failed)):
        page = markdown2html_mistune(markdown)
        assert _active(page) == [] and "<iframe" not in page and "<img" not in page
        assert f"window.{SENTINEL}=1" in page  # the text is still there, shown as text
    shown = markdown2html_mistune(examples_markdown([_example("**bold** `code` # head\n- item")]))
    assert "**bold**" in shown and "<strong>bold" not in shown and "<code>" not in shown  # text, never markup
    assert "<li>" not in shown and "<h1" not in shown


def _executed_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("show()")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"text/markdown": f"### Example\n\n{ATTACK}"}),
        nbformat.v4.new_output("display_data", data={"text/html": "<style scoped>.zq7 {color: red}</style>"
                                                      f"<table><tr><td>{ATTACK}</td></tr></table>",
                                                      "text/plain": "table"}),
        nbformat.v4.new_output("display_data", data={"application/javascript": f"window.{SENTINEL}=2"}),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# Stage\n\n| a | b |\n|---|---|\n| 1 | 2 |"), cell]
    nb.metadata["papermill"] = {"parameters": {"TEACHER_MODEL": ATTACK}}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_exported_notebooks_and_report_run_no_script_from_models_or_data(tmp_path):
    run = tmp_path / "run"
    _executed_notebook(run / "notebooks" / "02_generate.ipynb")
    (run / "results.json").write_text(json.dumps({"generate": {"n": 1, "table": [{"text": ATTACK}]}}))
    (run / "manifest.json").write_text(json.dumps({"stages": {"generate": {
        "models": {"teacher": {"model": ATTACK, "backend": "openai"}}, "params": {"TEACHER_MODEL": ATTACK}}}}))
    [exported] = pipeline.export_html(run)
    page = exported.read_text()
    assert _active(page) == [], _active(page)
    assert SENTINEL in page and "<h1" in page and "<table" in page  # text kept, the kit's own markup kept
    assert ".zq7 {" not in page  # a table's style block goes whole, not left behind as text
    from helpers.report import write_report

    report = write_report(run, defaults={}).read_text()
    assert _active(report) == [] and "<script" not in report.lower() and SENTINEL in report


# ------------------------------------------------------------------------------------------ 2. keys in URL queries
@pytest.mark.parametrize("query", [f"subscription-key={SENTINEL}abc", f"x-api-key={SENTINEL}", f"code={KEY}",
                                   f"q=sk-{SENTINEL}", f"client_credential={SENTINEL}", f"x={SENTINEL}0a1b2c3d4e5f",
                                   f"X-Amz-Signature={SENTINEL}", f"hmac={SENTINEL}"])
def test_a_credential_in_any_query_parameter_is_refused_and_never_recorded(tmp_path, monkeypatch, capsys, query):
    url = f"https://api.example.com/v1?api-version=2024-06-01&{query}"
    with pytest.raises(ParameterError, match="TEACHER_BASE_URL") as err:
        check_base_url("TEACHER_BASE_URL", url)
    assert SENTINEL not in str(err.value)
    assert SENTINEL not in redact_url(url) and "api-version=2024-06-01" in redact_url(url)
    run = Run(tmp_path / "r")
    run.begin_stage("generate", {"TEACHER_BASE_URL": url})
    assert SENTINEL not in run.manifest_path.read_text()
    monkeypatch.setenv("ISM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", "--run-dir", str(tmp_path / "run"), "-p", "TEACHER_BASE_URL", url, "--only", "02"]) == 2
    assert SENTINEL not in capsys.readouterr().err and _grep(tmp_path, SENTINEL) == []


@pytest.mark.parametrize("url", ["https://x.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-06-01",
                                 "http://localhost:8000/v1?model=meta-llama/Llama-3.1-8B-Instruct&region=eu-west-1",
                                 "http://localhost:8000/v1?format=json&timeout=600", "http://h/v1?keyword=budget"])
def test_ordinary_query_parameters_still_pass(url):
    assert check_base_url("TEACHER_BASE_URL", url) == url and redact_url(url) == url


# ------------------------------------------------------------------------------------------ 3. redacted errors
def test_redaction_removes_the_key_and_any_bearer_token():
    from helpers.llm.errors import redact_secrets

    text = f'{{"error": "bad header Authorization: Bearer {KEY}", "echo": "{KEY}", "other": "bearer abc.DEF-123_x"}}'
    out = redact_secrets(text, [KEY, "EMPTY", ""])
    assert KEY not in out and SENTINEL not in out and "abc.DEF-123_x" not in out and "[redacted]" in out
    assert redact_secrets("Bearer tokens are sent in a header.", []) == "Bearer tokens are sent in a header."


def test_a_server_that_echoes_the_key_gets_it_into_no_stored_text(tmp_path, monkeypatch):
    monkeypatch.setenv("ISM_TEST_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY) as srv:
        client = connect("fake-model", srv.base_url, "ISM_TEST_KEY", stage="t", cache_path=tmp_path / "c.sqlite",
                         show_progress=False, max_attempts=2)
        client.backoff_base_s = 0.01
        srv.script(["400echo", "echo", "500echo", "500echo"])
        failed, echoed, retried = (client.chat([{"role": "user", "content": f"q{i}"}]) for i in range(3))
    assert failed.error and "HTTP 400" in failed.error and KEY not in failed.error and "Bearer sk" not in failed.error
    assert echoed.ok and "[redacted]" in echoed.text and SENTINEL not in echoed.text
    assert retried.error and SENTINEL not in retried.error and SENTINEL not in client.last_error
    assert _grep(tmp_path, SENTINEL) == []  # the cache holds the redacted reply only


def test_stage_2_failures_and_progress_files_hold_no_echoed_key(tmp_path, monkeypatch):
    from helpers.generate.config import GenerateConfig
    from helpers.generate.prompt_versions import get_version
    from helpers.generate.stage import generate_split, load_stage1_inputs, make_plans

    fixtures = Path(__file__).parent / "fixtures" / "generate"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("skills.jsonl", "query_types.jsonl"):
        shutil.copy(fixtures / name, run_dir / name)
    cfg = GenerateConfig(run_dir=str(run_dir), num_examples=2, num_heldout=0, max_attempts=1,
                         prompt_version="paper").validate()
    plans, _ = make_plans(cfg, *load_stage1_inputs(cfg))
    monkeypatch.setenv("ISM_TEST_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY, fault_rate=1.0, random_faults=("400echo",)) as srv:
        client = connect("fake-model", srv.base_url, "ISM_TEST_KEY", stage="t", cache_path=tmp_path / "c.sqlite",
                         show_progress=False, max_attempts=1)
        examples, failed = generate_split(client, plans, get_version("paper"), cfg, run_dir / "data" / "progress.jsonl")
    assert not examples and len(failed) == 2 and "HTTP 400" in json.dumps(failed)
    assert SENTINEL not in json.dumps(failed) and _grep(tmp_path, SENTINEL) == []


# ------------------------------------------------------------------------------------------ 4. papermill directly
def test_a_stage_refuses_a_pasted_key_first_and_says_what_papermill_already_wrote():
    from helpers.generate.config import GenerateConfig

    with pytest.raises(ParameterError) as err:  # the key is refused before any other check, whatever else is wrong
        GenerateConfig.from_params({"TEACHER_API_KEY_ENV": KEY, "MAX_CONCURRENCY": "many", "RUN_DIR": ""})
    message = str(err.value)
    assert err.value.name == "TEACHER_API_KEY_ENV" and SENTINEL not in message
    assert "papermill" in message and "injected-parameters" in message and "docs/papermill.md" in message


@pytest.mark.slow
def test_papermill_run_directly_stops_at_the_first_cell_and_the_key_is_only_where_papermill_put_it(tmp_path):
    import papermill as pm

    run, out = tmp_path / "run", tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(PROJECT_ROOT / "notebooks" / "02_generate.ipynb"), str(out), cwd=str(PROJECT_ROOT),
                            parameters={"RUN_DIR": str(run), "TEACHER_API_KEY_ENV": KEY}, progress_bar=False)
    assert err.value.ename == "ParameterError" and SENTINEL not in err.value.evalue
    assert "injected-parameters" in err.value.evalue
    nb = json.loads(out.read_text())
    injected = [i for i, c in enumerate(nb["cells"]) if "injected-parameters" in c["metadata"].get("tags", [])]
    holding = [i for i, c in enumerate(nb["cells"]) if SENTINEL in json.dumps(c)]
    next_code = next(c for c in nb["cells"][injected[0] + 1:] if c["cell_type"] == "code")
    assert holding == injected and "".join(next_code["source"]) == err.value.source  # the next cell refused it
    assert SENTINEL in json.dumps(nb["metadata"]["papermill"]["parameters"])  # the documented limit
    assert not run.exists() or _grep(run, SENTINEL) == []


def test_docs_say_how_to_run_papermill_safely():
    text = (PROJECT_ROOT / "docs" / "papermill.md").read_text()
    for needed in ("TEACHER_API_KEY_ENV OPENAI_API_KEY", "injected-parameters", "metadata.papermill.parameters",
                   "python -m helpers run", "rotate"):
        assert needed in text, needed


# ------------------------------------------------------------------------------------------ 5. batch output lines
def test_batch_output_with_line_separators_is_kept_and_never_bought_twice(tmp_path):
    reply = "first\u2028second\u2029third\x85fourth"
    with FakeOpenAIServer(batch_step_s=0.01, reply_fn=lambda messages, body: f"{reply} {messages[-1]['content']}") as srv:
        client = connect("fake-model", srv.base_url, "", stage="t", cache_path=tmp_path / "c.sqlite",
                         show_progress=False, batch=True, batch_dir=tmp_path / "run", batch_poll_s=0.02)
        out = client.converse_many([[f"c{i} a", f"c{i} b"] for i in range(4)])
    assert all(o.ok for o in out) and all(reply in r.text for o in out for r in o.results)
    assert srv.batches_created == 2 and srv.batch_lines == 8 and srv.duplicate_batch_lines == 0


def test_one_unreadable_batch_output_line_costs_only_that_line():
    from helpers.llm.batch import output_rows

    good = json.dumps({"custom_id": "a-0", "response": {"status_code": 200, "body": {"x": "1\u2028 2"}}},
                      ensure_ascii=False)
    rows, unreadable = output_rows(good + "\n" + '{"custom_id": "b-0", "resp' + "\n\n")
    assert list(rows) == ["a-0"] and rows["a-0"]["response"]["body"]["x"] == "1\u2028 2" and unreadable == 1


# ------------------------------------------------------------------------------------------ 6. torn progress lines
@pytest.mark.parametrize("append", ["appender", "append_jsonl"])
def test_a_torn_last_line_is_cut_before_the_next_record_is_appended(tmp_path, append):
    path = tmp_path / "progress_train.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n{"n": 3, "rec')  # killed mid-write
    for n in (4, 5):
        if append == "appender":
            with JsonlAppender(path) as log:
                log.append({"n": n})
        else:
            append_jsonl(path, {"n": n})
    assert [r["n"] for r in read_jsonl(path)] == [1, 2, 4, 5]  # loads strictly: nothing torn is left


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}')
    with JsonlAppender(path) as log:
        log.append({"n": 3})
    assert [r["n"] for r in read_jsonl(path)] == [1, 2, 3]


# ------------------------------------------------------------------------------------------ 7. executed notebooks
def _fake_papermill(monkeypatch, write, error: BaseException | None = None):
    import papermill as pm

    def execute(src, out, **kwargs):
        write(Path(out))
        if error is not None:
            raise error
    monkeypatch.setattr(pm, "execute_notebook", execute)


def _good_notebook(path: Path, marker: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(marker)]
    nb.metadata["papermill"] = {"parameters": {}}
    nbformat.write(nb, path)


def test_an_interrupted_notebook_leaves_the_last_complete_executed_copy(tmp_path, monkeypatch):
    run = tmp_path / "run"
    final = run / "notebooks" / "02_generate.ipynb"
    _fake_papermill(monkeypatch, lambda out: _good_notebook(out, "first run"))
    assert pipeline.run_notebook("02_generate", run, {}) == final and "first run" in final.read_text()

    def torn(out: Path) -> None:
        _good_notebook(out, "second run")
        out.write_bytes(out.read_bytes()[:60])
    _fake_papermill(monkeypatch, torn, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_notebook("02_generate", run, {})
    assert "first run" in final.read_text() and [p.name for p in (run / "notebooks").iterdir()] == [final.name]


@pytest.mark.parametrize("content", ["", '{\n "cells": [\n  {\n   "cell_type": "code",\n   "metadata": {\n    "papermill"'])
def test_a_truncated_executed_notebook_is_a_damaged_output_not_the_kit(tmp_path, content):
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    (run / "notebooks" / "02_generate.ipynb").write_text(content)
    assert check_run_dir(run) == run.resolve()
    shutil.copy(PROJECT_ROOT / "notebooks" / "03_sft.ipynb", run / "notebooks" / "03_sft.ipynb")
    with pytest.raises(ParameterError, match="kit's own files"):  # a stage notebook never executed still is the kit
        check_run_dir(run)


# ------------------------------------------------------------------------------------------ 8. a full disk
def _disk_fills_after(monkeypatch, module, allowed: int):
    real = os.write

    def write(fd, data):
        if len(data) > allowed:
            real(fd, bytes(data[:allowed]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(module.os, "write", write)


@pytest.mark.parametrize("append", ["appender", "append_jsonl"])
def test_a_full_disk_tears_no_progress_line_and_says_where_and_how_much(tmp_path, monkeypatch, append):
    from helpers.diskspace import DiskFull

    from helpers import jsonl

    path = tmp_path / "data" / "progress_train.jsonl"
    append_jsonl(path, {"n": 1})
    before = path.read_bytes()
    _disk_fills_after(monkeypatch, jsonl, 5)
    with pytest.raises(DiskFull) as err:
        if append == "appender":
            with JsonlAppender(path) as log:
                log.append({"n": 2, "text": "x" * 100})
        else:
            append_jsonl(path, {"n": 2, "text": "x" * 100})
    assert path.read_bytes() == before
    message = str(err.value)
    assert str(path.parent) in message and "no space left" in message.lower() and "free at least" in message
    assert len(message.splitlines()) == 1


def test_a_full_disk_leaves_no_half_written_file(tmp_path, monkeypatch):
    from helpers.diskspace import DiskFull

    from helpers import jsonl

    path = tmp_path / "manifest.json"
    write_atomic(path, '{"old": true}')
    _disk_fills_after(monkeypatch, jsonl, 3)
    with pytest.raises(DiskFull, match="free at least"):
        write_atomic(path, '{"new": true, "pad": "' + "y" * 1000 + '"}')
    assert path.read_text() == '{"old": true}' and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_full_disk_while_papermill_saves_is_one_message_and_nothing_torn(tmp_path, monkeypatch, capsys):
    from helpers.diskspace import DiskFull

    run = tmp_path / "run"
    final = run / "notebooks" / "02_generate.ipynb"
    _fake_papermill(monkeypatch, lambda out: _good_notebook(out, "first run"))
    pipeline.run_notebook("02_generate", run, {})

    def half(out: Path) -> None:
        _good_notebook(out, "second run")
        out.write_bytes(out.read_bytes()[:40])
    _fake_papermill(monkeypatch, half, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DiskFull) as err:
        pipeline.run_notebook("02_generate", run, {})
    assert str(run) in str(err.value) and "free at least" in str(err.value)
    assert "first run" in final.read_text() and [p.name for p in (run / "notebooks").iterdir()] == [final.name]


def test_a_full_disk_inside_the_kernel_is_one_line_from_the_driver(tmp_path, monkeypatch, capsys):
    import papermill as pm

    from helpers.diskspace import disk_full

    message = str(disk_full(tmp_path / "run" / "data", 120, "appending to progress_train.jsonl"))
    error = pm.PapermillExecutionError(7, 1, "src", "DiskFull", message, ["a", "long", "traceback"])
    _fake_papermill(monkeypatch, lambda out: _good_notebook(out, "failed run"), error)
    monkeypatch.setattr(pipeline, "check_stages", lambda routed, run_dir: {})
    monkeypatch.setenv("ISM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", "--run-dir", str(tmp_path / "run"), "--only", "02", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {message}"]

    oserror = pm.PapermillExecutionError(7, 1, "src", "OSError", "[Errno 28] No space left on device: '/x/y'", ["tb"])
    _fake_papermill(monkeypatch, lambda out: _good_notebook(out, "failed run"), oserror)
    assert main(["run", "--run-dir", str(tmp_path / "run"), "--only", "02", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str((tmp_path / "run").resolve()) in err[0] and "free at least" in err[0]


# ------------------------------------------------------------------------------------------ 9. into the checkout
def test_a_sweep_folder_that_is_the_checkout_is_refused(tmp_path, monkeypatch):
    from helpers import sweep

    monkeypatch.chdir(PROJECT_ROOT)
    before = sorted(p.name for p in PROJECT_ROOT.iterdir())
    spec = sweep.SweepSpec(base={"NUM_EXAMPLES": 2}, grid={"SHIRKER_FRACTION": [0.0, 0.2]})
    ran: list[Path] = []
    for out in (".", str(PROJECT_ROOT / "data"), "helpers/x"):
        with pytest.raises(ParameterError, match="--out.*kit's own files"):
            sweep.run_sweep(spec, out, runner=lambda run_dir, params, notebooks: ran.append(run_dir),
                            declared=lambda nb: {"NUM_EXAMPLES", "SHIRKER_FRACTION"}, log=lambda line: None)
        with pytest.raises(ParameterError, match="--out.*kit's own files"):
            sweep.collect_results(out)
    assert ran == [] and sorted(p.name for p in PROJECT_ROOT.iterdir()) == before


def test_a_run_folder_reaching_into_the_kit_through_a_symlink_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "data").symlink_to(PROJECT_ROOT / "data", target_is_directory=True)
    with pytest.raises(ParameterError, match=r"data.*kit's own files"):
        check_run_dir(run)
    with pytest.raises(ParameterError):
        Run(run)
    (run / "data").unlink()
    (run / "eval").mkdir()
    (run / "eval" / "answers_base.jsonl").symlink_to(PROJECT_ROOT / "data" / "eval_set.jsonl")
    with pytest.raises(ParameterError, match="answers_base.jsonl"):
        check_run_dir(run)
    (run / "eval" / "answers_base.jsonl").unlink()
    elsewhere = tmp_path / "shared_data"
    elsewhere.mkdir()
    (run / "data").symlink_to(elsewhere, target_is_directory=True)  # a symlink to a folder outside the kit is fine
    assert check_run_dir(run) == run.resolve()


def test_a_full_disk_under_the_call_cache_is_one_message(tmp_path, monkeypatch):
    import sqlite3

    from helpers.diskspace import DiskFull
    from helpers.llm.cache import CallCache
    from helpers.llm.types import ChatResult

    cache = CallCache(tmp_path / "cache" / "llm_calls.sqlite")

    class FullDisk:
        def execute(self, *args):
            raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(cache, "_conn", lambda: FullDisk())
    with pytest.raises(DiskFull, match=r"cache.*free at least"):
        cache.put("k", ChatResult(text="reply", model="m"))
