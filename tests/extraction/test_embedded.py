"""The real embedded models, offline: SmolLM2-135M-Instruct and Gemma-3-270M.

Slow-ish (the first use converts each GGUF once into the model cache), marked `embedded`, and run
in CI all the same: they are what a new user gets.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from extraction.capture import CaptureSpec, make_batch
from extraction.datasets import load_dataset
from extraction.loading import load
from extraction.models import COMPLETE_MARKER, EMBEDDED, ensure_converted, resolve
from extraction.runner import execute
from settings.run import RunSettings
from store import open_store
from tests.support.tiny import write_jsonl

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def emotions_subset(tmp_path_factory):
    samples = load_dataset("emotions").samples
    rows = [{"id": s.id, "text": s.text, "label": s.label} for s in samples[:24]]
    return write_jsonl(tmp_path_factory.mktemp("data") / "emotions24.jsonl", rows)


@pytest.mark.parametrize(
    ("name", "n_layers", "d_model"), [("smollm2-135m", 30, 576), ("gemma3-270m", 18, 640)]
)
def test_stored_resid_post_equals_hf_hidden_states(
    tmp_path, emotions_subset, name, n_layers, d_model
):
    config = RunSettings(model=name, dataset=str(emotions_subset),
                         hooks=("resid_pre", "resid_post"), positions=("last",),
                         batch_size=8)  # fmt: skip
    # readout=False: Gemma's is 336 MB; readouts are tested in tests/extraction/test_readout.py
    result = execute(config, tmp_path / "store", progress=False, readout=False)
    manifest = result.manifest
    assert (manifest.n_layers, manifest.d_model) == (n_layers, d_model)
    assert (
        manifest.weights_sha256
        == json.loads((ensure_converted(EMBEDDED[name], _cache()) / COMPLETE_MARKER).read_text())[
            "gguf_sha256"
        ]
    )
    assert manifest.row_counts["float16_overflow_values"] == 0

    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(name).source
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    store = open_store(tmp_path / "store")
    texts = [json.loads(line)["text"] for line in emotions_subset.read_text().splitlines()]
    with torch.no_grad():
        hidden = [
            model(**tokenizer(t, return_tensors="pt"), output_hidden_states=True).hidden_states
            for t in texts[:6]
        ]
    for layer in (0, n_layers // 2, n_layers - 2):
        stored, _ = store.vectors(result.run_id, "resid_post", layer, "last")
        for i, states in enumerate(hidden):
            reference = states[layer + 1][0, -1].numpy()
            # float16 keeps ~3 significant digits; compare relative to the vector's scale
            scale = np.abs(reference).max()
            np.testing.assert_allclose(stored[i], reference, rtol=2e-3, atol=2e-3 * scale)


def test_transformer_lens_and_hf_agree_on_smollm2(emotions_subset):
    resolved = resolve("smollm2-135m")
    hf = load(resolved, "hf", "cpu").backend
    loaded_tl = load(resolved, "transformer_lens", "cpu")
    tokenizer = loaded_tl.tokenizer
    texts = [json.loads(line)["text"] for line in emotions_subset.read_text().splitlines()][:4]
    batch = make_batch([tokenizer(t)["input_ids"] for t in texts], range(4), pad_id=0)
    spec = CaptureSpec(("resid_post", "mlp_out", "attn_out"), (0, 10, 29), ("last", "mean"))
    got_hf, got_tl = hf.capture(batch, spec), loaded_tl.backend.capture(batch, spec)
    for key, value in got_hf.items():
        torch.testing.assert_close(got_tl[key], value, rtol=1e-3, atol=1e-3, msg=str(key))


def _cache():
    from extraction.models import model_cache_dir

    return model_cache_dir()


def test_half_written_conversion_is_rebuilt(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    broken = cache / "smollm2-135m"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{ half written")
    folder = ensure_converted(EMBEDDED["smollm2-135m"], cache)
    assert (folder / COMPLETE_MARKER).is_file()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    shutil.rmtree(cache)


def test_default_runs_cover_both_models(tmp_path):
    from extraction.defaults import default_configs

    configs = default_configs(tuple(EMBEDDED))
    style = [c for c in configs if c.dataset == "style_pairs"]
    configs = [c for c in configs if c.dataset != "style_pairs"]
    assert {(c.model, c.dataset) for c in configs} == {
        (m, d) for m in EMBEDDED for d in ("emotions", "minimal_pairs", "propositions")
    }
    assert all(c.layers == "all" and set(c.hooks) == {"resid_pre", "resid_post", "mlp_out"}
               and set(c.positions) == {"last", "mean"} for c in configs)  # fmt: skip
    # What control vectors are made from on first start: SmolLM2's last-token style states.
    assert [(c.model, c.hooks, c.positions, c.layers) for c in style] == [
        ("smollm2-135m", ("resid_post",), ("last",), "all")
    ]
