"""The store on synthetic runs: round trip, visibility only after commit, the query layer's
parameters, row cap and errors, part files sized and sorted for DuckDB, manifests validated
field by field, store paths that are files or cannot be written, and no DuckDB object left alive
at interpreter exit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import RunManifest, RunWriter, StoreError, open_store

D = 8
REPO = Path(__file__).resolve().parents[2]


def _manifest(run_id: str, n: int, **overrides) -> RunManifest:
    fields = dict(
        run_id=run_id, name=run_id, model="synthetic", model_source="none",
        architecture="llama", weights_sha256="0" * 64, n_layers=3, d_model=D, backend="hf",
        weight_processing="none", hooks=("resid_post",), layers=(0, 1, 2),
        positions=("last", "mean"), dtype="float16", dataset_name="synthetic",
        dataset_sha256="1" * 64, n_samples=n, created_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    fields.update(overrides)
    return RunManifest(**fields)


def _samples(run_id: str, n: int) -> pa.Table:
    return pa.table({
        "sample_idx": pa.array(np.arange(n, dtype=np.int32)),
        "run_id": [run_id] * n, "id": [f"s{i}" for i in range(n)], "text": ["t"] * n,
        "label": ["a" if i % 2 else "b" for i in range(n)],
    })  # fmt: skip


def write_run(root, run_id="r1", n=10, seed=0, commit=True, flush_bytes=1 << 20):
    rng = np.random.default_rng(seed)
    data = {}
    writer = RunWriter.create(root, run_id, {"fingerprint": run_id}, d_model=D, dtype="float16",
                              flush_bytes=flush_bytes)  # fmt: skip
    writer.write_samples(_samples(run_id, n))
    for start in range(0, n, 4):
        idx = np.arange(start, min(start + 4, n))
        for layer in range(3):
            for position in ("last", "mean"):
                X = rng.normal(size=(len(idx), D)).astype(np.float32) * 100
                data.setdefault((layer, position), []).append(X)
                writer.add("resid_post", position, layer, idx, np.full(len(idx), -1), X)
        writer.end_batch(idx.tolist())
    if commit:
        writer.commit(_manifest(run_id, n))
    else:
        writer.flush()
        writer.close()
    return {k: np.concatenate(v) for k, v in data.items()}


def test_round_trip_is_exact_at_float16(tmp_path):
    data = write_run(tmp_path, n=10)
    store = open_store(tmp_path)
    X, samples = store.vectors("r1", "resid_post", 1, "mean")
    np.testing.assert_array_equal(X, data[(1, "mean")].astype(np.float16).astype(np.float32))
    assert list(samples["id"]) == [f"s{i}" for i in range(10)]
    stack, _, layers = store.layer_vectors("r1", "resid_post", "last")
    assert stack.shape == (3, 10, D) and layers == [0, 1, 2]
    np.testing.assert_array_equal(stack[2], data[(2, "last")].astype(np.float16))
    chunks = list(store.iter_vectors("r1", "resid_post", 0, "last", batch_rows=3))
    assert len(chunks) >= 2 and all(len(i) == len(X) <= 3 for i, X in chunks)  # streamed
    order = np.concatenate([i for i, _ in chunks])
    assert sorted(order) == list(range(10))  # every sample once, each with its own vector
    streamed = np.concatenate([X for _, X in chunks])
    expected = data[(0, "last")].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(streamed, expected[order])


def test_runs_are_listed_newest_first(tmp_path):
    for run_id, created in (("b-old", "2026-01-01T00:00:00+00:00"),
                            ("a-new", "2026-03-01T00:00:00+00:00"),
                            ("c-mid", "2026-02-01T00:00:00+00:00")):  # fmt: skip
        write_run(tmp_path, run_id)
        manifest = json.loads((tmp_path / "runs" / run_id / "manifest.json").read_text())
        manifest["created_at"] = created
        (tmp_path / "runs" / run_id / "manifest.json").write_text(json.dumps(manifest))
    assert [m.run_id for m in open_store(tmp_path).runs()] == ["a-new", "c-mid", "b-old"]


def test_uncommitted_runs_are_invisible(tmp_path):
    write_run(tmp_path, "done")
    write_run(tmp_path, "half", commit=False)
    store = open_store(tmp_path)
    assert [m.run_id for m in store.runs()] == ["done"]
    assert store.query("SELECT DISTINCT run_id FROM vectors").frame["run_id"].tolist() == ["done"]
    with pytest.raises(StoreError, match="no committed run 'half'"):
        store.vectors("half", "resid_post", 0)


def test_new_commits_appear_without_reopening(tmp_path):
    write_run(tmp_path, "one")
    store = open_store(tmp_path)
    assert store.query("SELECT count(*) AS n FROM runs").frame["n"][0] == 1
    write_run(tmp_path, "two")
    assert store.query("SELECT count(*) AS n FROM runs").frame["n"][0] == 2


def test_query_takes_parameters_caps_rows_and_raises_store_error(tmp_path):
    write_run(tmp_path, n=10)
    store = open_store(tmp_path)
    result = store.query("SELECT * FROM samples WHERE label = ?", ["a"], max_rows=3)
    assert len(result.frame) == 3 and result.truncated
    full = store.query("SELECT * FROM samples WHERE label = ?", ["a"])
    assert len(full.frame) == 5 and not full.truncated
    hostile = "a' OR '1'='1"
    assert len(store.query("SELECT * FROM samples WHERE label = ?", [hostile]).frame) == 0
    with pytest.raises(StoreError, match="query failed"):
        store.query("SELECT nope FROM samples")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("r1", "mlp_out", 0, "last"), "has no hook 'mlp_out'"),
        (("r1", "resid_post", 7, "last"), "has no layer 7"),
        (("r1", "resid_post", 0, "all"), "use token_vectors"),
        (("zz", "resid_post", 0, "last"), "no committed run 'zz'"),
        (("../x", "resid_post", 0, "last"), "is not valid"),
    ],
)
def test_missing_sites_raise_store_error(tmp_path, args, message):
    write_run(tmp_path)
    with pytest.raises(StoreError, match=message):
        open_store(tmp_path).vectors(*args)


def test_parts_are_zstd_sorted_and_flushed_by_size(tmp_path):
    write_run(tmp_path, n=40, flush_bytes=2000)
    parts = sorted((tmp_path / "runs" / "r1" / "vectors").glob("part-*.parquet"))
    assert len(parts) > 1  # the buffer was flushed more than once
    meta = pq.ParquetFile(parts[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(parts[0])
    keys = list(zip(table["hook"].to_pylist(), table["position"].to_pylist(),
                    table["layer"].to_pylist(), strict=True))  # fmt: skip
    assert keys == sorted(keys)
    vector_type = table.schema.field("vector").type
    assert vector_type.list_size == D and vector_type.value_type == pa.float16()


def test_open_store_needs_an_existing_folder(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing")
    assert open_store(tmp_path / "new", create=True).runs() == []


def test_manifest_validates_and_round_trips():
    manifest = _manifest("r1", 3)
    assert RunManifest.from_json(manifest.to_json()) == manifest
    with pytest.raises(ValueError, match="layer 5 out of range 0..2"):
        _manifest("r1", 3, layers=(0, 5))
    with pytest.raises(ValueError, match="unknown hook 'resid_mid'"):
        _manifest("r1", 3, hooks=("resid_mid",))


def test_manifest_from_dict_checks_every_field_and_keeps_unknown_keys():
    data = json.loads(_manifest("r1", 3).to_json())
    data["future_field"] = {"x": 1}
    manifest = RunManifest.from_dict(data)
    assert manifest.extra == {"future_field": {"x": 1}}
    assert manifest.hooks == ("resid_post",) and manifest.layers == (0, 1, 2)
    for field, value, message in [
        ("n_layers", "30", "n_layers '30' must be a whole number"),
        ("d_model", 0, "d_model 0 must be a whole number"),
        ("layers", "abc", "layers 'abc' must be a list"),
        ("hooks", 5, "hooks 5 must be a list"),
        ("backend", "torch", "unknown backend 'torch'"),
        ("include_first_token_in_mean", "no", "include_first_token_in_mean 'no'"),
        ("chat_template", 3, "chat_template 3 must be text"),
        ("versions", {"duckdb": 2}, "versions['duckdb'] 2 must be text"),
        ("run_id", "../x", "is not valid"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            RunManifest.from_dict({**data, field: value})
    for bad in (None, [], "text", 5):
        with pytest.raises(ValueError, match="not a JSON object"):
            RunManifest.from_dict(bad)
    with pytest.raises(ValueError, match="nested too deeply"):
        RunManifest.from_json("[" * 100_000)


def test_manifest_layers_are_sorted_and_unique():
    assert _manifest("r1", 3, layers=[2, 0]).layers == (0, 2)
    with pytest.raises(ValueError, match="name one layer twice"):
        _manifest("r1", 3, layers=(1, 1))


@pytest.mark.parametrize(
    ("path", "create", "message"),
    [
        ("/etc/passwd", False, "store '/etc/passwd' is not a directory"),
        ("/etc/passwd", True, "store '/etc/passwd' is not a directory"),
        ("/etc/passwd/sub", True, "cannot create store '/etc/passwd/sub': Not a directory"),
        ("/etc/passwd/sub", False, "store '/etc/passwd/sub' does not exist"),
        ("/proc/no-such/store", True, "cannot create store '/proc/no-such/store'"),
        ("bad\0path", True, "is not a usable path"),
    ],
)
def test_open_store_refuses_files_and_unwritable_places_with_store_error(path, create, message):
    with pytest.raises(StoreError, match=re.escape(message)):
        open_store(path, create=create)


def test_open_store_for_writing_proves_it_can_write(tmp_path):
    store = open_store(tmp_path / "new", create=True, writable=True)
    assert list((store.root / "runs").iterdir()) == []  # the probe file is gone
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "runs").write_text("a file where runs/ belongs")
    with pytest.raises(StoreError, match="its 'runs' is not a folder"):
        open_store(tmp_path / "odd", create=True)
    if os.geteuid() == 0:  # root writes through permission bits: use a read-only file system
        target = Path("/sys/kernel")
        with pytest.raises(StoreError, match="cannot (create|write to) store '/sys/kernel'"):
            open_store(target, create=True, writable=True)
    else:
        locked = tmp_path / "locked"
        (locked / "runs").mkdir(parents=True)
        (locked / "runs").chmod(0o500)
        with pytest.raises(StoreError, match="cannot write to store"):
            open_store(locked, writable=True)


def test_run_writer_in_an_unwritable_store_raises_store_error(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write run 'r1' into store"):
        RunWriter.create(tmp_path, "r1", {}, d_model=D, dtype="float16")


def test_close_and_context_manager_drop_the_connection_and_reads_reopen(tmp_path):
    write_run(tmp_path, n=4)
    with open_store(tmp_path) as store:
        assert store.query("SELECT count(*) AS n FROM samples").frame["n"][0] == 4
        assert store._sql.is_open
    assert not store._sql.is_open
    assert store.query("SELECT count(*) AS n FROM runs").frame["n"][0] == 1  # reopens lazily
    store.close()
    store.close()  # twice is fine
    assert not store._sql.is_open


LEAK_SCRIPT = """
import sys, threading, time
from store import open_store
store = open_store(sys.argv[1])
store.query("SELECT count(*) FROM vectors")
store.vectors("r1", "resid_post", 0, "last")
def keep_running():  # a server thread still alive at exit, as under streamlit or tqdm
    time.sleep(60)
threading.Thread(target=keep_running, daemon=True).start()
print("done")
"""


@pytest.mark.slow
def test_no_duckdb_objects_leak_at_interpreter_exit(tmp_path):
    write_run(tmp_path, n=4)
    result = subprocess.run(
        [sys.executable, "-c", LEAK_SCRIPT, str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr
    assert "leaked" not in result.stderr, result.stderr[:2000]
