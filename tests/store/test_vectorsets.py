"""Vector sets and model readouts in the store: written whole, read strictly, and a damaged or
planted one is listed with its reason while the healthy ones stay readable."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import StoreError, open_store
from store.readouts import readout_key


@pytest.fixture
def store_copy(tiny_paired_store, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(tiny_paired_store["root"], root, symlinks=True)
    return {**tiny_paired_store, "root": root}


def _set_folder(store_copy, set_id=None):
    return store_copy["root"] / "vector_sets" / (set_id or store_copy["set_id"])


def _plant(store_copy, name: str) -> tuple:
    """A second set folder `name`, a copy of the healthy one; returns (folder, manifest dict)."""
    folder = _set_folder(store_copy, name)
    shutil.copytree(_set_folder(store_copy), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["set_id"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, manifest


def test_a_set_reads_back_with_its_provenance(tiny_paired_store):
    store = open_store(tiny_paired_store["root"])
    (manifest,) = store.vector_sets(check_files=True)
    vs = store.vector_set(manifest.set_id)
    run = store.manifest(tiny_paired_store["run_id"])
    assert (manifest.run_id, manifest.method, manifest.hook) == (run.run_id, "pca_center",
                                                                 "resid_post")  # fmt: skip
    assert manifest.layers == run.layers and manifest.weights_sha256 == run.weights_sha256
    styles = (manifest.first_label, manifest.second_label, manifest.n_pairs)
    assert styles == ("original", "edited", 8)
    assert manifest.code_version and manifest.created_at
    np.testing.assert_allclose(np.linalg.norm(vs.vectors, axis=1), 1.0, rtol=1e-6)
    assert (vs.sign_agreement >= 0.5).all() and (vs.typical_norm > 0).all()
    assert store.resolve_vector_set(manifest.set_id[:12]) == manifest.set_id


def _vectors_file(folder, **changes):
    """Rewrite a set's vectors.parquet with some columns replaced."""
    table = pq.read_table(folder / "vectors.parquet")
    for name, values in changes.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), values)
    pq.write_table(table, folder / "vectors.parquet")


def _unit_rows(table_vectors, scale):
    arrays = table_vectors.combine_chunks()
    values = arrays.flatten().to_numpy() * scale
    return pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), arrays.type.list_size)


DAMAGE = {
    "garbage manifest": (lambda f, m: (f / "manifest.json").write_bytes(b"\x00garbage{"),
                         "manifest.json is not"),
    "another set's id": (lambda f, m: (f / "manifest.json").write_text(
        json.dumps({**m, "set_id": "someone-else"})), "manifest says vector set id"),
    "unknown method": (lambda f, m: (f / "manifest.json").write_text(
        json.dumps({**m, "method": "magic"})), "unknown method 'magic'"),
    "no vectors file": (lambda f, m: (f / "vectors.parquet").unlink(),
                        "file vectors.parquet is missing"),
    "not parquet": (lambda f, m: (f / "vectors.parquet").write_bytes(b"PAR1 nope"),
                    "is not Parquet"),
    "huge file": (lambda f, m: (f / "vectors.parquet").write_bytes(b"0" * (2 << 20)),
                  "larger than its manifest allows"),
    "a symlink": (lambda f, m: ((f / "vectors.parquet").unlink(),
                                (f / "vectors.parquet").symlink_to("/etc/passwd")),
                  "cannot be read"),
    "other width": (lambda f, m: (f / "manifest.json").write_text(
        json.dumps({**m, "d_model": 16})), "columns of a vector set of width 16"),
    "not unit": (lambda f, m: _vectors_file(f, vector=_unit_rows(
        pq.read_table(f / "vectors.parquet").column("vector"), 3.0)), "not unit vectors"),
    "nan figure": (lambda f, m: _vectors_file(f, raw_norm=pa.array(
        [float("nan")] * len(m["layers"]))), "nan or inf"),
    "fewer layers": (lambda f, m: (f / "manifest.json").write_text(
        json.dumps({**m, "layers": m["layers"][:2]})), "holds layers"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_or_planted_set_is_listed_with_its_reason(store_copy, case):
    damage, reason = DAMAGE[case]
    folder, manifest = _plant(store_copy, "planted")
    damage(folder, manifest)
    store = open_store(store_copy["root"])
    (damaged,) = store.damaged_vector_sets(check_files=True)
    assert damaged.folder == "vector_sets/planted" and reason in damaged.reason
    assert str(store_copy["root"]) not in damaged.reason
    assert [m.set_id for m in store.vector_sets(check_files=True)] == [store_copy["set_id"]]
    store.vector_set(store_copy["set_id"])  # the healthy set is untouched
    with pytest.raises(StoreError) as error:
        store.vector_set("planted")
    assert str(store_copy["root"]) not in str(error.value)


def test_an_uncommitted_set_is_invisible_and_odd_names_are_refused(store_copy):
    folder, _ = _plant(store_copy, "half-written")
    (folder / "_COMMITTED").unlink()
    (store_copy["root"] / "vector_sets" / "stray-file").write_text("x")
    store = open_store(store_copy["root"])
    assert [m.set_id for m in store.vector_sets()] == [store_copy["set_id"]]
    assert store.damaged_vector_sets() == []
    for hostile in ("../runs", "", "a" * 500, "x\ny"):
        with pytest.raises(StoreError):
            store.vector_set(hostile)


# -- readouts --------------------------------------------------------------------------------------
def _readout_folder(store_copy):
    (folder,) = (store_copy["root"] / "readouts").iterdir()
    return folder


def test_the_readout_streams_the_models_unembedding(tiny_paired_store):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store = open_store(tiny_paired_store["root"])
    weights = store.manifest(tiny_paired_store["run_id"]).weights_sha256
    manifest = store.readout(weights)
    assert manifest.key == readout_key(weights) and manifest.norm_kind == "rms"
    model = AutoModelForCausalLM.from_pretrained(tiny_paired_store["model"])
    expected = model.get_output_embeddings().weight.detach().numpy()
    chunks = list(store.iter_unembedding(weights, batch_rows=100))
    assert len(chunks) == 3
    W = np.concatenate([c[1] for c in chunks])
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), np.arange(len(W)))
    np.testing.assert_allclose(W, expected.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(manifest.gain, model.model.norm.weight.detach().numpy(), rtol=1e-6)
    tokenizer = AutoTokenizer.from_pretrained(tiny_paired_store["model"])
    assert store.token_texts(weights, [0, 200]) == [tokenizer.decode([0]), tokenizer.decode([200])]
    assert store.token_texts(weights, [0])[0] == "<pad>"


READOUT_DAMAGE = {
    "key of other weights": (lambda f: _edit(f, weights_sha256="0" * 64), "not the key"),
    "fewer rows": (lambda f: _edit(f, vocab_size=10), "has 259 rows; the manifest says 10"),
    "a symlink": (lambda f: ((f / "unembedding.parquet").unlink(),
                             (f / "unembedding.parquet").symlink_to("/etc/passwd")),
                  "cannot be read"),
    "garbage": (lambda f: (f / "unembedding.parquet").write_bytes(b"garbage"), "not Parquet"),
}  # fmt: skip


def _edit(folder, **changes):
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **changes}))


@pytest.mark.parametrize("case", sorted(READOUT_DAMAGE))
def test_a_damaged_readout_raises_store_errors_and_says_why(store_copy, case):
    damage, reason = READOUT_DAMAGE[case]
    damage(_readout_folder(store_copy))
    store = open_store(store_copy["root"])
    weights = store.manifest(store_copy["run_id"]).weights_sha256
    with pytest.raises(StoreError, match=reason) as error:
        store.readout(weights)
        list(store.iter_unembedding(weights))
    assert str(store_copy["root"]) not in str(error.value)
    assert store.runs()  # the runs are untouched
    if case == "key of other weights":
        assert "not the key" in store.damaged_readouts()[0].reason


def test_a_readout_is_written_once_per_weights(store_copy):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from extraction.models import resolve
    from extraction.readout import save_readout

    folder = _readout_folder(store_copy)
    before = os.stat(folder / "unembedding.parquet").st_mtime_ns
    source = store_copy["model"]
    model = AutoModelForCausalLM.from_pretrained(source)
    written = save_readout(store_copy["root"], resolve(str(source)), model,
                           AutoTokenizer.from_pretrained(source))  # fmt: skip
    assert written is False and os.stat(folder / "unembedding.parquet").st_mtime_ns == before
    assert [p.name for p in (store_copy["root"] / "readouts").iterdir()] == [folder.name]


def test_a_snapshot_carries_the_runs_vector_sets_and_on_request_the_readouts(store_copy, tmp_path):
    from store.snapshot import snapshot

    folder, _ = _plant(store_copy, "planted")
    (folder / "vectors.parquet").write_bytes(b"garbage")
    result = snapshot(store_copy["root"], "all", tmp_path / "snap", layers="0,-1")
    assert result.vector_sets == (store_copy["set_id"],)  # the damaged one stays behind
    snap = open_store(tmp_path / "snap")
    copied = snap.vector_set(store_copy["set_id"])
    assert copied.manifest.model == store_copy["model"].name  # no server path
    assert snap.readouts() == []
    snapshot(store_copy["root"], "all", tmp_path / "with-words", readouts=True)
    (readout,) = open_store(tmp_path / "with-words").readouts()
    assert readout.weights_sha256 == copied.manifest.weights_sha256
    assert "/" not in readout.model
