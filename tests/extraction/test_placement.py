"""`--device-map` and `--quantize`: a model spread by accelerate captures what the same model on
one device captures; what this machine cannot do is one `error:` line before anything is written.

Without a GPU, the device maps covered are CPU and CPU + disk offload (accelerate streams the
offloaded blocks' weights from disk into each forward pass).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from extraction.__main__ import main
from store import open_store
from tests.support.tiny import emotion_rows, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory):
    """The same tiny Llama run plainly, over a CPU + disk device map, and with `auto`."""
    root = tmp_path_factory.mktemp("placement")
    dataset = write_jsonl(root / "emo.jsonl", emotion_rows(per_label=2))
    placement = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
                 "model.layers.2": "disk", "model.layers.3": "disk", "model.norm": "cpu",
                 "model.rotary_emb": "cpu", "lm_head": "cpu"}  # fmt: skip
    map_file = root / "map.json"
    map_file.write_text(json.dumps(placement))
    args = ["--model", str(tiny_models["llama"]), "--dataset", str(dataset), "--hooks",
            "resid_pre,resid_post,mlp_out", "--dtype", "float32", "--no-progress"]  # fmt: skip
    store_root = root / "store"
    for run_id, extra in (("plain", []), ("offload", ["--device-map", str(map_file)]),
                          ("auto", ["--device-map", "auto"])):  # fmt: skip
        assert main(["run", *args, "--store", str(store_root), "--run-id", run_id, *extra]) == 0
    return {"store": open_store(store_root), "args": args, "root": root}


def test_a_device_map_over_cpu_and_disk_captures_what_one_device_does(runs):
    store = runs["store"]
    for run_id in ("offload", "auto"):
        for hook in ("resid_pre", "resid_post", "mlp_out"):
            for layer in range(4):
                mine, _ = store.vectors(run_id, hook, layer, "mean")
                plain, _ = store.vectors("plain", hook, layer, "mean")
                np.testing.assert_allclose(mine, plain, rtol=1e-6, atol=1e-6)
    offload = store.manifest("offload")
    assert offload.extra["placement"]["modules_per_device"] == {"cpu": 6, "disk": 2}
    assert offload.extra["placement"]["device_map"].endswith("map.json")
    assert store.manifest("auto").extra["placement"]["device_map"] == "auto"
    assert "placement" not in store.manifest("plain").extra
    # Where the weights sit does not change what is stored: the same fingerprint (resumable).
    assert offload.extra["fingerprint"] == store.manifest("plain").extra["fingerprint"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--quantize", "8bit"], "--quantize 8bit: bitsandbytes quantisation needs a CUDA GPU"),
        (["--quantize", "2bit"], "unknown quantization '2bit'"),
        (["--device-map", "cuda:0"], "torch sees no CUDA GPU"),
        (["--device-map", "everywhere"], "device map 'everywhere' is not"),
        (["--device-map", "missing.json"], "device map 'missing.json'"),
        (["--device-map", "auto", "--backend", "transformer_lens"], "--device-map needs"),
    ],
)
def test_what_this_machine_cannot_do_is_one_error_line(runs, tmp_path, capsys, extra, says):
    store_root = tmp_path / "store"
    assert main(["run", *runs["args"], "--store", str(store_root), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not store_root.exists()


def test_a_bad_device_map_file_names_the_module(runs, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model.layers.0": "gpu-7"}))
    store_root = tmp_path / "store"
    assert main(["run", *runs["args"], "--store", str(store_root), "--device-map", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "'model.layers.0' -> 'gpu-7'" in err and not store_root.exists()
