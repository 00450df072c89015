"""Templates and masking: the prompt is masked, the response and its end-of-turn token are learned."""
from __future__ import annotations

import pytest

from helpers.params import ParameterError
from helpers.sft.data import IGNORE_INDEX, format_masked_view, masked_view, tokenize_messages, tokenize_record
from helpers.sft.templates import (
    ALPACA_PREAMBLE,
    build_template,
    install_template,
    record_to_messages,
    render_conversation,
    render_prompt,
)
from sft_tiny import EXAMPLES, build_tokenizer

CHAT = [{"role": "user", "content": "Name a colour of the sky."}, {"role": "assistant", "content": "Blue."}]


def _installed(name: str, turn_tokens: bool = False):
    tok = build_tokenizer(turn_tokens)
    spec = build_template(name, tok)
    install_template(spec, tok)
    return tok, spec


def test_alpaca_rendering():
    tok, spec = _installed("alpaca")
    assert spec.end_of_turn == tok.eos_token and not spec.tokens_to_add
    assert render_prompt(tok, CHAT[:1]) == (
        f"{ALPACA_PREAMBLE}\n\n### Instruction:\nName a colour of the sky.\n\n### Response:\n")
    assert render_conversation(tok, CHAT) == render_prompt(tok, CHAT[:1]) + "Blue.<eos>\n\n"


def test_alpaca_system_message_replaces_preamble():
    tok, _ = _installed("alpaca")
    text = render_prompt(tok, [{"role": "system", "content": "Be brief."}, CHAT[0]])
    assert text.startswith("Be brief.\n\n### Instruction:") and ALPACA_PREAMBLE not in text


def test_chatml_reuses_existing_turn_tokens():
    tok, spec = _installed("chatml", turn_tokens=True)
    assert spec.end_of_turn == "<end_of_turn>" and spec.tokens_to_add == []
    assert render_conversation(tok, CHAT) == (
        "<start_of_turn>user\nName a colour of the sky.<end_of_turn>\n<start_of_turn>model\nBlue.<end_of_turn>\n")
    assert render_prompt(tok, CHAT[:1]).endswith("<start_of_turn>model\n")


def test_chatml_adds_tokens_and_resizes_embeddings():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    before = len(tok)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=before, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    spec = build_template("chatml", tok)
    assert spec.tokens_to_add == ["<|im_start|>", "<|im_end|>"]
    end_id = install_template(spec, tok, model)
    assert len(tok) == before + 2
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert end_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert end_id in (model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                      else [model.generation_config.eos_token_id])
    ids = tok("<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids == [end_id], "the end-of-turn marker is one real token"


@pytest.mark.parametrize("name,turn_tokens", [("alpaca", False), ("chatml", False), ("chatml", True)])
def test_masking_prompt_masked_response_and_eos_learned(name, turn_tokens):
    tok, spec = _installed(name, turn_tokens)
    end_id = tok.convert_tokens_to_ids(spec.end_of_turn)
    ex = tokenize_record(tok, EXAMPLES[0], end_of_turn=spec.end_of_turn)
    prompt_ids = tok(render_prompt(tok, record_to_messages(EXAMPLES[0])[:1]), add_special_tokens=False)["input_ids"]
    # the sequence starts with exactly what the model sees at inference, and that part is masked
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(label == IGNORE_INDEX for label in ex.labels[: ex.prompt_length])
    assert ex.prompt_length == len(prompt_ids)
    # every response position is learned, the last one is the end-of-turn token
    learned = ex.labels[ex.prompt_length:]
    assert learned == ex.input_ids[ex.prompt_length:] and IGNORE_INDEX not in learned
    assert ex.labels[-1] == end_id and ex.input_ids[-1] == end_id
    assert tok.decode(learned[:-1]).strip() == "Blue."
    shown = format_masked_view(masked_view(tok, ex))
    assert shown.endswith(f"[[Blue.{spec.end_of_turn}]]")


def test_truncation_is_reported():
    tok, spec = _installed("alpaca")
    ex = tokenize_messages(tok, CHAT, max_length=5, end_of_turn=spec.end_of_turn)
    assert ex.truncated and len(ex.input_ids) == 5


def test_input_field_is_appended_to_instruction():
    msgs = record_to_messages({"instruction": "Translate.", "input": "Bonjour", "output": "Hello"})
    assert msgs == [{"role": "user", "content": "Translate.\n\nBonjour"}, {"role": "assistant", "content": "Hello"}]


def test_unknown_template_is_a_parameter_error():
    with pytest.raises(ParameterError) as err:
        build_template("vicuna", build_tokenizer())
    assert err.value.name == "CHAT_TEMPLATE"


# ------------------------------------------------------------------ llama3_alpaca (the paper's Llama-3 runs)
LLAMA3 = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def _llama3_tokenizer():
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": list(LLAMA3)})
    return tok


def test_llama3_alpaca_rendering_and_auto_choice():
    tok = _llama3_tokenizer()
    spec = build_template("auto", tok)
    assert spec.name == "llama3_alpaca" and spec.end_of_turn == "<|eot_id|>" and spec.tokens_to_add == []
    assert build_template("auto", build_tokenizer()).name == "alpaca"  # no Llama-3 vocabulary
    install_template(spec, tok)
    prompt = (f"<|start_header_id|>user<|end_header_id|>\n\n{ALPACA_PREAMBLE}\n\n### Instruction:\n"
              "Name a colour of the sky.\n\n### Response:<|eot_id|>")
    assert render_prompt(tok, CHAT[:1]) == prompt + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert render_conversation(tok, CHAT) == prompt + "<|start_header_id|>assistant<|end_header_id|>\n\nBlue.<|eot_id|>"


def test_llama3_alpaca_adds_missing_tokens():
    spec = build_template("llama3_alpaca", build_tokenizer())
    assert spec.tokens_to_add == list(LLAMA3)


def test_llama3_alpaca_masks_as_torchtune():
    """torchtune (Alpaca instruct template + Llama-3 tokenizer, train_on_input=False) masks the whole user message
    (header, Alpaca prompt, <|eot_id|>) and trains the whole assistant message: header, response and <|eot_id|>."""
    tok = _llama3_tokenizer()
    spec = build_template("llama3_alpaca", tok)
    install_template(spec, tok)
    ex = tokenize_record(tok, EXAMPLES[0], end_of_turn=spec.end_of_turn, learn_header=spec.learns_assistant_header)

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    start, end, eot = (tok.convert_tokens_to_ids(t) for t in LLAMA3)
    user = ([start] + enc("user") + [end] + enc("\n\n")
            + enc(f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{EXAMPLES[0]['instruction']}\n\n### Response:") + [eot])
    assistant = [start] + enc("assistant") + [end] + enc("\n\n") + enc(EXAMPLES[0]["output"]) + [eot]
    assert ex.input_ids == user + assistant
    assert ex.labels == [IGNORE_INDEX] * len(user) + assistant
    # generation starts from the prompt plus the assistant header, which the model has learned to follow
    prompt_ids = enc(render_prompt(tok, record_to_messages(EXAMPLES[0])[:1]))
    assert ex.input_ids[:len(prompt_ids)] == prompt_ids
