"""Seed-dataset loaders: the shipped set, local files, and the `datasets.load_dataset` path on local fixtures."""
import json
from pathlib import Path

import pytest

from helpers.params import ParameterError
from helpers.skills.seed_datasets import load_seed_instructions

FIXTURES = Path(__file__).parent / "fixtures" / "skills"


def test_shipped_set_is_varied_and_sampled_reproducibly():
    items = load_seed_instructions("shipped")
    assert len(items) >= 100 and len({i["category"] for i in items}) >= 10
    assert len({i["instruction"] for i in items}) == len(items)
    sample = load_seed_instructions("shipped", limit=10, seed=3)
    assert len(sample) == 10 and sample == load_seed_instructions("shipped", limit=10, seed=3)
    assert sample != load_seed_instructions("shipped", limit=10, seed=4)


def test_local_json_list_with_named_field(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"question": "What is 2+2?"}, {"question": "Name a prime."}, {"question": ""}]))
    items = load_seed_instructions(str(path), field="question")
    assert [i["instruction"] for i in items] == ["What is 2+2?", "Name a prime."]
    with pytest.raises(ParameterError) as error:
        load_seed_instructions(str(path), field="prompt")
    assert error.value.name == "SEED_DATASET_FIELD"


def test_hub_path_alpaca_schema_joins_input():
    """A local dataset folder goes through datasets.load_dataset exactly like 'tatsu-lab/alpaca' would."""
    items = load_seed_instructions(str(FIXTURES / "alpaca_like"))
    assert len(items) == 4
    assert items[1]["instruction"] == "Translate the sentence into French.\n\nThe library opens at nine."
    assert items[0]["instruction"] == "Give three tips for staying focused while studying."


def test_ultrachat_schema_uses_prompt_field():
    items = load_seed_instructions(str(FIXTURES / "ultrachat_like.jsonl"))
    assert [i["instruction"] for i in items][0] == "How do solar panels turn light into electricity?"


def test_unreachable_hub_id_names_the_parameter(monkeypatch):
    import datasets

    seen = {}

    def offline(dataset_id, split=None):
        seen.update(dataset_id=dataset_id, split=split)
        raise ConnectionError("the hub cannot be reached")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ParameterError) as error:
        load_seed_instructions("tatsu-lab/alpaca", split="train")
    assert error.value.name == "SEED_DATASET" and "ConnectionError" in error.value.problem
    assert seen == {"dataset_id": "tatsu-lab/alpaca", "split": "train"}
