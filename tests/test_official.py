"""The resolver of official files: a local clone, a checked cached download, and a clear error offline."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from helpers.official import PINNED_SHA256, SOURCES, cache_root, resolve
from helpers.params import ParameterError
from official_clone import reference_copy

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
PROMPT = "src/data_generation/prompts/generate_gpt-4-turbo-2024-04-09.json"


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ISM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


class _Server:
    """Serves `files` ({url path: bytes}) on loopback and counts requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.hits = files, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits += 1
                body = outer.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, *args) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def template(self) -> str:
        return f"http://127.0.0.1:{self.port}/{{repository}}/{{commit}}/{{path}}"

    def close(self) -> None:
        self.httpd.shutdown()


def _url_path(source: str, path: str) -> str:
    src = SOURCES[source]
    return f"/{src.repository}/{src.commit}/{path}"


def test_local_clone_file_is_read_and_described(tmp_path, cache, monkeypatch):
    clone = tmp_path / "clone"
    (clone / "src/data_generation/prompts").mkdir(parents=True)
    (clone / PROMPT).write_text('["turn one {skills_str}"]')
    monkeypatch.setenv("ISM_ALLOW_UNPINNED_OFFICIAL", "1")  # other bytes than the pinned ones, on purpose
    with pytest.warns(UserWarning, match="used anyway"):
        found = resolve("instruct_skillmix", PROMPT, clone)
    assert found.origin == "local clone" and found.read_text() == '["turn one {skills_str}"]'
    assert found.matches_pin is False  # not the official bytes, and the record says so
    assert found.describe()["repository"] == "princeton-pli/Instruct-SkillMix"


def test_local_clone_errors_name_the_parameter(tmp_path, cache):
    with pytest.raises(ParameterError, match="INSTRUCT_SKILLMIX_REPO.*is not a folder"):
        resolve("instruct_skillmix", PROMPT, tmp_path / "missing")
    with pytest.raises(ParameterError, match="FASTCHAT_REPO.*ROOT of a clone"):
        resolve("fastchat", "fastchat/llm_judge/data/judge_prompts.jsonl", tmp_path)


def test_pinned_download_is_checked_cached_and_reused(cache, monkeypatch):
    reference = REFERENCE / "instruct-skillmix" / "prompts" / "generate_gpt-4-turbo-2024-04-09.json"
    if not reference.exists():
        pytest.skip("needs ../shared/reference")
    server = _Server({_url_path("instruct_skillmix", PROMPT): reference.read_bytes()})
    monkeypatch.setenv("ISM_OFFICIAL_URL", server.template())
    try:
        first = resolve("instruct_skillmix", PROMPT)
        second = resolve("instruct_skillmix", PROMPT)
    finally:
        server.close()
    assert first.origin == "pinned download" and first.matches_pin is True
    assert server.hits == 1, "the second resolve must come from the cache"
    assert second.local_path == first.local_path and second.local_path.is_relative_to(cache_root())


def test_download_with_wrong_checksum_is_refused_and_not_cached(cache, monkeypatch):
    server = _Server({_url_path("instruct_skillmix", PROMPT): b'["tampered"]'})
    monkeypatch.setenv("ISM_OFFICIAL_URL", server.template())
    try:
        with pytest.raises(ParameterError, match="INSTRUCT_SKILLMIX_REPO.*not the pinned"):
            resolve("instruct_skillmix", PROMPT)
    finally:
        server.close()
    assert not list(cache.rglob("*.json")), "a file that failed its checksum must not be kept"


def test_offline_fails_naming_the_parameter(cache, monkeypatch):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ISM_OFFICIAL_URL", f"http://127.0.0.1:{port}/{{repository}}/{{commit}}/{{path}}")
    with pytest.raises(ParameterError) as err:
        resolve("wildbench", "evaluation/eval_template.score.v2.md")
    assert err.value.name == "WILDBENCH_REPO" and "clone allenai/WildBench" in err.value.fix


def test_unpinned_file_is_never_downloaded(cache):
    with pytest.raises(ParameterError, match="no pinned checksum"):
        resolve("fastchat", "README.md")


def test_pins_match_the_reference_copies():
    """The pinned checksums are those of the files at the pinned commits (copies in ../shared/reference)."""
    if not REFERENCE.exists():
        pytest.skip("needs ../shared/reference")
    checked = 0
    for (_, path), digest in PINNED_SHA256.items():
        local = reference_copy(path)
        assert hashlib.sha256(local.read_bytes()).hexdigest() == digest, path
        checked += 1
    assert checked == len(PINNED_SHA256)
