"""Capture backends on tiny random models: equal to Hugging Face hidden_states, padding-proof,
and the per-architecture site registry adds up (resid_post = resid_pre + attn_out + mlp_out)."""

from __future__ import annotations

import pytest
import torch

from extraction.capture import CaptureSpec, HFBackend, make_batch
from tests.support.tiny import tiny_model

KINDS = ("llama", "gemma3", "gpt2")
TEXT_IDS = [[5, 17, 23, 99, 4, 8, 150], [7, 40, 2], [3, 11, 12, 13, 14, 200, 201, 202, 9, 33]]


def _reference(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]), output_hidden_states=True).hidden_states


@pytest.mark.parametrize("kind", KINDS)
def test_hf_backend_equals_hidden_states(kind):
    model = tiny_model(kind).eval()
    backend = HFBackend(model)
    n = backend.n_layers
    spec = CaptureSpec(("resid_pre", "resid_post"), tuple(range(n)), ("last", "mean", "all"))
    captured = backend.capture(make_batch(TEXT_IDS, [0, 1, 2], pad_id=0), spec)
    for row, ids in enumerate(TEXT_IDS):
        hidden = _reference(model, ids)
        for layer in range(n):
            pre = captured[("resid_pre", "last", layer)][row]
            torch.testing.assert_close(pre, hidden[layer][0, -1], rtol=1e-4, atol=1e-5)
            mean = captured[("resid_pre", "mean", layer)][row]
            torch.testing.assert_close(mean, hidden[layer][0, 1:].mean(0), rtol=1e-4, atol=1e-5)
            tokens = captured[("resid_pre", "all", layer)][row, : len(ids)]
            torch.testing.assert_close(tokens, hidden[layer][0], rtol=1e-4, atol=1e-5)
            if layer < n - 1:  # HF applies the final norm to its last hidden state; we do not
                post = captured[("resid_post", "last", layer)][row]
                torch.testing.assert_close(post, hidden[layer + 1][0, -1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_sites_add_up_to_the_residual_update(kind):
    model = tiny_model(kind).eval()
    backend = HFBackend(model)
    spec = CaptureSpec(
        ("resid_pre", "resid_post", "attn_out", "mlp_out"),
        tuple(range(backend.n_layers)),
        ("last",),
    )
    captured = backend.capture(make_batch(TEXT_IDS, [0, 1, 2], pad_id=0), spec)
    for layer in range(backend.n_layers):
        update = captured[("resid_post", "last", layer)] - captured[("resid_pre", "last", layer)]
        parts = captured[("attn_out", "last", layer)] + captured[("mlp_out", "last", layer)]
        torch.testing.assert_close(update, parts, rtol=1e-4, atol=1e-5)


def test_mean_can_include_the_first_token():
    model = tiny_model("llama").eval()
    backend = HFBackend(model)
    spec = CaptureSpec(("resid_pre",), (1,), ("mean",), include_first_token=True)
    captured = backend.capture(make_batch(TEXT_IDS[:1], [0], pad_id=0), spec)
    hidden = _reference(model, TEXT_IDS[0])
    torch.testing.assert_close(captured[("resid_pre", "mean", 1)][0], hidden[1][0].mean(0))


def test_one_token_sample_mean_falls_back_to_that_token():
    model = tiny_model("llama").eval()
    backend = HFBackend(model)
    spec = CaptureSpec(("resid_post",), (0,), ("mean", "last"))
    captured = backend.capture(make_batch([[42], [1, 2, 3]], [0, 1], pad_id=0), spec)
    mean = captured[("resid_post", "mean", 0)]
    assert torch.isfinite(mean).all()
    torch.testing.assert_close(mean[0], captured[("resid_post", "last", 0)][0])


def test_hooks_are_removed_after_capture():
    model = tiny_model("llama").eval()
    backend = HFBackend(model)
    spec = CaptureSpec(("resid_pre", "mlp_out"), (0, 2), ("last",))
    backend.capture(make_batch(TEXT_IDS, [0, 1, 2], pad_id=0), spec)
    remaining = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert remaining == 0
    _reference(model, TEXT_IDS[0])  # the model still runs as a plain model


# GPT-2 is left out: TransformerLens 3.9 reads `n_ctx`, which transformers 5 configs lack.
@pytest.mark.slow  # importing TransformerLens takes seconds
@pytest.mark.parametrize("processing", ["none", "default"])
def test_transformer_lens_backend_matches_hf(processing, tiny_models, capsys):
    """On an RMSNorm model `default` only folds the norm scales (TransformerLens centres LayerNorm
    models only): the same numbers as HF, and the manifest label and a note say so."""
    from extraction.loading import load
    from extraction.models import resolve

    resolved = resolve(str(tiny_models["llama"]))
    hf = load(resolved, "hf", "cpu").backend
    tl = load(resolved, "transformer_lens", "cpu", tl_processing=processing).backend
    assert tl.name == "transformer_lens"
    assert tl.weight_processing.startswith("none" if processing == "none" else "fold_ln and")
    assert "same basis as Hugging Face" in tl.weight_processing
    note = capsys.readouterr().err
    assert ("TransformerLens centres only LayerNorm models" in note) == (processing == "default")
    spec = CaptureSpec(
        ("resid_pre", "resid_post", "mlp_out", "attn_out"),
        tuple(range(hf.n_layers)),
        ("last", "mean"),
    )
    batch = make_batch(TEXT_IDS, [0, 1, 2], pad_id=0)
    got_hf, got_tl = hf.capture(batch, spec), tl.capture(batch, spec)
    assert got_hf.keys() == got_tl.keys()
    for key in got_hf:
        torch.testing.assert_close(got_tl[key], got_hf[key], rtol=1e-4, atol=1e-4, msg=str(key))


def test_processing_label_tells_layernorm_centring_apart():
    from extraction.loading import processing_label

    assert "differs from HF" in processing_label("default", "LNPre")
    assert "same basis" in processing_label("default", "RMSPre")
    assert "same basis" in processing_label("none", "LN")
