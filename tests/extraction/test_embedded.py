"""The real embedded models, offline: SmolLM2-135M-Instruct and Gemma-3-270M.

Marked `embedded` and run in CI all the same: they are what a new user gets. The first use
converts each GGUF once into the model cache (tests/extraction/test_models.py checks that path on
a tiny GGUF). Each model is loaded once per module and kept small: six samples, four layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from extraction.capture import CaptureSpec, make_batch
from extraction.datasets import load_dataset
from extraction.loading import load
from extraction.models import COMPLETE_MARKER, resolve
from extraction.runner import execute
from settings.run import RunSettings
from store import open_store
from tests.support.tiny import write_jsonl

pytestmark = pytest.mark.embedded
N_SAMPLES = 6


@pytest.fixture(scope="module")
def emotions_subset(tmp_path_factory):
    samples = load_dataset("emotions").samples[:N_SAMPLES]
    rows = [{"id": s.id, "text": s.text, "label": s.label} for s in samples]
    return write_jsonl(tmp_path_factory.mktemp("data") / "emotions6.jsonl", rows)


@pytest.fixture(scope="module")
def hf_loaded():
    """name -> the model loaded with the HF backend on CPU, once per module."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache.clear()  # one embedded model in memory at a time
            cache[name] = load(resolve(name), "hf", "cpu")
        return cache[name]

    return get


def _reference(model, tokenizer, text: str) -> tuple[tuple, torch.Tensor]:
    """HF's hidden_states, and the last block's output before the final norm (the norm's input:
    `hidden_states[-1]` is after it), read by a hook on the norm, not on the block."""
    seen = {}
    handle = model.model.norm.register_forward_pre_hook(lambda _m, args: seen.update(x=args[0]))
    try:
        with torch.no_grad():
            out = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
    finally:
        handle.remove()
    return out.hidden_states, seen["x"][0]


@pytest.mark.parametrize(
    ("name", "n_layers", "d_model"), [("gemma3-270m", 18, 640), ("smollm2-135m", 30, 576)]
)  # SmolLM2 last: the next test reuses it
def test_stored_last_and_mean_equal_hf_hidden_states(
    tmp_path, emotions_subset, hf_loaded, name, n_layers, d_model
):
    """`last` and `mean` (first token left out) at the first, a middle, the second-to-last and
    the last block, asked for as a negative layer list."""
    loaded = hf_loaded(name)
    config = RunSettings(model=name, dataset=str(emotions_subset), hooks=("resid_post",),
                         layers="0,9,-2,-1", positions=("last", "mean"))  # fmt: skip
    # readout=False: Gemma's is 336 MB; readouts are tested in tests/extraction/test_readout.py
    result = execute(config, tmp_path / "store", progress=False, loaded=loaded, readout=False)
    manifest = result.manifest
    assert (manifest.n_layers, manifest.d_model) == (n_layers, d_model)
    assert manifest.layers == (0, 9, n_layers - 2, n_layers - 1)
    marker = json.loads((Path(resolve(name).source) / COMPLETE_MARKER).read_text())
    assert manifest.weights_sha256 == marker["gguf_sha256"]  # the shipped GGUF's hash
    assert manifest.row_counts["float16_overflow_values"] == 0

    store = open_store(tmp_path / "store")
    texts = [json.loads(line)["text"] for line in emotions_subset.read_text().splitlines()]
    references = [_reference(loaded.hf_model, loaded.tokenizer, t) for t in texts]
    for layer in manifest.layers:
        last, _ = store.vectors(result.run_id, "resid_post", layer, "last")
        mean, _ = store.vectors(result.run_id, "resid_post", layer, "mean")
        for i, (hidden, final_input) in enumerate(references):
            states = final_input if layer == n_layers - 1 else hidden[layer + 1][0]
            for stored, want in ((last[i], states[-1]), (mean[i], states[1:].mean(0))):
                want = want.numpy()
                # float16 keeps ~3 significant digits; compare relative to the vector's scale
                scale = np.abs(want).max()
                np.testing.assert_allclose(stored, want, rtol=2e-3, atol=2e-3 * scale)


def test_transformer_lens_default_processing_equals_hf_on_smollm2(
    emotions_subset, hf_loaded, capsys
):
    """SmolLM2 uses RMSNorm: `--tl-processing default` cannot centre it, only fold the norm
    scales, so its numbers equal HF's, and the label and a note on stderr say so."""
    hf = hf_loaded("smollm2-135m").backend
    loaded_tl = load(resolve("smollm2-135m"), "transformer_lens", "cpu", tl_processing="default")
    assert "same basis as Hugging Face" in loaded_tl.backend.weight_processing
    assert "'smollm2-135m' uses RMSNorm" in capsys.readouterr().err
    tokenizer = loaded_tl.tokenizer
    texts = [json.loads(line)["text"] for line in emotions_subset.read_text().splitlines()][:4]
    batch = make_batch([tokenizer(t)["input_ids"] for t in texts], range(4), pad_id=0)
    spec = CaptureSpec(("resid_post", "mlp_out", "attn_out"), (0, 10, 29), ("last", "mean"))
    got_hf, got_tl = hf.capture(batch, spec), loaded_tl.backend.capture(batch, spec)
    for key, value in got_hf.items():
        torch.testing.assert_close(got_tl[key], value, rtol=1e-3, atol=1e-3, msg=str(key))
