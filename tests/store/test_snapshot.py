"""Snapshots: chosen runs and layers, float16, self-contained, size printed, bad input refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from store import RunManifest, RunWriter, StoreError, open_store
from store.snapshot import snapshot

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "store", *args], cwd=REPO, capture_output=True, text=True
    )


def test_snapshot_keeps_chosen_runs_and_layers(tiny_store, tmp_path):
    source = open_store(tiny_store["root"])
    by_name = {m.name: m for m in source.runs()}
    llama, pairs = by_name["emo-llama"], by_name["pairs-llama"]
    out = tmp_path / "snap"
    runs = f"{llama.run_id},{pairs.run_id}"
    result = cli("snapshot", "--store", str(source.root), "--runs", runs, "--layers", "0,-1",
                 "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert result.stdout.strip().splitlines()[-1].endswith(f"({size} bytes)")

    # Self-contained: it still opens after being moved elsewhere.
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    snap = open_store(moved)
    assert snap.run_ids() == sorted([llama.run_id, pairs.run_id])
    manifest = snap.manifest(llama.run_id)
    assert manifest.layers == (0, llama.n_layers - 1) and manifest.dtype == "float16"
    assert manifest.extra["snapshot"]["source_layers"] == list(llama.layers)
    last = llama.n_layers - 1
    for hook in llama.hooks:
        got, samples = snap.vectors(llama.run_id, hook, last, "mean")
        want, _ = source.vectors(llama.run_id, hook, last, "mean")
        np.testing.assert_array_equal(got, want)  # the source is float16 already: exact
        assert list(samples["label"]) == list(source.samples(llama.run_id)["label"])
    with pytest.raises(StoreError, match="has no layer 1"):
        snap.vectors(llama.run_id, "resid_post", 1, "last")
    # Per-token rows and their tokens come along for the pairs run.
    X, tokens, _ = snap.token_vectors(pairs.run_id, "resid_post", 0)
    assert X.shape[0] == 2 and len(tokens) == X.shape[1]
    rows = snap.query("SELECT count(*) AS n FROM vectors WHERE run_id = ?", [llama.run_id])
    assert rows.frame["n"][0] == manifest.row_counts["vector_rows"]


def _float32_run(root: Path, d: int = 4, n: int = 3) -> str:
    writer = RunWriter.create(root, "f32", {"config": {}}, d_model=d, dtype="float32")
    writer.write_samples(pa.table({
        "sample_idx": pa.array(np.arange(n, dtype=np.int32)),
        "run_id": ["f32"] * n, "id": [str(i) for i in range(n)], "text": ["t"] * n,
        "label": ["a"] * n,
    }))  # fmt: skip
    for layer in range(3):
        values = np.full((n, d), 0.1 + layer, np.float32)
        values[0, 0] = 1e6 if layer == 2 else values[0, 0]  # beyond float16: becomes inf
        writer.add("resid_post", "last", layer, np.arange(n), np.full(n, -1), values)
    writer.end_batch(list(range(n)))
    manifest = RunManifest(
        run_id="f32", name="f32", model="m", model_source="m", architecture="llama",
        weights_sha256="0", n_layers=3, d_model=d, backend="hf", weight_processing="none",
        hooks=("resid_post",), layers=(0, 1, 2), positions=("last",), dtype="float32",
        dataset_name="d", dataset_sha256="0", n_samples=n,
    )  # fmt: skip
    writer.commit(manifest)
    return "f32"


def test_snapshot_casts_to_float16_and_counts_overflow(tmp_path):
    run_id = _float32_run(tmp_path / "src")
    size = snapshot(tmp_path / "src", [run_id], tmp_path / "out", layers=[1, 2])
    assert size > 0
    snap = open_store(tmp_path / "out")
    manifest = snap.manifest(run_id)
    assert manifest.dtype == "float16" and manifest.layers == (1, 2)
    assert manifest.row_counts["float16_overflow_values"] == 1
    X, _ = snap.vectors(run_id, "resid_post", 1, "last")
    np.testing.assert_allclose(X, 1.1, rtol=1e-3)
    assert np.isinf(snap.vectors(run_id, "resid_post", 2, "last")[0][0, 0])


def test_snapshot_takes_unambiguous_run_id_prefixes(tiny_store, tmp_path):
    source = open_store(tiny_store["root"])
    llama = next(m for m in source.runs() if m.name == "emo-llama")
    prefix = llama.run_id[: llama.run_id.index("llama") + len("llama")]
    out = tmp_path / "snap"
    result = cli("snapshot", "--store", str(source.root), "--runs", prefix, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert open_store(out).run_ids() == [llama.run_id]

    ambiguous = cli("snapshot", "--store", str(source.root), "--runs", "emo-",
                    "--out", str(tmp_path / "x"))  # fmt: skip
    assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr, ambiguous.stderr
    assert llama.run_id in ambiguous.stderr and not (tmp_path / "x").exists()


def test_snapshot_refuses_bad_input_in_one_line(tiny_store, tmp_path):
    root = str(tiny_store["root"])
    run_id = tiny_store["run_ids"][0]
    cases = [
        (["--runs", "nope"], "no committed run 'nope'"),
        (["--runs", run_id, "--layers", "99"], "has no layer 99"),
        (["--runs", run_id, "--layers", "a,b"], "bad layers 'a,b'"),
        (["--runs", "../../etc"], "not valid"),
    ]
    for args, message in cases:
        result = cli("snapshot", "--store", root, "--out", str(tmp_path / "x"), *args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert not (tmp_path / "x").exists()
    assert cli("snapshot", "--store", root, "--runs", run_id, "--out", root).returncode == 2
    assert cli("snapshot", "--store", root, "--runs", run_id, "--out",
               str(tmp_path / "y")).returncode == 0  # fmt: skip
    again = cli("snapshot", "--store", root, "--runs", run_id, "--out", str(tmp_path / "y"))
    assert again.returncode == 2 and "already exists" in again.stderr
