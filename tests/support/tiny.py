"""Tiny deterministic models and stores for tests.

`tiny_model_dir(kind, folder)` saves a random-weight model of the given architecture with a
byte-level tokenizer (no merges, so every byte is a token), built from configs only: no download.
`build_store(...)` runs the real extraction code over a small dataset into a real store.
`tiny_gguf(path)` writes a tiny quantised Llama GGUF, for the embedded models' conversion path.
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


def reference_hidden_states(model_dir: Path | str, texts: list[str]) -> list[list]:
    """Per text, Hugging Face's `hidden_states` as numpy arrays [n_tokens, d] (one per layer + 1),
    computed one text at a time (no padding): what stored vectors are checked against."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            out.append([h[0].numpy() for h in model(ids, output_hidden_states=True).hidden_states])
    return out


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


def proposition_rows() -> list[dict]:
    """Four A / B pairs of claims in two categories, like the built-in propositions."""
    claims = [("politics", "taxes are fair"), ("science", "the sea is warm"),
              ("politics", "votes count"), ("science", "stars are far")]  # fmt: skip
    rows = []
    for i, (category, claim) in enumerate(claims):
        for side, frame in (("a", "Is it true that"), ("b", "Is it false that")):
            rows.append({"id": f"q{i}{side}", "pair_id": f"q{i}", "side": side,
                         "category": category, "label": side.upper(),
                         "text": f"{frame} {claim}?"})  # fmt: skip
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
    """Run the real extraction for each spec {kind, dataset rows name, **RunSettings fields};
    every run saves its model's readout unless the spec says `readout: False`."""
    from extraction.runner import execute
    from settings.run import RunSettings

    run_ids = []
    for spec in runs:
        spec = dict(spec)
        kind = spec.pop("kind")
        model_dir = tiny_model_dir(kind, work / f"model-{kind}")
        rows = spec.pop("rows")
        readout = spec.pop("readout", True)
        dataset = write_jsonl(work / f"{spec.pop('dataset_name')}.jsonl", rows)
        config = RunSettings(model=str(model_dir), dataset=str(dataset), **spec)
        run_ids.append(execute(config, root, progress=False, readout=readout).run_id)
    return run_ids


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (what a byte-level BPE vocabulary spells)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    others = [b for b in range(256) if b not in printable]
    return sorted(chr(b) for b in printable) + [chr(256 + i) for i in range(len(others))]


def tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A tiny Llama GGUF file (2 blocks, d_model 32, byte-level BPE with a few merges), with
    most weights quantised to Q8_0, as llama.cpp writes them: what transformers' GGUF loader and
    `extraction.models` conversion read, at a size that converts in a second."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = ["<s>", "</s>", "<pad>", *_byte_alphabet(), "th", "the", "Ġt"]
    d_model, d_ff, n_layers, n_heads, n_kv = 32, 64, 2, 4, 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(64)
    writer.add_embedding_length(d_model)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(d_ff)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))  # 3: control
    writer.add_token_merges(["t h", "th e", "Ġ t"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_pad_token_id(2)
    q8 = gguf.GGMLQuantizationType.Q8_0

    def add(name: str, shape: tuple[int, ...], quantised: bool = True) -> None:
        data = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if not quantised:
            writer.add_tensor(name, data)
            return
        packed = gguf.quants.quantize(data, q8)
        writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=q8)

    add("token_embd.weight", (len(tokens), d_model))
    kv_width = d_model // n_heads * n_kv
    for block in range(n_layers):
        add(f"blk.{block}.attn_norm.weight", (d_model,), quantised=False)
        add(f"blk.{block}.attn_q.weight", (d_model, d_model))
        add(f"blk.{block}.attn_k.weight", (kv_width, d_model))
        add(f"blk.{block}.attn_v.weight", (kv_width, d_model))
        add(f"blk.{block}.attn_output.weight", (d_model, d_model))
        add(f"blk.{block}.ffn_norm.weight", (d_model,), quantised=False)
        add(f"blk.{block}.ffn_gate.weight", (d_ff, d_model))
        add(f"blk.{block}.ffn_up.weight", (d_ff, d_model))
        add(f"blk.{block}.ffn_down.weight", (d_model, d_ff))
    add("output_norm.weight", (d_model,), quantised=False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
