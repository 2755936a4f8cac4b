"""What else than runs a store on object storage holds (moto's server, see tests/support/s3.py):
vector sets are written through `RemoteStore.put_entry` (each file whole, the marker last) and
read through the mirror, equal to a local store's; exports and snapshots read the mirror; SAEs,
feature runs, readouts and the defaults are one `error:` line before anything is written, and
objects planted in their folders are never read. Planted and damaged vector sets are listed as
damaged or ignored, never fatal.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from extraction.__main__ import main as extraction_main
from store import StoreError, open_store
from store.__main__ import main as store_main
from store.fs import RemoteStore
from tests.support.tiny import pair_rows, write_jsonl

pytestmark = pytest.mark.slow  # a real server, real runs


def _paired_run(model: Path, dataset: Path, store: str | Path, capsys) -> str:
    args = ["run", "--model", str(model), "--dataset", str(dataset), "--hooks", "resid_post",
            "--positions", "last", "--layers", "all", "--batch-size", "4", "--no-progress",
            "--no-readout", "--store", str(store)]  # fmt: skip
    assert extraction_main(args) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("s3-pairs") / "pairs.jsonl", pair_rows(6))


@pytest.fixture
def both(s3_server, s3_store, tiny_models, pairs, tmp_path, capsys) -> dict:
    """The same paired run and vector set in a local store and in an s3 store."""
    local = tmp_path / "local"
    stores = {"local": local, "s3": s3_store}
    found = {}
    for where, store in stores.items():
        run_id = _paired_run(tiny_models["llama"], pairs, store, capsys)
        assert extraction_main(["vectors", "--store", str(store), "--run", run_id,
                                "--set-id", "set-a"]) == 0  # fmt: skip
        assert capsys.readouterr().out.strip() == "set-a"
        found[where] = run_id
    return {"local": local, "s3": s3_store, "run_ids": found}


def test_a_vector_set_on_s3_is_put_whole_marker_last_and_reads_like_a_local_one(
    both, s3_server, tmp_path, capsys
):
    s3 = both["s3"]
    objects = s3_server.keys(s3)
    assert {k for k in objects if k.startswith("vector_sets/")} == {
        "vector_sets/set-a/vectors.parquet", "vector_sets/set-a/manifest.json",
        "vector_sets/set-a/_COMMITTED",
    }  # fmt: skip
    assert not Path("s3:").exists()  # the URI never became a local folder
    theirs, mine = open_store(s3).vector_set("set-a"), open_store(both["local"]).vector_set("set-a")
    np.testing.assert_array_equal(theirs.vectors, mine.vectors)
    assert theirs.manifest.run_id == both["run_ids"]["s3"]
    # The same settings again: the existing set, nothing new written.
    assert extraction_main(["vectors", "--store", s3, "--run", both["run_ids"]["s3"]]) == 0
    assert capsys.readouterr().out.strip() == "set-a"
    assert s3_server.keys(s3).keys() == objects.keys()
    # Its .pt and GGUF files read the set back through the mirror.
    for where, store in (("s3", s3), ("local", str(both["local"]))):
        assert extraction_main(["vectors", "--store", store, "--run", both["run_ids"][where],
                                "--pt", str(tmp_path / f"{where}.pt")]) == 0  # fmt: skip
    assert (tmp_path / "s3.pt").read_bytes() == (tmp_path / "local.pt").read_bytes()
    # Steering reads it there too, and answers as from the local store.
    capsys.readouterr()
    answers = {}
    for where, store in (("s3", s3), ("local", str(both["local"]))):
        argv = ["steer", "--store", store, "--vector-set", "set-a", "--prompt", "hello",
                "--max-new-tokens", "3", "--device", "cpu"]  # fmt: skip
        assert extraction_main(argv) == 0
        answers[where] = capsys.readouterr().out
    assert answers["s3"] == answers["local"] and "--- baseline" in answers["s3"]
    # An id once used (committed, or a killed attempt's objects) is not written over.
    with pytest.raises(StoreError, match="already exists"):
        RemoteStore(s3).put_entry("vector_sets", "set-a", {"manifest.json": b"{}"}, "x")
    s3_server.put(s3, "vector_sets/killed/vectors.parquet", b"half")  # no marker: invisible
    with pytest.raises(StoreError, match="already exists"):
        RemoteStore(s3).put_entry("vector_sets", "killed", {"manifest.json": b"{}"}, "x")
    store = open_store(s3)
    assert [m.set_id for m in store.vector_sets()] == ["set-a"]
    assert store.damaged_vector_sets() == []


def test_export_and_snapshot_of_an_s3_store_equal_a_local_stores(both, tmp_path):
    for where in ("s3", "local"):
        store = str(both[where])
        assert store_main(["export", "--store", store, "--run", both["run_ids"][where],
                           "--hook", "resid_post", "--layer", "-1", "--label", "pair_id,side",
                           "--out", str(tmp_path / f"{where}.npy")]) == 0  # fmt: skip
        assert store_main(["snapshot", "--store", store, "--runs", "all", "--layers", "0,-1",
                           "--out", str(tmp_path / f"snap-{where}")]) == 0  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "s3.npy"), np.load(tmp_path / "local.npy"))
    snapshot = open_store(tmp_path / "snap-s3")
    assert [m.set_id for m in snapshot.vector_sets()] == ["set-a"]  # the set came along
    np.testing.assert_array_equal(
        snapshot.vector_set("set-a").vectors,
        open_store(tmp_path / "snap-local").vector_set("set-a").vectors,
    )


def test_planted_and_damaged_vector_sets_are_listed_or_ignored(both, s3_server):
    s3 = both["s3"]
    good = s3_server.keys(s3)
    plant = lambda rel, data: s3_server.put(s3, rel, data)  # noqa: E731
    plant("vector_sets/broken/manifest.json", b"{ not json")
    plant("vector_sets/broken/_COMMITTED", b"x")
    for rel in ("vectors.parquet", "manifest.json", "_COMMITTED"):  # a copy, its vectors cut
        data = good[f"vector_sets/set-a/{rel}"].replace(b'"set-a"', b'"cut-short"')
        plant(f"vector_sets/cut-short/{rel}", data[:60] if rel == "vectors.parquet" else data)
    plant("vector_sets/set-a/../../escape.parquet", b"planted")
    plant("vector_sets/set-a/.hidden", b"planted")
    plant("vector_sets/set-a/extra.parquet", b"planted")  # not a file a set has
    plant("vector_sets/not an id!/_COMMITTED", b"x")
    store = open_store(s3)
    damaged = {d.folder: d.reason for d in store.damaged_vector_sets(check_files=True)}
    assert "manifest" in damaged.pop("vector_sets/broken")
    assert "is not Parquet (or is cut short)" in damaged.pop("vector_sets/cut-short")
    assert damaged == {}
    assert [m.set_id for m in store.vector_sets(check_files=True)] == ["set-a"]
    mirror = store.root
    assert not list(mirror.rglob("escape.parquet")) and not list(mirror.rglob(".hidden"))
    assert not list(mirror.rglob("extra.parquet"))
    # A set deleted on the server disappears from the mirror at the next listing.
    for rel in ("manifest.json", "_COMMITTED"):
        s3_server.delete(s3, f"vector_sets/broken/{rel}")
    store.remote.mirror(force=True)
    assert "vector_sets/broken" not in {d.folder for d in store.damaged_vector_sets()}


def test_saes_features_and_readouts_planted_on_s3_are_never_read(s3_server, s3_store, capsys):
    open_store(s3_store, create=True, writable=True)
    readout = f"readouts/{'a' * 64}"
    planted = ["saes/sae-x/manifest.json", "saes/sae-x/_COMMITTED", "saes/sae-x/cfg.json",
               "features/feat-x/manifest.json", "features/feat-x/_COMMITTED",
               f"{readout}/manifest.json", f"{readout}/_COMMITTED"]  # fmt: skip
    for rel in planted:
        s3_server.put(s3_store, rel, b"{ planted")
    store = open_store(s3_store)
    assert store.run_ids() == [] and store.vector_sets() == []  # the mirror is up to date
    assert store.saes.list() == [] and store.saes.damaged() == []
    assert store.features.list() == [] and store.features.damaged() == []
    assert not {p.name for p in store.root.iterdir()} & {"saes", "features", "readouts"}
    for kind in ("saes", "features"):
        assert extraction_main(["list", "--store", s3_store, "--kind", kind]) == 0
        assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("argv", "noun"),
    [
        (["train-sae", "--run", "r", "--layer", "1"], "SAEs"),
        (["sae", "--model", "m", "--dataset", "d.jsonl", "--sae", "s"], "SAE feature runs"),
        (["readout", "--model", "smollm2-135m"], "model readouts"),
        (["defaults", "--models", "smollm2-135m"], "the default runs"),
    ],
)
def test_local_only_kinds_are_one_error_line_before_anything_is_written(
    s3_server, s3_store, tmp_path, monkeypatch, capsys, argv, noun
):
    monkeypatch.chdir(tmp_path)  # a URI read as a path would make ./s3:/...
    assert extraction_main([*argv, "--store", s3_store]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {noun}") and err.count("\n") == 1, err
    assert "not supported on object storage" in err and "Traceback" not in err
    assert RemoteStore(s3_store).list("") == [] and os.listdir(tmp_path) == []  # nothing


def test_the_job_layer_refuses_a_store_on_object_storage(s3_store):
    from jobs.errors import JobError
    from jobs.registry import launch, list_jobs
    from settings.run import RunSettings

    with pytest.raises(JobError, match="object storage"):
        launch(s3_store, RunSettings(model="m", dataset="d"), read_only=False)
    with pytest.raises(JobError, match="object storage"):
        list_jobs(s3_store)
