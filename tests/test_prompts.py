"""The one prompt module: strict filling, untouched braces, fingerprints that follow the texts."""
from __future__ import annotations

import pytest

from helpers.prompts import PromptError, fill, fingerprint, folder_fingerprint, placeholders, read_prompt


def test_fill_leaves_braces_in_values_and_json_alone():
    template = 'Q: {instruction}\nA: {output_a}\nReply as {"score": 3}'
    out = fill(template, {"instruction": "use {output_a} literally", "output_a": "{x}"})
    assert out == 'Q: use {output_a} literally\nA: {x}\nReply as {"score": 3}'
    assert placeholders("{a} {b} {a}") == ["a", "b"]


def test_fill_is_strict_and_names_the_file_and_placeholder():
    with pytest.raises(PromptError, match=r"topics.txt: no value for placeholder\(s\) \{num_topics\}"):
        fill("List {num_topics} topics", {}, "topics.txt")
    with pytest.raises(PromptError, match=r"topics.txt: has no placeholder for \{num_skills\}"):
        fill("List {num_topics} topics", {"num_topics": 3, "num_skills": 2}, "topics.txt")
    assert fill("List {num_topics} topics", {"num_topics": 3, "num_skills": 2}, allow_unused=True) == "List 3 topics"


def test_read_and_fingerprint(tmp_path):
    (tmp_path / "a.txt").write_text("  first {x}\n")
    (tmp_path / "b.txt").write_text("second\n")
    assert read_prompt(tmp_path / "a.txt") == "first {x}"
    assert read_prompt(tmp_path / "a.txt", strip=False) == "  first {x}\n"
    before = folder_fingerprint(tmp_path)
    assert len(before) == 12 and before == folder_fingerprint(tmp_path)
    (tmp_path / "b.txt").write_text("second, changed\n")
    assert folder_fingerprint(tmp_path) != before
    assert fingerprint(["a", b"b"]) == fingerprint([b"a", "b"]) != fingerprint(["ab", "c"])
