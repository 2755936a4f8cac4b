"""Tiny deterministic models and stores for tests.

`tiny_model_dir(kind, folder)` saves a random-weight model of the given architecture with a
byte-level tokenizer (no merges, so every byte is a token), built from configs only: no download.
`build_store(...)` runs the real extraction code over a small dataset into a real store.
"""

from __future__ import annotations

import json
from pathlib import Path

SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
    for char in sorted(alphabet):
        vocab[char] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def tiny_model(kind: str, seed: int = 0):
    import torch
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )  # fmt: skip

    torch.manual_seed(seed)
    vocab = 3 + 256
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, pad_token_id=0, **SMALL))
    if kind == "gemma3":
        config = Gemma3TextConfig(vocab_size=vocab, head_dim=8, pad_token_id=0,
                                  sliding_window=8, **SMALL)  # fmt: skip
        return Gemma3ForCausalLM(config)
    if kind == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_positions=256,
                            bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
        return GPT2LMHeadModel(config)
    raise ValueError(f"unknown tiny model kind {kind!r}")


def tiny_model_dir(kind: str, folder: Path, seed: int = 0) -> Path:
    folder = Path(folder)
    if not (folder / "config.json").exists():
        tiny_model(kind, seed).save_pretrained(folder)
        _tokenizer().save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def emotion_rows(per_label: int = 6) -> list[dict]:
    words = {
        "gratitude": ["thank you so much", "I am grateful", "many thanks", "I appreciate it"],
        "anger": ["this is outrageous", "I am furious", "stop it now", "how dare you"],
        "neutral": ["the bus leaves at noon", "it is a table", "water boils", "the shop opens"],
    }
    rows = []
    for label, phrases in words.items():
        for i in range(per_label):
            text = f"{phrases[i % len(phrases)]} {'and more ' * (i % 3)}today {i}"
            rows.append({"id": f"{label}-{i}", "text": text, "label": label})
    return rows


def pair_rows(n_pairs: int = 6) -> list[dict]:
    rows = []
    for i in range(n_pairs):
        category = ["meaning_change", "grammar_error"][i % 2]
        rows.append({"id": f"p{i}a", "pair_id": f"p{i}", "side": "a", "category": category,
                     "label": "original", "text": f"The cat sat on mat {i}."})  # fmt: skip
        rows.append({"id": f"p{i}b", "pair_id": f"p{i}", "side": "b", "category": category,
                     "label": "edited", "text": f"The dog sat on mat {i}."})  # fmt: skip
    return rows


def prompt_response_rows(per_label: int = 8) -> list[dict]:
    """Prompt + response records of two topics (teacher-forced SAE workflows)."""
    topics = {
        "cooking": ("How do I cook {x}?", " Heat the pan, add {x} and stir for {n} minutes."),
        "travel": ("Where should I go in {x}?", " Take the train to {x} and walk for {n} hours."),
    }
    things = ["rice", "pasta", "beans", "Rome", "Oslo", "Lima", "soup", "Kyoto", "eggs", "Paris"]
    rows = []
    for label, (prompt, response) in topics.items():
        for i in range(per_label):
            x, n = things[(i * 3 + len(label)) % len(things)], i + 2
            rows.append({"id": f"{label}-{i}", "label": label, "prompt": prompt.format(x=x),
                         "response": response.format(x=x, n=n)})  # fmt: skip
    return rows


def build_store(root: Path, work: Path, runs: list[dict]) -> list[str]:
    """Run the real extraction for each spec {kind, dataset rows name, **RunSettings fields}."""
    from extraction.runner import execute
    from settings.run import RunSettings

    run_ids = []
    for spec in runs:
        spec = dict(spec)
        kind = spec.pop("kind")
        model_dir = tiny_model_dir(kind, work / f"model-{kind}")
        rows = spec.pop("rows")
        dataset = write_jsonl(work / f"{spec.pop('dataset_name')}.jsonl", rows)
        config = RunSettings(model=str(model_dir), dataset=str(dataset), **spec)
        run_ids.append(execute(config, root, progress=False).run_id)
    return run_ids
