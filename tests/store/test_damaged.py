"""Damaged runs are listed, never fatal: each kind of broken manifest or folder next to a healthy
run, and damage found while reading Parquet files, which raises StoreError naming the run and the
file relative to the run (no absolute path, no bare pyarrow/DuckDB/numpy exception)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import DamagedRun, StoreError, open_store
from store.layout import MANIFEST_MAX_BYTES
from tests.support.synthetic import label_rows, write_run

GOOD_ROWS = 2 * 4  # see conftest: two labels, four samples each


def _assert_good_still_works(store, *also_listed: str) -> None:
    """Every read of the healthy run works in the same Store that met the damage.

    `also_listed`: runs whose manifests are fine (so listed) but whose files are damaged.
    """
    assert sorted(m.run_id for m in store.runs()) == sorted(["good", *also_listed])
    assert store.run_ids() == sorted(["good", *also_listed])
    X, samples = store.vectors("good", "resid_post", 1, "mean")
    assert X.shape == (GOOD_ROWS, 8) and len(samples) == GOOD_ROWS
    stack, _, layers = store.layer_vectors("good", "resid_post", "last")
    assert stack.shape == (3, GOOD_ROWS, 8) and layers == [0, 1, 2]
    assert sum(len(i) for i, _ in store.iter_vectors("good", "resid_post", 2, "last")) == GOOD_ROWS
    tokens_X, tokens, _ = store.token_vectors("good", "resid_post", 0)
    assert tokens_X.shape == (3, len(tokens), 8)
    count = "SELECT count(*) AS n FROM samples WHERE run_id = ?"
    assert store.query(count, ["good"]).frame["n"][0] == GOOD_ROWS
    assert "good" in store.query("SELECT run_id FROM runs").frame["run_id"].tolist()
    assert store.resolve_run_id("goo") == "good"


def _assert_one_line_relative(message: str, root) -> None:
    assert "\n" not in message and str(root) not in message and "/tmp" not in message, message


def _big_manifest(damage, name):
    data = damage.manifest(name)
    data["extra"] = {"padding": "x" * (MANIFEST_MAX_BYTES + 10)}
    return json.dumps(data).encode()


def _deep(damage, name):
    return b"[" * 100_000 + b"]" * 100_000


MANIFEST_CASES = {
    "garbage": (lambda d, n: b"this is {not json", "manifest.json is not JSON"),
    "empty": (lambda d, n: b"", "manifest.json is empty"),
    "blank": (lambda d, n: b"  \n ", "manifest.json is empty"),
    "null": (lambda d, n: b"null", "not a JSON object (it is null)"),
    "list": (lambda d, n: b"[]", "not a JSON object (it is list)"),
    "deep": (_deep, "nested too deeply"),
    "latin1": (lambda d, n: b'{"run_id": "\xff"}', "not UTF-8"),
    "huge-int": (lambda d, n: b'{"n_layers": ' + b"9" * 5000 + b"}", "cannot be parsed"),
    "too-big": (_big_manifest, "over the 4 MiB limit"),
}

FIELD_CASES = {
    "n_layers-text": ({"n_layers": "30"}, "n_layers '30' must be a whole number"),
    "n_layers-bool": ({"n_layers": True}, "n_layers True must be a whole number"),
    "n_layers-float": ({"n_layers": 3.0}, "n_layers 3.0 must be a whole number"),
    "d_model-huge": ({"d_model": 10**30}, "d_model 1000000000000000000000000000000"),
    "layers-text": ({"layers": "abc"}, "layers 'abc' must be a list"),
    "layers-mixed": ({"layers": [0, "1"]}, "layer '1' in layers must be a whole number"),
    "layers-range": ({"layers": [0, 7]}, "layer 7 out of range 0..2"),
    "hooks-number": ({"hooks": 5}, "hooks 5 must be a list"),
    "hooks-unknown": ({"hooks": ["resid_mid"]}, "unknown hook 'resid_mid'"),
    "positions-repeat": ({"positions": ["last", "last"]}, "name one twice"),
    "dtype": ({"dtype": "int8"}, "unknown dtype 'int8'"),
    "created_at": ({"created_at": 5}, "created_at 5 must be text"),
    "timings": ({"timings": {"load_s": "fast"}}, "timings['load_s'] 'fast' must be a finite"),
    "row_counts": ({"row_counts": [1, 2]}, "row_counts [1, 2] must be an object"),
    "extra": ({"extra": "x", "unknown_key": 1}, "extra 'x' must be an object"),
    "model-control": ({"model": "a\nb"}, "has control characters"),
    "n_samples-negative": ({"n_samples": -1}, "n_samples -1 must be a whole number"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_unreadable_manifests_are_listed_not_fatal(damage, case):
    make, reason = MANIFEST_CASES[case]
    name = f"bad-{case}"
    damage.copy(name)
    damage.write_manifest(name, make(damage, name))
    store = open_store(damage.root)
    (damaged,) = store.damaged_runs()
    assert damaged.folder == f"runs/{name}" and reason in damaged.reason, damaged
    _assert_one_line_relative(damaged.reason, damage.root)
    assert len(damaged.reason) <= 300
    with pytest.raises(StoreError, match=f"run '{name}' is damaged"):
        store.vectors(name, "resid_post", 0)
    _assert_good_still_works(store)


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_manifest_fields_of_the_wrong_type_are_named(damage, case):
    changes, reason = FIELD_CASES[case]
    name = f"bad-{case}"
    damage.copy(name)
    damage.edit_manifest(name, **changes)
    store = open_store(damage.root)
    (damaged,) = store.damaged_runs()
    assert damaged.folder == f"runs/{name}"
    assert damaged.reason.startswith("manifest.json: ") and reason in damaged.reason, damaged
    _assert_good_still_works(store)


def test_one_listing_gives_the_healthy_ids_and_the_damaged_runs(damage):
    damage.copy("bad-listed")
    damage.write_manifest("bad-listed", b"{not json")
    store = open_store(damage.root)
    run_ids, damaged = store.listing()
    assert run_ids == store.run_ids() and run_ids and "bad-listed" not in run_ids
    assert damaged == store.damaged_runs() and [d.folder for d in damaged] == ["runs/bad-listed"]


def test_missing_field_is_named(damage):
    damage.copy("no-width")
    data = damage.manifest("no-width")
    del data["d_model"]
    damage.write_manifest("no-width", data)
    (damaged,) = open_store(damage.root).damaged_runs()
    assert damaged.reason == "manifest.json has no 'd_model'"


def test_marker_without_manifest_and_manifest_that_is_a_folder(damage):
    (damage.copy("no-manifest") / "manifest.json").unlink()
    folder = damage.copy("folder-manifest") / "manifest.json"
    folder.unlink()
    folder.mkdir()
    fifo = damage.copy("fifo-manifest") / "manifest.json"
    fifo.unlink()
    os.mkfifo(fifo)  # opening it would block the reader forever
    store = open_store(damage.root)
    assert store.damaged_runs() == [
        DamagedRun("runs/fifo-manifest", "manifest.json is not a regular file"),
        DamagedRun("runs/folder-manifest", "manifest.json is a folder, not a file"),
        DamagedRun("runs/no-manifest", "it has a commit marker but no manifest.json"),
    ]
    _assert_good_still_works(store)


def test_stray_folder_with_an_invalid_name(damage):
    damage.copy("props copy", same_id=True)  # what a file manager's "duplicate" makes
    weird = damage.copy("new\nline", same_id=True)
    store = open_store(damage.root)
    stray, odd = sorted(store.damaged_runs(), key=lambda d: d.folder != "runs/props copy")
    assert stray.folder == "runs/props copy"
    assert stray.reason.startswith("folder name 'props copy' is not a valid run id")
    assert odd.folder == "runs/new\\nline" and "\n" not in odd.reason  # escaped, one line
    with pytest.raises(StoreError, match="is not valid"):
        store.manifest("props copy")
    assert weird.is_dir()
    _assert_good_still_works(store)


def test_two_folders_claiming_one_run_id_are_never_both_listed(damage):
    damage.copy("good-copy", same_id=True)  # its manifest says run id 'good'
    store = open_store(damage.root)
    assert store.damaged_runs() == [
        DamagedRun("runs/good-copy", "manifest says run id 'good' but its folder is 'good-copy'")
    ]
    assert store.query("SELECT count(*) AS n FROM runs").frame["n"][0] == 1
    rows = store.query("SELECT count(DISTINCT run_id) AS runs, count(*) AS n FROM samples").frame
    assert rows.to_dict("records") == [{"runs": 1, "n": GOOD_ROWS}]
    with pytest.raises(StoreError, match="'good-copy' is damaged: manifest says run id 'good'"):
        store.resolve_run_id("good-copy")
    _assert_good_still_works(store)


def test_a_run_folder_that_is_a_symbolic_link(damage, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(damage.folder("good"), elsewhere)
    data = json.loads((elsewhere / "manifest.json").read_text())
    (elsewhere / "manifest.json").write_text(json.dumps({**data, "run_id": "linked"}))
    damage.folder("linked").symlink_to(elsewhere)
    store = open_store(damage.root)
    assert store.damaged_runs() == [
        DamagedRun(
            "runs/linked", "the folder is a symbolic link; a run must be a real folder in runs/"
        )
    ]
    _assert_good_still_works(store)


def test_uncommitted_folders_stay_invisible_and_stray_files_are_ignored(damage):
    (damage.copy("half") / "_COMMITTED").unlink()
    (damage.copy("half-bad") / "_COMMITTED").unlink()
    damage.write_manifest("half-bad", b"garbage")
    (damage.root / "runs" / "notes.txt").write_text("not a run")
    store = open_store(damage.root)
    assert store.damaged_runs() == []
    _assert_good_still_works(store)


def test_repairs_and_new_damage_show_without_reopening(damage):
    store = open_store(damage.root)
    assert store.damaged_runs() == []
    damage.copy("later")
    good_manifest = damage.manifest("later")
    damage.write_manifest("later", b"{broken")
    assert [d.folder for d in store.damaged_runs()] == ["runs/later"]
    assert store.run_ids() == ["good"]
    damage.write_manifest("later", json.dumps(good_manifest).encode())  # repaired
    assert store.damaged_runs() == [] and store.run_ids() == ["good", "later"]
    assert store.query("SELECT count(*) AS n FROM runs").frame["n"][0] == 2
    shutil.rmtree(damage.folder("later"))
    assert store.run_ids() == ["good"] and store.damaged_runs() == []


def test_scan_reads_each_manifest_once_while_it_does_not_change(damage, monkeypatch):
    damage.copy("two")
    store = open_store(damage.root)
    store.runs()
    reads = []
    original = store._catalog._load
    monkeypatch.setattr(store._catalog, "_load", lambda *a: reads.append(a[0]) or original(*a))
    for _ in range(5):
        store.runs()
        store.damaged_runs()
        store.manifest("two")
    assert reads == []
    damage.edit_manifest("two", created_at="2030-01-01T00:00:00+00:00", name="renamed")
    assert store.runs()[0].name == "renamed" and reads == ["two"]


# -- damage inside a run's Parquet files --------------------------------------------------------
def _reads(store, run_id):
    """Every read of a run, each a callable that must raise StoreError for a damaged one."""
    return {
        "vectors": lambda: store.vectors(run_id, "resid_post", 1, "mean"),
        "layer_vectors": lambda: store.layer_vectors(run_id, "resid_post", "last"),
        "iter_vectors": lambda: list(store.iter_vectors(run_id, "resid_post", 0, "last")),
        "token_vectors": lambda: store.token_vectors(run_id, "resid_post", 0),
    }


def _scramble(path, keep_footer: bool = False) -> None:
    """Random bytes over the file, or only over its data pages (the footer, whose length sits
    before the last 4 bytes, kept: the file opens and fails while its rows are read)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    end = len(data) - 8 - int.from_bytes(data[-8:-4], "little") if keep_footer else len(data)
    start = 4 if keep_footer else 0
    data[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("scrambled", "file vectors/part-00000.parquet is not Parquet"),
        ("truncated", "file vectors/part-00000.parquet is not Parquet"),
        ("empty", "file vectors/part-00000.parquet is empty"),
        ("folder", "file vectors/part-00000.parquet is not a file"),
    ],
)
def test_damaged_vector_files_raise_store_error_naming_run_and_file(damage, case, expected):
    part = damage.part(damage.copy("bad").name)
    if case == "scrambled":
        _scramble(part)
    elif case == "truncated":
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    elif case == "empty":
        part.write_bytes(b"")
    else:
        part.unlink()
        part.mkdir()
    store = open_store(damage.root)
    assert store.damaged_runs() == []  # a manifest-level scan cannot see this ...
    (listed,) = store.damaged_runs(check_files=True)  # ... one that opens the files can
    assert listed.folder == "runs/bad" and listed.reason.startswith("cannot read vectors (file")
    assert expected in listed.reason
    assert [m.run_id for m in store.runs(check_files=True)] == ["good"]
    for what, read in _reads(store, "bad").items():
        with pytest.raises(StoreError) as info:
            read()
        message = str(info.value)
        assert message.startswith("run 'bad': cannot read vectors (") and expected in message, what
        _assert_one_line_relative(message, damage.root)
    with pytest.raises(StoreError, match="file vectors/part-00000.parquet"):
        store.check_run("bad")
    # ... and the query views leave the run out instead of failing every query.
    result = store.query("SELECT DISTINCT run_id FROM vectors")
    assert result.frame["run_id"].tolist() == ["good"]
    assert [d.folder for d in result.skipped_runs] == ["runs/bad"]
    _assert_good_still_works(store, "bad")


def test_scrambled_data_pages_behind_an_intact_footer(damage):
    part = damage.part(damage.copy("bad").name)
    _scramble(part, keep_footer=True)
    store = open_store(damage.root)
    store.check_run("bad")  # the footer opens: only reading the rows finds the damage
    for what, read in _reads(store, "bad").items():
        with pytest.raises(StoreError, match=r"^run 'bad': cannot read vectors \(") as info:
            read()
        _assert_one_line_relative(str(info.value), damage.root)
        assert str(info.value).isprintable(), what
    _assert_good_still_works(store, "bad")


def test_vectors_wider_or_narrower_than_the_manifest_says(damage):
    damage.copy("wide")
    damage.edit_manifest("wide", d_model=16)
    store = open_store(damage.root)
    for read in _reads(store, "wide").values():
        with pytest.raises(
            StoreError, match="holds vectors of width 8; the manifest says d_model 16"
        ):
            read()
    _assert_good_still_works(store, "wide")


def test_variable_length_vectors_are_checked_row_by_row(damage):
    """A part written by another tool, as list<float> with one row of the wrong width."""
    part = damage.part(damage.copy("ragged").name)
    table = pq.read_table(part)
    rows = table.column("vector").to_pylist()
    positions, layers = table.column("position").to_pylist(), table.column("layer").to_pylist()
    first_last = next(i for i, p in enumerate(positions) if p == "last" and layers[i] == 1)
    rows[first_last] = rows[first_last][:5]
    ragged = table.set_column(
        table.schema.get_field_index("vector"), "vector", pa.array(rows, pa.list_(pa.float32()))
    )
    pq.write_table(ragged, part)
    store = open_store(damage.root)
    with pytest.raises(StoreError, match="vectors of width 5; the manifest says d_model 8"):
        store.layer_vectors("ragged", "resid_post", "last")
    _assert_good_still_works(store, "ragged")


def test_manifest_layers_the_files_do_not_have(damage):
    damage.copy("more-layers")
    damage.edit_manifest("more-layers", n_layers=5, layers=[0, 1, 2, 3, 4])
    store = open_store(damage.root)
    with pytest.raises(StoreError, match=r"lists layers 3, 4 of resid_post/last that its vector"):
        store.layer_vectors("more-layers", "resid_post", "last")
    with pytest.raises(StoreError, match="layer 4 has 0 vector rows that do not match its 8"):
        store.vectors("more-layers", "resid_post", 4, "last")
    with pytest.raises(StoreError, match="has no token rows"):
        store.token_vectors("more-layers", "resid_post", 0)
    _assert_good_still_works(store, "more-layers")


def test_missing_layer_message_names_the_layers_a_run_has(tmp_path):
    write_run(tmp_path, "gaps", label_rows(["a"], 3), n_layers=18, layers=[0, 17])
    with pytest.raises(StoreError, match=r"has no layer 5; it has layers 0, 17$"):
        open_store(tmp_path).vectors("gaps", "resid_post", 5)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("garbage", "run 'bad': cannot read samples (file samples.parquet is not Parquet"),
        ("missing", "run 'bad': cannot read samples (file samples.parquet is missing)"),
        ("fewer", "run 'bad': samples.parquet has 3 rows; the manifest says 8 samples"),
        ("no-index", "samples.parquet has no column 'sample_idx'"),
    ],
)
def test_damaged_samples_file(damage, case, expected):
    samples = damage.copy("bad") / "samples.parquet"
    if case == "garbage":
        samples.write_bytes(b"PAR1 but not really")
    elif case == "missing":
        samples.unlink()
    elif case == "fewer":
        pq.write_table(pq.read_table(samples).slice(0, 3), samples)
    else:
        pq.write_table(pq.read_table(samples).drop_columns(["sample_idx"]), samples)
    store = open_store(damage.root)
    reads = {"samples": lambda: store.samples("bad"), **_reads(store, "bad")}
    for what, read in reads.items():
        if what in ("token_vectors", "iter_vectors"):
            continue  # they read tokens and vectors, not samples
        with pytest.raises(StoreError) as info:
            read()
        assert expected in str(info.value), (what, str(info.value))
        _assert_one_line_relative(str(info.value), damage.root)
    _assert_good_still_works(store, "bad")


def test_damaged_token_file(damage):
    damage.part(damage.copy("bad").name, "tokens").write_bytes(b"garbage")
    store = open_store(damage.root)
    with pytest.raises(StoreError, match=r"cannot read tokens \(file tokens/part-00000.parquet"):
        store.token_vectors("bad", "resid_post", 0)
    store.vectors("bad", "resid_post", 0, "last")  # pooled vectors do not need tokens
    _assert_good_still_works(store, "bad")


def test_conflict_copies_of_part_files_are_not_read_twice(damage):
    part = damage.part("good")
    shutil.copyfile(part, part.with_name("part-00000 (1).parquet"))
    shutil.copyfile(part, part.with_name(".part-00001.parquet.tmp"))
    _assert_good_still_works(open_store(damage.root))
