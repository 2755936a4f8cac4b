"""Readouts saved by extraction: the final norm is measured right on three architectures, a
model's readout is saved once per weights (by paired runs unless told otherwise) and shared,
and a direction reads as the tokens it points to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import TopTokens, readout_directions
from extraction.architectures import architecture_for, final_norm
from extraction.readout import measure_norm
from store import open_store
from tests.support.tiny import emotion_rows, pair_rows, tiny_model, write_jsonl

NORMS = [("llama", "rms", 0.0), ("gemma3", "rms", 1.0), ("gpt2", "layer", 0.0)]


@pytest.mark.parametrize(("kind", "norm_kind", "offset"), NORMS)
def test_the_final_norm_is_measured_not_assumed(kind, norm_kind, offset):
    """Llama scales by `weight`, Gemma by `1 + weight`, GPT-2 centres first: found by fitting."""
    model = tiny_model(kind)
    norm = final_norm(model, architecture_for(model))
    with torch.no_grad():
        norm.weight.uniform_(-2.0, 2.0)
    found, gain = measure_norm(norm, model.config.hidden_size)
    assert found == norm_kind
    np.testing.assert_allclose(gain, norm.weight.detach().numpy() + offset, rtol=1e-5, atol=1e-6)


def test_a_norm_that_is_not_elementwise_is_refused():
    mixing = torch.nn.Linear(8, 8)
    with pytest.raises(ValueError, match="neither an RMSNorm nor a LayerNorm"):
        measure_norm(mixing, 8)


def test_each_model_of_a_store_has_one_readout_and_directions_read_as_tokens(tiny_store):
    store = open_store(tiny_store["root"])
    by_weights = {m.weights_sha256: m for m in store.runs()}
    readouts = store.readouts()
    assert sorted(r.weights_sha256 for r in readouts) == sorted(by_weights)  # 3 models, 4 runs
    assert store.damaged_readouts() == []
    gpt2 = next(r for r in readouts if r.architecture == "gpt2")
    assert gpt2.norm_kind == "layer" and gpt2.centred
    llama = next(r for r in readouts if r.architecture == "llama")
    W = np.concatenate([w for _, w in store.iter_unembedding(llama.weights_sha256)])
    tokens = [40, 41, 150]
    # A direction along a token's unembedding row (undoing the norm's gain) promotes that token.
    directions = W[tokens] / np.asarray(llama.gain)
    top = TopTokens(readout_directions(directions, llama.gain, llama.centred), top=3)
    for ids, chunk in store.iter_unembedding(llama.weights_sha256, batch_rows=64):
        top.update(ids, chunk)
    result = top.result()
    assert result.promoted_ids[:, 0].tolist() == tokens
    assert (result.suppressed_scores < result.promoted_scores[:, -1:]).all()


def test_only_paired_runs_save_the_readout_unless_told(tiny_models, tmp_path, capsys):
    """Through the CLI: a run nothing reads in words adds no readout (336 MB for Gemma 3), a
    paired run saves its model's one, and the next paired run of that model shares it."""
    from extraction.__main__ import main

    root = tmp_path / "store"
    model = str(tiny_models["llama"])

    def run(rows, name, *flags):
        dataset = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        argv = ["run", "--store", str(root), "--model", model, "--dataset", str(dataset),
                "--hooks", "resid_post", "--positions", "last", "--layers", "0",
                "--name", name, "--no-progress", *flags]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err

    def readouts():
        return [(p.name, p.stat().st_mtime_ns) for p in (root / "readouts").glob("*")]

    run(emotion_rows(), "emotions")
    run(pair_rows(4), "pairs-none", "--no-readout")
    assert readouts() == []
    run(pair_rows(4), "pairs")
    (saved,) = readouts()
    run(pair_rows(4), "pairs-again")
    run(emotion_rows(), "emotions-asked", "--readout")
    assert readouts() == [saved]  # one per weights, written once
    store = open_store(root)
    assert {m.weights_sha256 for m in store.runs()} == {store.readouts()[0].weights_sha256}
