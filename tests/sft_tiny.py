"""A tiny tokenizer and randomly initialised causal LM for SFT tests: built in a second, no download, no cache."""
from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = [
    {"instruction": "Name a colour of the sky.", "input": "", "output": "Blue."},
    {"instruction": "What is two plus two?", "input": "", "output": "Four."},
    {"instruction": "Say hello to Ada.", "input": "", "output": "Hello, Ada!"},
    {"instruction": "Give one fruit.", "input": "", "output": "An apple."},
]


def build_tokenizer(turn_tokens: bool = False):
    """A byte-level BPE tokenizer trained on a few sentences; optionally with Gemma-style turn tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"] + (["<start_of_turn>", "<end_of_turn>"] if turn_tokens else [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [e["instruction"] + " " + e["output"] for e in EXAMPLES] * 3 + [
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
        "### Instruction:\n### Response:\n user model assistant system",
    ]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    kwargs = {"additional_special_tokens": specials[4:]} if turn_tokens else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>", **kwargs)


def build_model_folder(folder: Path, turn_tokens: bool = False) -> Path:
    """Save a tiny Llama-architecture model with the tokenizer, as a local BASE_MODEL folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = build_tokenizer(turn_tokens)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# Settings that make a tiny model overfit a handful of examples in seconds: enough to learn to stop.
OVERFIT = dict(max_steps=30, learning_rate=1e-2, warmup_ratio=0.0, lr_scheduler="constant", per_device_batch_size=4,
               max_length=96, use_lora=False, save_strategy="steps", save_every=15, logging_steps=5,
               max_new_tokens=12, compare_examples=2, selection_examples=4, max_train_examples=0,
               max_heldout_examples=0, selection="heldout_loss")


# Arithmetic rows for multi-process runs: 16 distinct training rows, so each process's share is visible in the trace.
ARITHMETIC_TRAIN = [{"instruction": f"What is {a} plus {a + 3}?", "input": "", "output": f"{2 * a + 3}."}
                    for a in range(16)]
ARITHMETIC_HELDOUT = [{"instruction": f"What is {a} minus 1?", "input": "", "output": f"{a - 1}."}
                      for a in (20, 30, 40, 50)]


def micro_batches(trace: Path, rank: int) -> list[list[int]]:
    """The training rows of each micro-batch process `rank` fetched (`helpers.sft.process_trace`)."""
    lines = (trace / f"rank{rank}.rows.jsonl").read_text().splitlines()
    return [json.loads(line)["rows"] for line in lines]
