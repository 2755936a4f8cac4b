"""Snapshots: chosen runs and layers (the layer grammar of extraction), float16, self-contained,
size printed, damaged runs skipped with a line, no absolute server path kept, bad input refused
in one line."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from settings.run import join_option_values
from store import RunManifest, RunWriter, StoreError, open_store
from store.snapshot import snapshot
from tests.store.conftest import Damage
from tests.support.synthetic import label_rows, write_run

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, process: bool = False) -> subprocess.CompletedProcess:
    """`python -m store ...`: in-process by default (the same `main()`, without an interpreter
    start per call); `process=True` runs the real command (the first test does)."""
    if process:
        return subprocess.run(
            [sys.executable, "-m", "store", *args], cwd=REPO, capture_output=True, text=True
        )
    from store.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_snapshot_keeps_chosen_runs_and_layers(tiny_store, tmp_path):
    source = open_store(tiny_store["root"])
    by_name = {m.name: m for m in source.runs()}
    llama, pairs = by_name["emo-llama"], by_name["pairs-llama"]
    out = tmp_path / "snap"
    runs = f"{llama.run_id},{pairs.run_id}"
    result = cli("snapshot", "--store", str(source.root), "--runs", runs, "--layers", "0,-1",
                 "--out", str(out), process=True)  # fmt: skip
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
    # Real runs record absolute model, dataset and store paths; the snapshot keeps none.
    assert source.manifest(llama.run_id).model_source.startswith("/")
    _assert_no_absolute_paths(moved)
    assert manifest.extra["snapshot"]["source_store"] == source.root.resolve().name
    assert manifest.extra["dataset_path"] == "emotions.jsonl"


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
    result = snapshot(tmp_path / "src", [run_id], tmp_path / "out", layers=[1, 2])
    assert result.size_bytes > 0 and result.copied == (run_id,) and result.skipped == ()
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
        (["--runs", run_id, "--layers", "a,b"], "bad layer 'a' in 'a,b'"),
        (["--runs", run_id, "--layers", "20-10"], "bad layer range '20-10'"),
        (["--runs", run_id, "--layers", "-99"], "has no layer -99"),
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


def _json_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _json_strings(item)


def _assert_no_absolute_paths(root: Path) -> None:
    checked = 0
    for path in root.rglob("*"):
        if path.name in ("manifest.json", "config.json", "_COMMITTED"):
            for text in _json_strings(json.loads(path.read_text())):
                assert not text.startswith(("/", "~")), (path.relative_to(root), text)
            checked += 1
    assert checked


def _synthetic_source(tmp_path: Path) -> Damage:
    root = tmp_path / "src"
    write_run(root, "good", label_rows(["a", "b"], 3), n_layers=5, model="/srv/models/m-135")
    damage = Damage(root)
    damage.edit_manifest("good", extra={"dataset_path": "/srv/data/props.jsonl", "note": "x"})
    config = {"config": {"model": "/srv/models/m-135", "dataset": "/srv/data/props.jsonl"}}
    (damage.folder("good") / "config.json").write_text(json.dumps(config))
    return damage


def test_snapshot_takes_the_layer_grammar_of_extraction(tmp_path):
    damage = _synthetic_source(tmp_path)
    for spec, want in [
        ("1-3", (1, 2, 3)),
        ("-1,0", (0, 4)),
        ("-2", (3,)),
        ("all", (0, 1, 2, 3, 4)),
    ]:
        out = tmp_path / f"out{spec}"
        result = cli("snapshot", "--store", str(damage.root), "--runs", "good",
                     "--layers", spec, "--out", str(out))  # fmt: skip
        assert result.returncode == 0, (spec, result.stderr)
        assert open_store(out).manifest("good").layers == want
    result = snapshot(damage.root, ["good"], tmp_path / "api", layers="2-3")
    assert open_store(tmp_path / "api").manifest("good").layers == (2, 3)


def test_snapshot_refuses_layers_a_run_does_not_have(tmp_path):
    root = tmp_path / "src"
    write_run(root, "gaps", label_rows(["a"], 3), n_layers=18, layers=[0, 17])
    result = cli("snapshot", "--store", str(root), "--runs", "gaps", "--layers", "5-6",
                 "--out", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr == "error: run 'gaps' has no layer 5; it has layers 0, 17\n"
    assert cli("snapshot", "--store", str(root), "--runs", "gaps", "--layers", "-1",
               "--out", str(tmp_path / "ok")).returncode == 0  # fmt: skip


def test_snapshot_manifests_carry_no_absolute_server_paths(tmp_path):
    damage = _synthetic_source(tmp_path)
    result = snapshot(damage.root, "all", tmp_path / "out")
    assert result.copied == ("good",)
    _assert_no_absolute_paths(tmp_path / "out")
    manifest = open_store(tmp_path / "out").manifest("good")
    assert manifest.model == manifest.model_source == "m-135"
    assert manifest.extra["dataset_path"] == "props.jsonl" and manifest.extra["note"] == "x"
    assert manifest.extra["snapshot"]["source_store"] == "src"
    config = json.loads((tmp_path / "out" / "runs" / "good" / "config.json").read_text())
    assert config == {"config": {"model": "m-135", "dataset": "props.jsonl"}}


def _scramble_data_pages(path: Path) -> None:
    """Random bytes over the data pages; the footer (its length sits before the last 4 bytes)
    stays intact, so the file opens and fails only while its rows are read."""
    data = bytearray(path.read_bytes())
    end = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[4:end] = np.random.default_rng(0).bytes(end - 4)
    path.write_bytes(bytes(data))


def test_snapshot_skips_damaged_runs_with_a_line(tmp_path):
    damage = _synthetic_source(tmp_path)
    damage.copy("bad-manifest")
    damage.write_manifest("bad-manifest", b"{not json")
    damage.copy("props copy", same_id=True)
    (damage.copy("bad-file") / "vectors" / "part-00000.parquet").write_bytes(b"junk")
    _scramble_data_pages(damage.part(damage.copy("bad-pages").name))
    out = tmp_path / "out"
    result = cli("snapshot", "--store", str(damage.root), "--runs", "all", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = sorted(result.stderr.splitlines())
    assert len(lines) == 4 and all(line.startswith("skipped runs/") for line in lines), lines
    assert lines[0].startswith("skipped runs/bad-file: cannot read vectors (file vectors/")
    assert lines[1].startswith("skipped runs/bad-manifest: manifest.json is not JSON")
    assert lines[2].startswith("skipped runs/bad-pages: file vectors/part-00000.parquet is dam")
    assert lines[3].startswith("skipped runs/props copy: folder name 'props copy' is not a valid")
    assert str(tmp_path) not in result.stderr
    assert result.stdout.splitlines()[0] == "copied good"
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["good"]  # no half-copied run

    named = cli("snapshot", "--store", str(damage.root), "--runs", "good,bad-manifest",
                "--out", str(tmp_path / "named"))  # fmt: skip
    assert named.returncode == 0 and named.stderr.startswith("skipped runs/bad-manifest: ")
    assert open_store(tmp_path / "named").run_ids() == ["good"]

    only_damaged = cli("snapshot", "--store", str(damage.root), "--runs", "bad-manifest,bad-file",
                       "--out", str(tmp_path / "none"))  # fmt: skip
    assert only_damaged.returncode == 2 and not (tmp_path / "none").exists()
    assert only_damaged.stderr.splitlines()[-1] == "error: no healthy runs to copy (2 skipped)"
    pages_only = cli("snapshot", "--store", str(damage.root), "--runs", "bad-pages",
                     "--out", str(tmp_path / "pages"))  # fmt: skip
    assert pages_only.returncode == 2 and not (tmp_path / "pages").exists()


def test_snapshot_store_or_out_that_is_a_file_exits_2_with_one_line(tmp_path):
    damage = _synthetic_source(tmp_path)
    for args, message in [
        (["--store", "/etc/passwd", "--out", str(tmp_path / "x")],
         "error: store '/etc/passwd' is not a directory\n"),
        (["--store", str(damage.root), "--out", "/etc/passwd"],
         "error: store '/etc/passwd' is not a directory\n"),
        (["--store", str(damage.root), "--out", "/etc/passwd/x"],
         "error: cannot create store '/etc/passwd/x': Not a directory\n"),
        (["--store", str(tmp_path / "missing"), "--out", str(tmp_path / "x")],
         f"error: store '{tmp_path / 'missing'}' does not exist\n"),
    ]:  # fmt: skip
        result = cli("snapshot", "--runs", "all", *args)
        assert result.returncode == 2 and result.stderr == message, result.stderr
        assert not (tmp_path / "x").exists()


def test_join_option_values_lets_negative_layer_lists_through_argparse():
    flags = ("--layers",)
    assert join_option_values(["--layers", "-1,0", "--out", "x"], flags) == [
        "--layers=-1,0", "--out", "x"
    ]  # fmt: skip
    assert join_option_values(["--layers", "-2-3"], flags) == ["--layers=-2-3"]
    unchanged = [
        ["--layers", "0,5"],  # not negative: argparse takes it as it is
        ["--layers", "--out", "x"],  # an option, not a value: argparse reports it
        ["--layers"],  # no value at all
        ["--name", "-1"],  # another flag
        ["--", "--layers", "-1"],  # after '--' nothing is an option
        ["--layers=-1"],
    ]
    for argv in unchanged:
        assert join_option_values(argv, flags) == argv
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers")
    argv = ["--layers", "-1,0"]
    assert parser.parse_args(join_option_values(argv, flags)).layers == "-1,0"
