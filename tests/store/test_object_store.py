"""Stores on object storage (store.fs), against a real S3-compatible server (moto, one per session):
a run written into `s3://...` commits with its marker last and reads back equal to a local run; a
SIGKILLed run leaves nothing visible and `--resume` completes it; a second writer is detected;
planted, damaged and hostile objects and URIs get one clear message; nothing secret is stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from extraction.__main__ import main as extraction_main
from store import RunManifest, StoreError, open_store
from store.fs import RemoteStore
from store.writer import RunWriter
from tests.jobs.helpers import wait_for
from tests.support.s3 import ACCESS_KEY, SECRET_KEY
from tests.support.tiny import emotion_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # a real server, real runs


def _run_args(model: Path, dataset: Path, store: str | Path) -> list[str]:
    return ["run", "--model", str(model), "--dataset", str(dataset), "--hooks",
            "resid_post,mlp_out", "--positions", "last,mean", "--batch-size", "2",
            "--store", str(store), "--no-progress"]  # fmt: skip


def _vectors(store, run_id: str) -> dict:
    manifest = store.manifest(run_id)
    found = {}
    for hook in manifest.hooks:
        for position in manifest.positions:
            for layer in manifest.layers:
                found[hook, position, layer] = store.vectors(run_id, hook, layer, position)[0]
    return found


def _assert_same_vectors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


@pytest.fixture(scope="module")
def emotions(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("s3-data") / "emo.jsonl", emotion_rows(2))


@pytest.fixture(scope="module")
def local_run(tiny_models, emotions, tmp_path_factory) -> dict:
    """The same run into a local store: what an object-store run must equal."""
    root = tmp_path_factory.mktemp("s3-local") / "store"
    assert extraction_main(_run_args(tiny_models["llama"], emotions, root)) == 0
    store = open_store(root)
    (run_id,) = store.run_ids()
    return {"root": root, "run_id": run_id, "vectors": _vectors(store, run_id)}


def test_a_run_into_s3_commits_and_reads_back_like_a_local_run(
    s3_server, s3_store, tiny_models, emotions, local_run, capsys
):
    assert extraction_main(_run_args(tiny_models["llama"], emotions, s3_store)) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    objects = s3_server.keys(s3_store)
    run = f"runs/{run_id}/"
    assert {f"{run}_COMMITTED", f"{run}manifest.json", f"{run}config.json",
            f"{run}samples.parquet", f"{run}summaries/summary.json"} <= set(objects)  # fmt: skip
    assert any(k.startswith(f"{run}vectors/part-") for k in objects)
    assert not [k for k in objects if "/." in k]  # no writer token, lock or temporary name
    # Nothing secret anywhere in the store (manifests, configs, parts).
    for key, data in objects.items():
        assert ACCESS_KEY.encode() not in data and SECRET_KEY.encode() not in data, key
    store = open_store(s3_store)
    assert store.run_ids() == [run_id] and store.location == s3_store
    assert store.summary_status(run_id) is None  # summaries written at commit, up to date
    _assert_same_vectors(_vectors(store, run_id), local_run["vectors"])
    assert store.query("SELECT count(*) AS n FROM samples").frame["n"][0] == 6
    # The staging folder is gone; a second listing of an unchanged store downloads nothing.
    assert not list(Path(os.environ["ACTX_STORE_CACHE"]).glob(f"*/staging/runs/{run_id}"))
    assert extraction_main(["list", "--store", s3_store]) == 0
    assert capsys.readouterr().out.split("\t")[0] == run_id

    # A snapshot of the object store is a local store with the same vectors.
    from store.__main__ import main as store_main

    out = Path(local_run["root"]).parent / "snapshot-of-s3"
    assert store_main(["snapshot", "--store", s3_store, "--runs", "all", "--out", str(out)]) == 0
    _assert_same_vectors(_vectors(open_store(out), run_id), local_run["vectors"])
    snapshot = open_store(out).manifest(run_id).extra["snapshot"]
    assert snapshot["source_store"] == s3_store.rsplit("/", 1)[-1]  # no cache path


def test_sigkill_leaves_nothing_visible_and_resume_equals_a_local_run(
    s3_server, s3_store, tiny_models, tmp_path
):
    big = write_jsonl(tmp_path / "big.jsonl", emotion_rows(per_label=30))
    args = _run_args(tiny_models["llama"], big, s3_store)
    proc = subprocess.Popen([sys.executable, "-m", "extraction", *args, "--flush-mb", "0.001"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    remote = RemoteStore(s3_store)

    def parts() -> int:
        return sum(rel.startswith("runs/") and "/vectors/part-" in rel
                   for rel in (f.rel for f in remote.list("runs")))  # fmt: skip

    try:
        wait_for(
            lambda: parts() >= 2 or proc.poll() is not None, timeout=120, what="parts on the server"
        )
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    store = open_store(s3_store)
    assert store.runs() == [] and store.damaged_runs() == []  # parts, no marker: invisible

    assert extraction_main([*args, "--resume"]) == 0
    # An open store looks again at most every SYNC_INTERVAL_S; a new one looks now.
    store = open_store(s3_store)
    (manifest,) = store.runs()
    assert 0 < manifest.row_counts["resumed_samples"] < 90
    local = tmp_path / "local"
    assert extraction_main(_run_args(tiny_models["llama"], big, local)) == 0
    (local_id,) = open_store(local).run_ids()
    _assert_same_vectors(_vectors(store, manifest.run_id), _vectors(open_store(local), local_id))
    counts = store.query(
        "SELECT count(*) AS n, count(DISTINCT (hook, position, layer, sample_idx)) AS d "
        "FROM vectors"
    ).frame.iloc[0]
    assert counts["n"] == counts["d"] == 90 * 2 * 2 * len(manifest.layers)


def _writer(root: str, run_id: str, **kwargs) -> RunWriter:
    return RunWriter.create(root, run_id, {"fingerprint": "x"}, d_model=4, dtype="float32",
                            summaries=False, **kwargs)  # fmt: skip


def _manifest(run_id: str) -> RunManifest:
    return RunManifest(
        run_id=run_id, name=run_id, model="synthetic", model_source="synthetic",
        architecture="synthetic", weights_sha256="0" * 64, n_layers=1, d_model=4, backend="hf",
        weight_processing="none", hooks=("resid_post",), layers=(0,), positions=("last",),
        dtype="float32", dataset_name="synth", dataset_sha256="0" * 64, n_samples=2,
        created_at="2026-12-02T18:00:00+00:00",
    )  # fmt: skip


def test_a_second_writer_of_the_same_run_is_refused_and_nothing_commits(s3_server, s3_store):
    first = _writer(s3_store, "twice")
    with pytest.raises(StoreError, match="already exists"):
        _writer(s3_store, "twice")
    second = RunWriter.resume(s3_store, "twice", d_model=4, dtype="float32", summaries=False)
    for writer in (first, second):
        writer.add("resid_post", "last", 0, np.arange(2), np.full(2, -1), np.ones((2, 4)))
        writer.end_batch([0, 1])
    with pytest.raises(StoreError, match="taken over by another writer"):
        first.commit(_manifest("twice"))
    assert open_store(s3_store).runs() == []
    second.commit(_manifest("twice"))
    assert open_store(s3_store).run_ids() == ["twice"]


@pytest.mark.parametrize(
    ("uri", "message", "secret"),
    [
        ("s3://AKIAX:hunter2@bucket/x", "credentials in the environment", "hunter2"),
        ("s3://bucket/x?secret_key=hunter2", "takes no query", "hunter2"),
        ("s3://bucket/../etc", "every part of the path must be a name", None),
        ("s3://", "names no bucket", None),
        ("s3://no-such-bucket-actx/x", "does not exist", None),
        ("nosuch://bucket/x", "cannot open store", None),
    ],
)
def test_a_hostile_or_wrong_store_uri_is_one_clear_error(s3_server, capsys, uri, message, secret):
    with pytest.raises(StoreError, match=message) as caught:
        open_store(uri)
    if secret:
        assert secret not in str(caught.value)
    assert extraction_main(["list", "--store", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err
    assert secret is None or secret not in err


def test_planted_and_damaged_objects_are_listed_or_ignored_never_fatal(
    s3_server, s3_store, tiny_models, emotions, local_run, capsys
):
    assert extraction_main(_run_args(tiny_models["llama"], emotions, s3_store)) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    objects = s3_server.keys(s3_store)
    plant = lambda rel, data: s3_server.put(s3_store, rel, data)  # noqa: E731
    # A committed-looking run with a broken manifest: listed as damaged, with its reason.
    plant("runs/broken/_COMMITTED", b"x")
    plant("runs/broken/manifest.json", b"{ not json")
    # A copy of the run whose vectors are not Parquet: damaged when its files are checked.
    for rel, data in objects.items():
        if rel.startswith(f"runs/{run_id}/"):
            copy = rel.replace(run_id, "cut-short", 1)
            if rel.endswith("manifest.json"):
                data = data.replace(run_id.encode(), b"cut-short")
            plant(copy, data[:40] if "/vectors/" in rel else data)
    # Keys that must never become local paths or be read: a dot-dot name, a hidden file, a run
    # id that is not one, an object beside the runs, an uncommitted run.
    plant(f"runs/{run_id}/vectors/../../../escape.parquet", b"planted")
    plant(f"runs/{run_id}/.hidden", b"planted")
    plant("runs/not a run id!/_COMMITTED", b"x")
    plant("runs/half/vectors/part-00000.parquet", objects[next(k for k in objects
                                                               if "/vectors/" in k)])  # fmt: skip
    store = open_store(s3_store)
    damaged = {d.folder: d.reason for d in store.damaged_runs(check_files=True)}
    assert "manifest" in damaged.pop("runs/broken")
    assert "is not Parquet (or is cut short)" in damaged.pop("runs/cut-short")
    assert damaged == {}
    assert [m.run_id for m in store.runs(check_files=True)] == [run_id]
    _assert_same_vectors(_vectors(store, run_id), local_run["vectors"])
    mirror = store.root
    assert not list(mirror.rglob("escape.parquet")) and not list(mirror.rglob(".hidden"))
    assert not (mirror.parent / "escape.parquet").exists()
    # A run deleted on the server disappears from the next listing.
    for rel in s3_server.keys(s3_store):
        if rel.startswith("runs/broken/"):
            s3_server.delete(s3_store, rel)
    store.remote.mirror(force=True)
    assert "runs/broken" not in {d.folder for d in store.damaged_runs()}


def test_clean_and_summarize_refuse_on_an_object_store(s3_server, s3_store, capsys):
    open_store(s3_store, create=True, writable=True)
    assert extraction_main(["clean", "--store", s3_store]) == 2
    assert "no locks" in capsys.readouterr().err
    from store.__main__ import main as store_main

    assert store_main(["summarize", "--store", s3_store]) == 2
    assert "object store keeps" in capsys.readouterr().err


def _part_bytes(sample_idx: np.ndarray, d_model: int = 4) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from store.writer import vector_schema

    n = len(sample_idx)
    vectors = np.arange(n * d_model, dtype=np.float32).reshape(n, d_model) + sample_idx[:, None]
    table = pa.table(
        {"hook": ["resid_post"] * n, "position": ["last"] * n, "layer": np.zeros(n, np.int16),
         "sample_idx": sample_idx.astype(np.int32), "token_idx": np.full(n, -1, np.int32),
         "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), d_model)},
        schema=vector_schema(d_model, "float32"),
    )  # fmt: skip
    out = pa.BufferOutputStream()
    pq.write_table(table, out)
    return out.getvalue().to_pybytes()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_parts_from_other_processes_commit_through_resume(s3_server, s3_store, tmp_path, where):
    """The flow for runs split across workers: parts put by each, then one driver commits."""
    import pyarrow as pa

    from store.fs import put_run_file

    root = s3_store if where == "s3" else str(tmp_path / "store")
    _writer(root, "split").close()  # the driver makes the run (config.json) and lets go
    for worker, samples in enumerate(([0, 2], [1, 3])):
        put_run_file(root, "split", f"vectors/part-{worker:02d}000000.parquet",
                     _part_bytes(np.asarray(samples)))  # fmt: skip
    with pytest.raises(ValueError, match="plain name"):
        put_run_file(root, "split", "../escape.parquet", b"x")
    driver = RunWriter.resume(root, "split", d_model=4, dtype="float32")
    assert driver.done_samples == {0, 1, 2, 3}
    driver.write_samples(pa.table({"sample_idx": pa.array(range(4), pa.int32()),
                                   "label": ["a", "b", "a", "b"]}))  # fmt: skip
    driver.commit(replace(_manifest("split"), n_samples=4))
    store = open_store(root)
    X, samples = store.vectors("split", "resid_post", 0, "last")
    np.testing.assert_array_equal(X[:, 0], [0, 1, 6, 7])  # row r of a part: 4r + its sample
    assert store.summary_status("split") is None
