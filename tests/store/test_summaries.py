"""Summaries: written at commit in the same pass as the vectors, read back strictly.

Label sums and typical norms must equal what the vectors give when read back; the subsample is
stratified, fixed by its seed, keeps pairs whole and reads back the same vectors; a resumed run,
a spilled subsample and a snapshot give the same summaries as a straight run. `python -m store
summarize` adds them to runs committed without them. Damaged or planted summary files make the
run's summaries unavailable with a reason and the command that rebuilds them, never a traceback,
and the run itself (and every other run) stays readable.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import RunManifest, RunWriter, StoreError, SummaryUnavailable, open_store
from store import __main__ as store_cli
from store import summarize as summarize_module
from store.snapshot import snapshot
from store.summaries import count_complete_pairs
from store.summarize import choose_subsample
from tests.support.synthetic import label_rows, pair_rows, write_run

LABELS = ("anger", "gratitude", "neutral")


def _expected(store, run_id, hook, position):
    """Per-label means and the typical norm computed from the vectors read back: [L, k, d], [L]."""
    X, samples, layers = store.layer_vectors(run_id, hook, position)
    X = X.astype(np.float64)
    labels = samples["label"].to_numpy()
    means = np.stack([X[:, labels == label].mean(axis=1) for label in sorted(set(labels))], 1)
    return means, np.linalg.norm(X, axis=2).mean(axis=1), layers


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A float16 run of 3 labels x 40 samples flushed in many parts, and a pairs run."""
    root = tmp_path_factory.mktemp("summaries") / "store"
    write_run(root, "emo", label_rows(LABELS, 40), d_model=16, positions=("last", "mean", "all"),
              dtype="float16", batch_rows=7, seed=3)  # fmt: skip
    write_run(root, "pairs", pair_rows(30), d_model=16, positions=("last",), seed=4)
    return root


def test_label_sums_equal_the_vectors_read_back(runs):
    store = open_store(runs)
    for position in ("last", "mean"):
        sums = store.label_sums("emo", "resid_post", position)
        means, typical, layers = _expected(store, "emo", "resid_post", position)
        assert sums.layers == tuple(layers) and sums.labels == LABELS
        assert (sums.counts == 40).all()
        np.testing.assert_allclose(sums.means, means, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sums.typical_norms, typical, rtol=1e-12)
        X, samples, _ = store.layer_vectors("emo", "resid_post", position)
        sq = (X.astype(np.float64) ** 2).sum(axis=2)  # [L, n]
        for k, label in enumerate(LABELS):
            np.testing.assert_allclose(sums.sum_sq_norms[:, k],
                                       sq[:, samples["label"] == label].sum(axis=1))  # fmt: skip
    summary = store.summary("emo")
    assert summary.seed == 0 and summary.made_by == "commit"
    assert {site[1] for site in summary.sites} == {"last", "mean"}  # per-token `all` is skipped
    with pytest.raises(StoreError, match="no position 'all'|has no summaries|all"):
        store.label_sums("emo", "resid_post", "all")


def test_subsample_is_stratified_fixed_and_keeps_pairs_whole():
    rows = label_rows(("a", "b", "c"), 100) + label_rows(("rare",), 5)
    frame = pd.DataFrame(rows).assign(sample_idx=np.arange(len(rows)))
    chosen = choose_subsample(frame, 65, seed=0)
    counts = frame.loc[chosen, "label"].value_counts().to_dict()
    assert counts == {"a": 20, "b": 20, "c": 20, "rare": 5}  # small strata whole, equal shares
    shuffled = frame.sample(frac=1.0, random_state=1)
    assert np.array_equal(choose_subsample(shuffled, 65, seed=0), chosen)  # order-free
    assert not np.array_equal(choose_subsample(frame, 65, seed=1), chosen)  # the seed matters
    pairs = pd.DataFrame(pair_rows(40)).assign(sample_idx=np.arange(80))
    kept = pairs.loc[choose_subsample(pairs, 21, seed=0)]
    assert len(kept) == 20 and (kept.groupby("pair_id").size() == 2).all()
    assert kept.groupby("category")["pair_id"].nunique().to_dict() == {
        "grammar_error": 5, "meaning_change": 5}  # fmt: skip


def test_subsample_of_a_large_run_is_its_own_file_and_reads_the_same_vectors(tmp_path, monkeypatch):
    monkeypatch.setattr(summarize_module, "SUBSAMPLE_SIZE", 30)
    monkeypatch.setattr(summarize_module, "SPILL_BYTES", 2000)  # spill many times, then merge
    root = tmp_path / "store"
    write_run(root, "big", label_rows(LABELS, 40), d_model=16, dtype="float16", batch_rows=9)
    store = open_store(root)
    summary = store.summary("big")
    assert len(summary.subsample) == 30 and not summary.subsample_is_everything
    X, samples, layers = store.subsample("big", "resid_post", "mean")
    assert X.shape == (3, 30, 16) and samples["label"].value_counts().to_dict() == dict.fromkeys(
        LABELS, 10
    )
    full, all_samples, _ = store.layer_vectors("big", "resid_post", "mean")
    rows = all_samples.index[all_samples["sample_idx"].isin(summary.subsample)]
    np.testing.assert_array_equal(X, full[:, rows])
    few, few_samples, _ = store.subsample("big", "resid_post", "mean", [1], size=9)
    assert few.shape == (1, 9, 16) and set(few_samples["label"]) == set(LABELS)
    assert set(few_samples["sample_idx"]) <= set(summary.subsample)
    rows = samples.index[samples["sample_idx"].isin(few_samples["sample_idx"])]
    np.testing.assert_array_equal(few[0], X[1, rows])  # the same 9 on every call
    assert not list((root / "runs" / "big").glob(".summaries-*"))  # spills and temp gone
    assert not any(p.name.startswith(".spill") for p in (root / "runs").rglob("*"))


def test_complete_pairs_are_counted_at_commit_and_for_older_summaries(tmp_path, monkeypatch):
    """A run bigger than its subsample says how many pairs it has without reading its samples'
    text: summary.json records it; a summary written before that was counts two columns."""
    monkeypatch.setattr(summarize_module, "SUBSAMPLE_SIZE", 10)
    root = tmp_path / "store"
    rows = pair_rows(12) + [{"id": "lone", "pair_id": "p99", "side": "a", "text": "lone"}]
    write_run(root, "pairs", rows, d_model=8)
    write_run(root, "plain", label_rows(LABELS, 4), d_model=8, seed=2)
    store = open_store(root)
    summary = store.summary("pairs")
    assert not summary.subsample_is_everything and summary.n_pairs == 12  # "p99" has no side b
    assert store.complete_pairs("pairs") == 12 and store.complete_pairs("plain") == 0
    path = root / "runs" / "pairs" / "summaries" / "summary.json"
    data = json.loads(path.read_text())
    del data["n_pairs"]  # as summaries were written before it
    path.write_text(json.dumps(data))
    store = open_store(root)
    assert store.summary("pairs").n_pairs is None and store.summary_status("pairs") is None
    text_read = []
    real = pq.read_table

    def read_table(source, *args, columns=None, **kwargs):
        text_read.append(columns is None or "text" in columns)
        return real(source, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq, "read_table", read_table)
    assert store.complete_pairs("pairs") == 12 and text_read == [False]
    sides = store.sample_columns("pairs", ["side", "no_such_column"])
    expected = store.samples("pairs")[["sample_idx", "side"]]
    pd.testing.assert_frame_equal(sides, expected, check_dtype=False)
    (root / "runs" / "pairs" / "samples.parquet").write_bytes(b"x" * 100)  # damaged later
    with pytest.raises(StoreError, match="run 'pairs': cannot read samples"):
        store.sample_columns("pairs", ["side"])
    for planted in (-1, 13, "12", True, 1.5):  # a count the run cannot have
        path.write_text(json.dumps(data | {"n_pairs": planted}))
        problem = open_store(root).summary_status("pairs")
        assert problem.kind == "damaged" and "malformed n_pairs" in problem.reason, planted


def test_resumed_run_summarizes_the_earlier_attempts_parts(tmp_path):
    straight, resumed = tmp_path / "a", tmp_path / "b"
    rows = label_rows(LABELS, 10)
    write_run(straight, "r", rows, dtype="float32", batch_rows=6)
    # The same run, killed after two parts: the second attempt resumes it.
    from tests.support.synthetic import _add_site, _samples_table

    def attempt(writer, batches):
        rng = np.random.default_rng(0)
        offsets = {label: 2.0 * rng.normal(size=8) for label in LABELS}
        for start in range(0, len(rows), 6):
            idx = np.arange(start, min(start + 6, len(rows)))
            offset = np.stack([offsets[rows[i]["label"]] for i in idx])
            for li in range(3):
                _add_site(writer, rng, "resid_post", "last", li, li, idx, offset, np.full(30, 3))
                _add_site(writer, rng, "resid_post", "mean", li, li, idx, offset, np.full(30, 3))
            if start // 6 in batches:
                writer.end_batch(idx.tolist())
                writer.flush()
            else:
                writer._buffer.clear()

    first = RunWriter.create(resumed, "r", {"x": 1}, d_model=8, dtype="float32")
    first.write_samples(_samples_table("r", rows, np.full(30, 3)))
    attempt(first, {0, 1})
    first.close()  # killed: no commit
    second = RunWriter.resume(resumed, "r", d_model=8, dtype="float32")
    assert second.done_samples == frozenset(range(12))
    second.write_samples(_samples_table("r", rows, np.full(30, 3)))
    attempt(second, {2, 3, 4})
    manifest = open_store(straight).manifest("r")
    second.commit(manifest)
    a, b = open_store(straight), open_store(resumed)
    for position in ("last", "mean"):
        np.testing.assert_allclose(b.label_sums("r", "resid_post", position).sums,
                                   a.label_sums("r", "resid_post", position).sums)  # fmt: skip


def _unsummarized(root, run_id="old", n_per_label=6):
    """A run committed the way runs were before summaries existed."""
    write_run(root, run_id, label_rows(LABELS, n_per_label), d_model=8)
    shutil.rmtree(root / "runs" / run_id / "summaries")
    return run_id


def test_store_summarize_adds_summaries_to_older_runs(tmp_path, capsys):
    root = tmp_path / "store"
    _unsummarized(root, "old")
    store = open_store(root)
    missing = store.summary_status("old")
    assert isinstance(missing, SummaryUnavailable) and missing.kind == "missing"
    assert missing.command.endswith(f"summarize --store {root} --runs old")
    with pytest.raises(SummaryUnavailable, match="has no summaries"):
        store.label_sums("old", "resid_post", "last")
    X_before = store.layer_vectors("old", "resid_post", "last")[0]
    assert store_cli.main(["summarize", "--store", str(root)]) == 0
    assert "summarized old: 6 sites" in capsys.readouterr().out
    assert store.summary_status("old") is None and store.summary("old").made_by == "summarize"
    means, typical, _ = _expected(store, "old", "resid_post", "last")
    np.testing.assert_allclose(store.label_sums("old", "resid_post", "last").means, means)
    np.testing.assert_array_equal(store.layer_vectors("old", "resid_post", "last")[0], X_before)
    assert store_cli.main(["summarize", "--store", str(root), "--runs", "ol"]) == 0
    assert capsys.readouterr().out.strip() == "up to date old"
    assert store_cli.main(["summarize", "--store", str(root), "--force"]) == 0
    assert "summarized old" in capsys.readouterr().out
    assert store_cli.main(["summarize", "--store", str(root), "--runs", "nope"]) == 2
    assert capsys.readouterr().err.strip() == "error: no committed run 'nope' in this store"


def _break(run, case):
    folder = run / "summaries"
    if case == "garbage json":
        (folder / "summary.json").write_text("{[[")
    elif case == "not an object":
        (folder / "summary.json").write_text("[]")
    elif case == "huge json":
        (folder / "summary.json").write_text(" " * (5 * 2**20))
    elif case == "fifo":
        (folder / "summary.json").unlink()
        os.mkfifo(folder / "summary.json")
    elif case == "symlinked folder":
        shutil.move(folder, run / "elsewhere")
        folder.symlink_to(run / "elsewhere")
    elif case in ("wrong site", "subsample outside", "another run"):
        data = json.loads((folder / "summary.json").read_text())
        if case == "wrong site":
            data["sites"][0] = ["resid_post", "last", "0; DROP TABLE runs"]
        elif case == "subsample outside":
            data["subsample"] = [0, 10**9]
        else:
            data["run_id"] = "emo"
        (folder / "summary.json").write_text(json.dumps(data))
    elif case == "labels not parquet":
        size = (folder / "labels.parquet").stat().st_size
        (folder / "labels.parquet").write_bytes(b"x" * size)  # same size, so only reading tells
    elif case == "labels planted counts":
        table = pq.read_table(folder / "labels.parquet")
        counts = pa.array(np.full(table.num_rows, 5, np.int64))
        pq.write_table(table.set_column(4, "count", counts), folder / "labels.parquet")
        data = json.loads((folder / "summary.json").read_text())
        data["files"]["labels.parquet"] = (folder / "labels.parquet").stat().st_size
        (folder / "summary.json").write_text(json.dumps(data))
    elif case == "subsample of another site":
        table = pq.read_table(folder / "subsample.parquet")
        layers = table.column("layer").to_numpy()
        pq.write_table(table.set_column(2, "layer", pa.array((layers + 1) % 3, pa.int16())),
                       folder / "subsample.parquet", row_group_size=18)  # fmt: skip
        data = json.loads((folder / "summary.json").read_text())
        data["files"]["subsample.parquet"] = (folder / "subsample.parquet").stat().st_size
        (folder / "summary.json").write_text(json.dumps(data))
    elif case == "subsample regrouped":  # the right rows, but not one row group per site
        pq.write_table(pq.read_table(folder / "subsample.parquet"), folder / "subsample.parquet",
                       row_group_size=7)  # fmt: skip
        data = json.loads((folder / "summary.json").read_text())
        data["files"]["subsample.parquet"] = (folder / "subsample.parquet").stat().st_size
        (folder / "summary.json").write_text(json.dumps(data))
    elif case == "labels missing":
        (folder / "labels.parquet").unlink()
    elif case == "vectors replaced":
        part = sorted((run / "vectors").glob("part-*.parquet"))[0]
        part.write_bytes(part.read_bytes() + b"\0")


DAMAGE = {
    "garbage json": ("damaged", "summary.json is not JSON"),
    "not an object": ("damaged", "not a JSON object"),
    "huge json": ("damaged", "over 4 MiB"),
    "fifo": ("damaged", "cannot be read"),
    "symlinked folder": ("damaged", "summaries is not a folder"),
    "wrong site": ("damaged", "a site the run lacks"),
    "subsample outside": ("damaged", "malformed subsample"),
    "another run": ("damaged", "names another run"),
    "labels not parquet": ("damaged", "labels.parquet: not Parquet"),
    "labels planted counts": ("damaged", "rows counted for 18 samples"),
    "labels missing": ("damaged", "summaries/labels.parquet is missing"),
    "subsample of another site": ("damaged", "holds another site than its place says"),
    "subsample regrouped": ("damaged", "row groups for 6 sites"),
    "vectors replaced": ("stale", "out of date (vectors/part-00000.parquet changed"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_or_planted_summaries_are_unavailable_with_a_reason(tmp_path, case):
    root = tmp_path / "store"
    write_run(root, "good", label_rows(LABELS, 6), d_model=8)
    shutil.copytree(root / "runs" / "good", root / "runs" / "bad")
    data = json.loads((root / "runs" / "bad" / "manifest.json").read_text())
    data["run_id"] = data["name"] = "bad"
    (root / "runs" / "bad" / "manifest.json").write_text(json.dumps(data))
    summary = json.loads((root / "runs" / "bad" / "summaries" / "summary.json").read_text())
    summary["run_id"] = "bad"
    (root / "runs" / "bad" / "summaries" / "summary.json").write_text(json.dumps(summary))
    _break(root / "runs" / "bad", case)
    store = open_store(root)
    kind, reason = DAMAGE[case]
    with pytest.raises(SummaryUnavailable) as caught:  # no read scans the vectors instead
        if case in ("subsample of another site", "subsample regrouped"):
            store.subsample("bad", "resid_post", "last")
        store.label_sums("bad", "resid_post", "last")
    problem = caught.value
    assert problem.kind == kind and reason in str(problem) and "\n" not in str(problem), problem
    assert str(root) not in problem.reason
    assert problem.command.endswith("--runs bad --force")
    if case in ("subsample of another site", "subsample regrouped"):  # shows when read
        with pytest.raises(SummaryUnavailable, match=reason):
            store.subsample("bad", "resid_post", "last")
    elif case != "labels planted counts":
        assert str(store.summary_status("bad")) == str(problem)
        with pytest.raises(SummaryUnavailable):
            store.subsample("bad", "resid_post", "last")
    assert {m.run_id for m in store.runs()} == {"good", "bad"}  # not a damaged run
    assert store.summary_status("good") is None  # the healthy run is untouched
    if case != "vectors replaced":
        assert store_cli.main(["summarize", "--store", str(root), "--runs", "bad", "--force"]) == 0
        assert store.summary_status("bad") is None


def test_reading_summaries_writes_nothing(runs):
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    store = open_store(runs)
    store.label_sums("emo", "resid_post", "last")
    store.subsample("pairs", "resid_post", "last")
    store.summary_status("emo")
    assert store.complete_pairs("pairs") == 30 and store.complete_pairs("emo") == 0
    store.sample_columns("pairs", ["pair_id", "side"])
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before


def test_hostile_arguments_are_store_errors(runs):
    store = open_store(runs)
    site = ("emo", "resid_post", "last")
    hostile = [("../emo", *site[1:]), ("emo", "resid_post; --", "last"), (*site, [99]),
               (*site, [-1])]  # fmt: skip
    for args in hostile:
        with pytest.raises(StoreError):
            store.label_sums(*args)
        with pytest.raises(StoreError):
            store.subsample(*args)


def test_summarize_in_a_store_it_cannot_write(tmp_path, monkeypatch):
    root = tmp_path / "store"
    _unsummarized(root, "old")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(summarize_module.tempfile, "mkdtemp", refuse)
    with pytest.raises(StoreError, match="cannot write summaries of run 'old': Permission denied"):
        summarize_module.summarize_run(root, "old")
    assert not (root / "runs" / "old" / "summaries").exists()


def test_too_many_labels_keep_one_row_per_site(tmp_path, monkeypatch):
    monkeypatch.setattr(summarize_module, "MAX_SUMMARY_LABELS", 2)
    root = tmp_path / "store"
    write_run(root, "many", label_rows(LABELS, 5), d_model=8)
    store = open_store(root)
    summary = store.summary("many")
    assert summary.per_label is False and summary.labels == (None,)
    sums = store.label_sums("many", "resid_post", "last")
    X = store.layer_vectors("many", "resid_post", "last")[0].astype(np.float64)
    np.testing.assert_allclose(sums.means[:, 0], X.mean(axis=1))


def test_runs_written_without_summaries_and_snapshots_recompute_them(runs, tmp_path):
    root = tmp_path / "plain"
    rows = label_rows(LABELS, 4)
    writer = RunWriter.create(root, "plain", {}, d_model=4, dtype="float32", summaries=False)
    from tests.support.synthetic import _samples_table

    writer.write_samples(_samples_table("plain", rows, np.full(12, 3)))
    writer.add("resid_post", "last", 0, np.arange(12), np.full(12, -1), np.ones((12, 4)))
    writer.end_batch(list(range(12)))
    manifest = RunManifest(
        run_id="plain", name="plain", model="m", model_source="m", architecture="x",
        weights_sha256="", n_layers=1, d_model=4, backend="hf", weight_processing="none",
        hooks=("resid_post",), layers=(0,), positions=("last",), dtype="float32",
        dataset_name="d", dataset_sha256="", n_samples=12,
    )  # fmt: skip
    writer.commit(manifest)
    assert open_store(root).summary_status("plain").kind == "missing"
    out = tmp_path / "snap"
    snapshot(runs, ["emo"], out, "0,-1")
    snap = open_store(out)
    assert snap.summary("emo").made_by == "snapshot"
    sums = snap.label_sums("emo", "resid_post", "mean")
    means, typical, layers = _expected(snap, "emo", "resid_post", "mean")
    assert list(sums.layers) == layers == [0, 2]
    np.testing.assert_allclose(sums.means, means, rtol=1e-12)
    assert snap.summary("emo").subsample == open_store(runs).summary("emo").subsample


def test_extraction_runs_commit_with_summaries(tiny_store):
    """Real extraction (tiny models): summaries are part of the commit, timed in the manifest."""
    store = open_store(tiny_store["root"])
    pairs = []
    for run_id in tiny_store["run_ids"]:
        manifest = store.manifest(run_id)
        assert store.summary_status(run_id) is None
        assert manifest.timings["summaries_s"] >= 0
        means, typical, _ = _expected(store, run_id, "mlp_out", "mean")
        sums = store.label_sums(run_id, "mlp_out", "mean")
        np.testing.assert_allclose(sums.means, means, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(sums.typical_norms, typical, rtol=1e-10)
        # the pair count a page shows comes from the commit, as the samples give it
        expected = count_complete_pairs(store.samples(run_id))
        assert store.summary(run_id).n_pairs == expected
        pairs.append(expected)
    assert any(pairs) and not all(pairs)  # runs of minimal pairs and runs without
