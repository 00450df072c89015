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


def test_reused_prefixes_give_the_same_tokens_as_full_prompts(tiny):
    """Three turns of two chats of different lengths: each turn's prompt extends the last prompt and reply."""
    from helpers.llm.generation import PrefixCache

    model, tok = tiny
    cache = PrefixCache(min_reuse=1)
    histories = {"full": list(PROMPTS), "reused": list(PROMPTS)}
    for turn in range(3):
        full = generate_batch(model, tok, histories["full"], max_new_tokens=6)
        reused = generate_batch(model, tok, histories["reused"], max_new_tokens=6, prefix_cache=cache)
        assert [r.token_ids for r in reused] == [r.token_ids for r in full]
        assert [r.input_tokens for r in reused] == [r.input_tokens for r in full]
        for name, rows in (("full", full), ("reused", reused)):
            histories[name] = [h + r.text + f" Say more, part {turn}." for h, r in zip(histories[name], rows)]
    assert cache.reused_tokens > 0 and 0 < cache.tokens <= cache.max_tokens


def test_prefix_cache_evicts_the_least_recently_used_beyond_its_budget():
    import torch

    from helpers.llm.generation import PrefixCache

    cache = PrefixCache(max_tokens=10, min_reuse=2)
    kv = [(torch.zeros(1, 6, 2), torch.zeros(1, 6, 2))]
    cache.add(torch.arange(6), kv)
    assert cache.longest_prefix(torch.tensor([0, 1, 2, 9])) == (3, 0)
    assert cache.longest_prefix(torch.tensor([0, 1])) == (0, None)  # at most len - 1, below min_reuse
    cache.add(torch.arange(6) + 100, kv)  # 12 tokens > 10: the older entry goes
    assert cache.tokens == 6 and cache.longest_prefix(torch.arange(6))[0] == 0


def test_a_sampled_reply_depends_on_its_request_only(tiny):
    """Same prompt, seed and salt: the same reply alone or in any batch; another salt draws another sample."""
    model, tok = tiny
    prompts = PROMPTS + ["Tell me a story about a lighthouse keeper."]
    args = dict(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    alone = generate_batch(model, tok, prompts[1:2], **args)[0].token_ids
    in_batch = generate_batch(model, tok, prompts, **args)[1].token_ids
    reordered = generate_batch(model, tok, prompts[::-1], **args)[1].token_ids
    assert alone == in_batch == reordered
    salted = [generate_batch(model, tok, prompts[1:2], salts=[f"attempt-{i}"], **args)[0].token_ids
              for i in (2, 3)]
    assert salted[0] != alone or salted[1] != alone  # a retry is a new draw, not the same reply again
    other_seed = generate_batch(model, tok, prompts[1:2], **{**args, "seed": 8})[0].token_ids
    assert other_seed != alone or salted[0] != alone


def test_rows_with_different_sampling_share_a_batch_and_answer_as_they_would_apart(tiny):
    """Per-row temperature, top-p and seed: each row of a mixed batch gets the reply a batch of its own setting
    gives it (a row at temperature 0 the greedy one), so requests of different settings need not wait apart."""
    model, tok = tiny
    prompts = PROMPTS + ["Tell me a story about a lighthouse keeper."]
    settings = [(0.0, 1.0, 7), (1.0, 0.95, 7), (0.7, 1.0, 3)]
    apart = [generate_batch(model, tok, [p], max_new_tokens=10, temperature=t, top_p=q, seed=s)[0].token_ids
             for p, (t, q, s) in zip(prompts, settings)]
    mixed = generate_batch(model, tok, prompts, max_new_tokens=10, temperature=[t for t, _, _ in settings],
                           top_p=[q for _, q, _ in settings], seed=[s for _, _, s in settings])
    assert [row.token_ids for row in mixed] == apart


def test_top_p_keeps_only_the_nucleus():
    import torch

    from helpers.llm.generation import RowSampler

    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    drawn = set()
    for seed in range(200):
        out = RowSampler([seed], temperature=1.0, top_p=0.7)(None, scores.clone())
        drawn.add(int(out.argmax()))
        assert torch.isinf(out).sum() == 3  # exactly one token left possible
    assert drawn == {0, 1}  # 0.5 + 0.3 reach 0.7: tokens 2 and 3 are never drawn


def test_a_meter_counts_every_generated_token_as_completion_tokens_do(tiny):
    from helpers.llm.meter import TokenMeter

    model, tok = tiny
    meter = TokenMeter()
    rows = generate_batch(model, tok, PROMPTS, max_new_tokens=6, meter=meter)
    assert meter.tokens == sum(r.output_tokens for r in rows) > 0
    eos = tok.eos_token_id
    try:  # a row that stops early stops counting; the padding it gets afterwards is not counted
        model.generation_config.eos_token_id = rows[0].token_ids[1]
        stopped = generate_batch(model, tok, PROMPTS, max_new_tokens=6, meter=meter)
        assert any(r.stopped for r in stopped)
        assert meter.tokens == sum(r.output_tokens for r in rows + stopped)
    finally:
        model.generation_config.eos_token_id = eos
