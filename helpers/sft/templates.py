"""Chat templates for turning a *base* model into a chat model, with a real, learned end-of-turn token.

A base model has no chat template, so SFT has to give it one on purpose, and generation later must use exactly the
same format. Two templates are offered:

- ``alpaca``: the format the paper trained with (the Stanford Alpaca layout: a one-line preamble, then
  ``### Instruction:`` / ``### Response:`` blocks). The end of a response is the tokenizer's own EOS token, appended
  after the response text, so the model learns to emit EOS and generation stops there.
- ``chatml``: turn markers around each message. If the vocabulary already holds a pair of turn tokens, they are
  reused as they are (Gemma's ``<start_of_turn>`` / ``<end_of_turn>``, or ChatML's ``<|im_start|>`` / ``<|im_end|>``):
  these ids exist and were pre-trained as special tokens, so no embedding has to be learned from scratch. Otherwise
  ``<|im_start|>`` / ``<|im_end|>`` are added as special tokens and the embedding matrix is resized; their new rows are
  then learned during SFT (full fine-tune; with LoRA the embedding rows are trained too, see ``sft_train``).

- ``llama3_alpaca``: what the paper's Llama-3 runs trained on (torchtune's Alpaca instruct template with its Llama-3
  tokenizer): the Alpaca prompt, ending ``### Response:``, is the user turn inside Llama-3 header tokens
  (``<|start_header_id|>user<|end_header_id|>`` ... ``<|eot_id|>``); the response is the assistant turn, and the loss
  covers the assistant header, the response and its ``<|eot_id|>`` (torchtune masks whole messages, header included).
  A vocabulary without these tokens gets them added. ``auto`` picks it when the base model's vocabulary has the
  Llama-3 tokens, ``alpaca`` otherwise.

In every template the end-of-turn token sits *inside* the assistant's ``{% generation %}`` block, so it is part of the
loss. The template is set on the tokenizer and saved with the model, and the end-of-turn id is put into the model's
generation config, so any later ``generate`` (or ``helpers.llm.client.connect(model=<folder>)``) stops on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..params import check_choice

TEMPLATE_NAMES = ("alpaca", "chatml", "llama3_alpaca", "auto")
# Llama-3's header and end-of-turn tokens, as its tokenizer (and torchtune's) writes them.
LLAMA3_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
# Templates whose loss includes the assistant's header (torchtune masks by message, header included).
HEADER_IN_LOSS = ("llama3_alpaca",)

# The fixed first line of the Alpaca format (used when a conversation brings no system message of its own).
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)

# Pairs of turn markers a vocabulary may already contain, with the assistant role name their owners use.
KNOWN_TURN_TOKENS: tuple[tuple[str, str, str], ...] = (
    ("<start_of_turn>", "<end_of_turn>", "model"),
    ("<|im_start|>", "<|im_end|>", "assistant"),
)
ADDED_TURN_TOKENS = ("<|im_start|>", "<|im_end|>", "assistant")


@dataclass
class TemplateSpec:
    """A chat template decided for one tokenizer: the jinja text plus what the model must know about it."""

    name: str = field(metadata={"help": "Template name: 'alpaca' or 'chatml'."})
    jinja: str = field(metadata={"help": "The jinja chat template set on the tokenizer and saved with the model."})
    end_of_turn: str = field(metadata={"help": "Token that ends an assistant turn; learned, and a stop token."})
    tokens_to_add: list[str] = field(default_factory=list,
                                     metadata={"help": "Special tokens missing from the vocabulary (embeddings resized)."})
    adds_bos: bool = field(default=False, metadata={"help": "Whether the template starts with the BOS token."})

    @property
    def learns_assistant_header(self) -> bool:
        """Whether the assistant turn's header is trained too (it is then not part of the masked prompt)."""
        return self.name in HEADER_IN_LOSS

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "end_of_turn": self.end_of_turn, "tokens_to_add": list(self.tokens_to_add),
                "adds_bos": self.adds_bos}


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """True when the tokenizer puts BOS in front of plain text; the template must then do it itself.

    Chat templates are rendered to text and tokenized without special tokens (TRL and ``helpers.llm.client`` both do so),
    so a model pre-trained with BOS in front (Gemma) only sees it if the template writes it.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _alpaca_jinja(bos: bool) -> str:
    preamble = ALPACA_PREAMBLE.replace("'", "\\'")
    return (
        ("{{- bos_token -}}" if bos else "")
        + "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{{- messages[0]['content'] + '\\n\\n' -}}"
        "{%- set rest = messages[1:] -%}"
        "{%- else -%}"
        "{{- '" + preamble + "\\n\\n' -}}"
        "{%- set rest = messages -%}"
        "{%- endif -%}"
        "{%- for message in rest -%}"
        "{%- if message['role'] == 'user' -%}"
        "{{- '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' -}}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{%- generation -%}{{- message['content'] + eos_token -}}{%- endgeneration -%}"
        "{{- '\\n\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        # The prompt already ends with '### Response:\n', so the generation prompt adds nothing.
    )


def _chatml_jinja(start: str, end: str, assistant_role: str, bos: bool) -> str:
    return (
        ("{{- bos_token -}}" if bos else "")
        + "{%- for message in messages -%}"
        "{%- if message['role'] == 'assistant' -%}"
        "{{- '" + start + assistant_role + "\\n' -}}"
        "{%- generation -%}{{- message['content'] + '" + end + "' -}}{%- endgeneration -%}"
        "{{- '\\n' -}}"
        "{%- else -%}"
        "{{- '" + start + "' + message['role'] + '\\n' + message['content'] + '" + end + "\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '" + start + assistant_role + "\\n' -}}{%- endif -%}"
    )


def _llama3_alpaca_jinja(bos: bool) -> str:
    start, end, eot = LLAMA3_TOKENS
    preamble = ALPACA_PREAMBLE.replace("'", "\\'")
    header = "'" + start + "' + role + '" + end + "\\n\\n'"
    return (
        ("{{- bos_token -}}" if bos else "")
        + "{%- for message in messages -%}"
        "{%- set role = message['role'] -%}"
        "{%- if role == 'assistant' -%}"
        "{%- generation -%}{{- " + header + " + message['content'] + '" + eot + "' -}}{%- endgeneration -%}"
        "{%- elif role == 'user' -%}"
        "{{- " + header + " + '" + preamble + "\\n\\n### Instruction:\\n' + message['content'] "
        "+ '\\n\\n### Response:" + eot + "' -}}"
        "{%- else -%}"
        "{{- " + header + " + message['content'] + '" + eot + "' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '" + start + "assistant" + end + "\\n\\n' -}}{%- endif -%}"
    )


def has_llama3_tokens(tokenizer: Any) -> bool:
    return all(_in_vocab(tokenizer, t) for t in LLAMA3_TOKENS)


def _in_vocab(tokenizer: Any, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != getattr(tokenizer, "unk_token_id", None)


def build_template(name: str, tokenizer: Any) -> TemplateSpec:
    """Decide the template for this tokenizer (pure: nothing is changed; see `install_template`)."""
    check_choice("CHAT_TEMPLATE", name, TEMPLATE_NAMES)
    bos = tokenizer_adds_bos(tokenizer)
    if name == "auto":
        name = "llama3_alpaca" if has_llama3_tokens(tokenizer) else "alpaca"
    if name == "llama3_alpaca":
        missing = [t for t in LLAMA3_TOKENS if not _in_vocab(tokenizer, t)]
        return TemplateSpec("llama3_alpaca", _llama3_alpaca_jinja(bos), LLAMA3_TOKENS[2], missing, bos)
    if name == "alpaca":
        if not getattr(tokenizer, "eos_token", None):
            return TemplateSpec("alpaca", _alpaca_jinja(bos), "</s>", ["</s>"], bos)
        return TemplateSpec("alpaca", _alpaca_jinja(bos), tokenizer.eos_token, [], bos)
    for start, end, role in KNOWN_TURN_TOKENS:
        if _in_vocab(tokenizer, start) and _in_vocab(tokenizer, end):
            return TemplateSpec("chatml", _chatml_jinja(start, end, role, bos), end, [], bos)
    start, end, role = ADDED_TURN_TOKENS
    return TemplateSpec("chatml", _chatml_jinja(start, end, role, bos), end, [start, end], bos)


def install_template(spec: TemplateSpec, tokenizer: Any, model: Any | None = None) -> int:
    """Put the template on the tokenizer (and model): add missing tokens, resize embeddings, set stop ids.

    Returns the id of the end-of-turn token. The model's generation config stops on it (and on the original EOS),
    so generation through the saved folder ends by itself once the model has learned to emit it.
    """
    if spec.tokens_to_add:
        if spec.name == "alpaca":
            tokenizer.add_special_tokens({"eos_token": spec.end_of_turn})
        else:
            tokenizer.add_special_tokens({"additional_special_tokens": list(spec.tokens_to_add)})
        if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
    tokenizer.chat_template = spec.jinja
    if tokenizer.pad_token is None:
        # Padding positions are never learned (labels -100), so reusing EOS as pad does not hide the EOS label.
        tokenizer.pad_token = tokenizer.eos_token
    end_id = tokenizer.convert_tokens_to_ids(spec.end_of_turn)
    if model is not None:
        stop_ids = [end_id]
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id != end_id:
            stop_ids.append(tokenizer.eos_token_id)
        model.generation_config.eos_token_id = stop_ids if len(stop_ids) > 1 else end_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
    return end_id


def record_to_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """One training record (official fields) as a chat: the instruction (plus `input`, if any) and the response."""
    instruction = str(record.get("instruction") or "").strip()
    extra = str(record.get("input") or "").strip()
    user = f"{instruction}\n\n{extra}" if extra else instruction
    messages = [{"role": "user", "content": user}]
    if record.get("output") is not None:
        messages.append({"role": "assistant", "content": str(record["output"]).strip()})
    return messages


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The text the model sees before it answers the last user turn."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def render_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The full training text: prompt, response and the end-of-turn token."""
    return tokenizer.apply_chat_template(messages, tokenize=False)
