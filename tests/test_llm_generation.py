"""The one in-process generation function (local backend and stage 3): stop tokens, counts, padding."""
from __future__ import annotations

import pytest

from helpers.llm.generation import generate_batch, stop_token_ids
from sft_tiny import build_model_folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_model_folder(tmp_path_factory.mktemp("tiny_gen") / "m")
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


PROMPTS = ["Name a colour of the sky.", "What is two plus two? Say it loud, please."]


def test_stops_at_any_stop_token_and_counts_it_once(tiny):
    model, tok = tiny
    eos = tok.eos_token_id
    free = generate_batch(model, tok, PROMPTS, max_new_tokens=4)
    assert [(r.stopped, len(r.token_ids), r.output_tokens) for r in free] == [(False, 4, 4)] * 2
    first, second = free[0].token_ids[0], free[0].token_ids[1]
    try:
        model.generation_config.eos_token_id = first  # the generation config's stop token
        row = generate_batch(model, tok, PROMPTS[:1], max_new_tokens=4)[0]
        assert row.stopped and row.token_ids == [] and row.output_tokens == 1
        if second != first:  # the tokenizer's end-of-sequence counts too (an SFT template may set it)
            model.generation_config.eos_token_id = eos
            tok.eos_token = tok.convert_ids_to_tokens(second)
            assert stop_token_ids(model, tok) == {eos, second}
            row = generate_batch(model, tok, PROMPTS[:1], max_new_tokens=4)[0]
            assert row.stopped and row.token_ids == [first] and row.output_tokens == 2
            assert row.text == tok.decode([first], skip_special_tokens=True)
    finally:
        model.generation_config.eos_token_id = eos
        tok.eos_token = tok.convert_ids_to_tokens(eos)


def test_left_padding_and_pad_fallback_leave_the_tokenizer_as_it_was(tiny):
    model, tok = tiny
    alone = [generate_batch(model, tok, [p], max_new_tokens=3)[0].token_ids for p in PROMPTS]
    pad, side = tok.pad_token, tok.padding_side
    try:
        tok.pad_token, tok.padding_side = None, "right"
        batched = generate_batch(model, tok, PROMPTS, max_new_tokens=3)
        assert tok.pad_token is None and tok.padding_side == "right"
    finally:
        tok.pad_token, tok.padding_side = pad, side
    assert [r.token_ids for r in batched] == alone  # padding never changes an answer
    assert batched[0].input_tokens < batched[1].input_tokens
