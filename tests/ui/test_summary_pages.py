"""The analysis pages read summaries and the subsample only (issue 13, point 2).

On the tiny store (a few dozen samples per run, so the subsample is every sample) what the pages
compute equals what a full scan of the vectors gives, as the pages computed before summaries. A
bigger run is drawn from its subsample and the page says how many samples that is; the pages'
per-sample statistics use at most PAGE_SUBSAMPLE_SIZE of it, nested in it, stratified, the same on
every call and for every run of one dataset, and a run of at most that many samples uses every
sample, as before the page subsample existed. No page reads
a run's vectors (the store's vector readers are made to fail). A run without summaries is named
with the command that makes them; the writable app runs it on a button press, read-only only
shows it, naming the store by its folder.
"""

from __future__ import annotations

import json

import numpy as np
import pandas.testing as pd_testing
import pytest
from streamlit.testing.v1 import AppTest

from analysis import (
    MeanAccumulator,
    dimension_consistency,
    mean_abs_difference,
    relative_difference,
)
from store import SummaryUnavailable, open_store
from store import summarize as summarize_module
from store.reader import Store
from store.summaries import PAGE_SUBSAMPLE_SIZE, SUBSAMPLE_SIZE
from tests.support.synthetic import label_rows, pair_rows, write_run
from tests.ui.apptest import REPO, TIMEOUT, chart, messages, open_page, page_text, run_id_named
from ui import compute
from ui import pairs_compute as pc
from ui.context import StoreView

SITE = ("resid_post", "last")


def test_compute_from_summaries_equals_a_full_scan(tiny_store):
    store = open_store(tiny_store["root"])
    view = StoreView(str(tiny_store["root"]), tuple(sorted(store.run_ids())))
    run_id = run_id_named(tiny_store, "emo-llama")
    stats = compute.layer_stats(view, run_id, *SITE)
    X, samples, layers = store.layer_vectors(run_id, *SITE)
    labels = samples["label"].fillna(compute.NO_LABEL).astype(str).to_numpy()
    assert stats.layers == layers and stats.labels == sorted(set(labels))
    for li in range(len(layers)):  # what layer_stats streamed before summaries
        acc = MeanAccumulator(X.shape[2]).update(X[li], labels)
        present, means, counts = acc.means()
        order = [present.index(label) for label in stats.labels]
        np.testing.assert_allclose(stats.means[li], means[order], rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(stats.counts, counts[order])
        np.testing.assert_allclose(stats.typical_norms[li], acc.typical_norm(), rtol=1e-9)
    np.testing.assert_array_equal(stats.sub_X, X.astype(np.float32))  # every sample, in order
    assert list(stats.sub_ids) == samples["id"].astype(str).tolist()
    profile = compute.direction_profile(view, run_id, *SITE, "neutral")
    assert (profile.per_label["n_subsample"] == len(samples)).all()
    assert (profile.per_label["n_samples"] == len(samples)).all()

    pairs_run = run_id_named(tiny_store, "pairs-llama")
    result = pc.pair_profile(view, pairs_run, *SITE)
    X, samples, _ = store.layer_vectors(pairs_run, *SITE)
    table = pc.pair_table(samples)
    assert result.n_pairs_total == len(result.pairs) == len(table)
    row = {s: i for i, s in enumerate(samples["sample_idx"])}
    A = X[:, [row[s] for s in table["sample_a"]]].astype(np.float64)
    B = X[:, [row[s] for s in table["sample_b"]]].astype(np.float64)
    for li in range(len(result.layers)):
        expected = dimension_consistency(A[li], B[li])
        np.testing.assert_allclose(result.score[li], expected.score, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(result.mean_abs[li], expected.mean_abs, rtol=1e-9)
        rows = result.per_layer[result.per_layer["layer"] == result.layers[li]]
        for category, row in rows.set_index("category").iterrows():  # from per-pair figures
            mask = (table["category"] == category).to_numpy() | (category == pc.ALL_CATEGORIES)
            a, b = A[li, mask], B[li, mask]
            assert row["relative"] == pytest.approx(relative_difference(a, b), rel=1e-12)
            assert row["mean_abs"] == pytest.approx(mean_abs_difference(a, b), rel=1e-12)


def test_layer_stats_are_shared_read_only_not_copied(tiny_store):
    """Every caller gets the one cached LayerStats (a subsample of 100,000 samples is 141 MB,
    which a pickled cache copied on every hit), so none may change it."""
    store = open_store(tiny_store["root"])
    view = StoreView(str(tiny_store["root"]), tuple(sorted(store.run_ids())))
    run_id = run_id_named(tiny_store, "emo-llama")
    stats = compute.layer_stats(view, run_id, *SITE)
    assert compute.layer_stats(view, run_id, *SITE) is stats
    for array in (stats.sub_X, stats.means, stats.counts, stats.typical_norms, stats.sub_ids,
                  stats.sub_labels, stats.sub_text):  # fmt: skip
        assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        stats.sub_X[0, 0, 0] = 1.0
    compute.layer_detail(view, run_id, *SITE, stats.layers[0], "neutral", "anger")  # reads only


def test_a_big_pairs_run_counts_its_pairs_without_reading_its_samples(tmp_path, monkeypatch):
    """The Pairs page says how many pairs a run has beyond its subsample: from summary.json, or
    for summaries written before it recorded that, from two columns, never the whole table."""
    monkeypatch.setattr(summarize_module, "SUBSAMPLE_SIZE", 12)
    root = tmp_path / "store"
    write_run(root, "pairs", pair_rows(20), d_model=8, positions=("last",))
    view = StoreView(str(root), ("pairs",))

    real = Store.samples

    def samples(self, run_id, sample_idx=None):
        assert sample_idx is not None, "the page read every sample"  # the subsample's: fine
        return real(self, run_id, sample_idx)

    monkeypatch.setattr(Store, "samples", samples)
    profile = pc.pair_profile(view, "pairs", *SITE)
    assert (len(profile.pairs), profile.n_pairs_total) == (6, 20)
    path = root / "runs" / "pairs" / "summaries" / "summary.json"
    data = json.loads(path.read_text())
    del data["n_pairs"]
    path.write_text(json.dumps(data))
    pc.pair_profile.clear()
    profile = pc.pair_profile(view, "pairs", *SITE)
    assert (len(profile.pairs), profile.n_pairs_total) == (6, 20)


def test_pages_use_a_nested_stratified_fixed_page_subsample(tmp_path):
    """Past PAGE_SUBSAMPLE_SIZE the per-sample statistics use that many samples of the stored
    subsample: inside it, stratified (a small label whole, equal shares of the rest), the same
    on every call and for a second run of the same dataset; pairs stay whole."""
    root = tmp_path / "store"
    rows = label_rows(("anger", "gratitude", "apology", "neutral"), 1500) + label_rows(
        ("rare",), 10
    )
    for run_id, seed in (("a", 1), ("b", 2)):
        write_run(root, run_id, rows, d_model=8, positions=("last",), seed=seed,
                  model=f"model-{run_id}")  # fmt: skip
    write_run(root, "pairs", pair_rows(3000), d_model=8, positions=("last",), seed=3)
    store = open_store(root)
    view = StoreView(str(root), tuple(store.run_ids()))
    stored = set(store.summary("a").subsample)
    assert PAGE_SUBSAMPLE_SIZE < len(stored) <= SUBSAMPLE_SIZE < len(rows)  # not everything
    stats = compute.layer_stats(view, "a", *SITE)
    samples = store.samples("a")
    chosen = samples[samples["id"].isin(stats.sub_ids)]
    assert list(chosen["id"]) == list(stats.sub_ids)  # ordered by sample_idx
    assert set(chosen["sample_idx"]) <= stored  # nested in the stored subsample
    counts = chosen["label"].value_counts().to_dict()
    share = (PAGE_SUBSAMPLE_SIZE - 10) // 4
    assert counts == {"rare": 10, "anger": share, "gratitude": share, "apology": share,
                      "neutral": share}  # fmt: skip
    full, all_samples, _ = store.layer_vectors("a", *SITE)
    rows_of = all_samples.index[all_samples["sample_idx"].isin(chosen["sample_idx"])]
    np.testing.assert_array_equal(stats.sub_X, full[:, rows_of].astype(stats.sub_X.dtype))
    compute.layer_stats.clear()
    again = compute.layer_stats(view, "a", *SITE)
    assert again is not stats and list(again.sub_ids) == list(stats.sub_ids)  # fixed
    assert list(compute.layer_stats(view, "b", *SITE).sub_ids) == list(stats.sub_ids)  # aligned
    profile = compute.direction_profile(view, "a", *SITE, "neutral")
    assert (profile.per_label["n_subsample"] == len(stats.sub_ids)).all()
    assert profile.subsample_text == f"{len(stats.sub_ids):,} of {len(rows):,} samples"

    pairs = pc.pair_profile(view, "pairs", *SITE)
    assert len(pairs.pairs) == PAGE_SUBSAMPLE_SIZE // 2 and pairs.n_pairs_total == 3000
    assert pairs.pairs["category"].value_counts().nunique() == 1  # equal shares per category
    kept = set(pairs.pairs["sample_a"]) | set(pairs.pairs["sample_b"])
    assert len(kept) == PAGE_SUBSAMPLE_SIZE and kept <= set(store.summary("pairs").subsample)


def test_a_run_of_at_most_the_page_subsample_uses_every_sample_as_before(tmp_path, monkeypatch):
    """A run of 1,024 samples (what the page subsample promises to show whole): the pages use
    all of them, and show what they showed when they used the whole stored subsample."""
    n = 1024
    assert n <= PAGE_SUBSAMPLE_SIZE
    root = tmp_path / "store"
    rows = label_rows(("anger", "gratitude", "neutral"), n // 4)
    rows += label_rows(("apology",), n - len(rows))
    write_run(root, "run", rows, d_model=8, positions=("last",), dtype="float16")
    write_run(root, "pairs", pair_rows(n // 2), d_model=8, positions=("last",))
    view = StoreView(str(root), ("pairs", "run"))
    stats = compute.layer_stats(view, "run", *SITE)
    assert len(stats.sub_ids) == len(rows) == n
    now = compute.direction_profile(view, "run", *SITE, "neutral")
    detail = compute.layer_detail(view, "run", *SITE, 1, "neutral", "anger")
    pairs = pc.pair_profile(view, "pairs", *SITE)
    assert len(pairs.pairs) == pairs.n_pairs_total == n // 2
    for module in (compute, pc):  # as before: the whole stored subsample
        monkeypatch.setattr(module, "PAGE_SUBSAMPLE_SIZE", SUBSAMPLE_SIZE)
    compute.layer_stats.clear()
    compute.direction_profile.clear()
    compute.layer_detail.clear()
    pc.pair_profile.clear()
    before = compute.direction_profile(view, "run", *SITE, "neutral")
    assert before is not now
    pd_testing.assert_frame_equal(now.per_label, before.per_label)
    old_detail = compute.layer_detail(view, "run", *SITE, 1, "neutral", "anger")
    pd_testing.assert_frame_equal(detail.scores, old_detail.scores)
    pd_testing.assert_frame_equal(detail.projections, old_detail.projections)
    old_pairs = pc.pair_profile(view, "pairs", *SITE)
    np.testing.assert_array_equal(pairs.score, old_pairs.score)
    pd_testing.assert_frame_equal(pairs.per_layer, old_pairs.per_layer)


def test_run_labels_and_pairs_come_from_summaries_as_from_the_samples(tiny_store):
    """The pickers' labels and pairs flag come from summary.json: the same as the samples say."""
    store = open_store(tiny_store["root"])
    flags = []
    for run_id in store.run_ids():
        found = compute._labels_and_pairs(store, run_id, summarized=True)
        assert found == compute._labels_and_pairs(store, run_id, summarized=False)
        flags.append(found[1])
    assert any(flags) and not all(flags)  # runs of pairs and runs without


@pytest.fixture
def big_and_old(tmp_path, monkeypatch):
    """A run bigger than its subsample (30 of 120 samples) and one without summaries."""
    monkeypatch.setattr(summarize_module, "SUBSAMPLE_SIZE", 30)
    root = tmp_path / "store"
    rows = label_rows(("anger", "gratitude", "neutral"), 40)
    write_run(root, "big", rows, d_model=16, dtype="float16", seed=1)
    write_run(root, "old", rows, d_model=16, seed=2, summaries=False, model="other-model")
    monkeypatch.setenv("ACTX_STORE", str(root))
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)

    def no_scan(*_args, **_kwargs):
        raise AssertionError("a page read a run's vectors")

    for name in ("iter_vectors", "layer_vectors", "vectors"):  # pages never scan
        monkeypatch.setattr(Store, name, no_scan)
    return root


@pytest.mark.slow
def test_a_big_run_is_drawn_from_its_subsample_and_says_so(big_and_old):
    at = open_page("pages/directions.py", {"runs": ["big"]})
    assert "fixed subsample (30 of 120 samples)" in page_text(at)
    assert "30 of its 120 samples" in page_text(at)  # the layer view's histogram and PCA
    assert len(chart(at, "PCA of the samples")) == 30
    assert len(chart(at, "L2 norm")) == 2 * 3  # the norms cover every sample: 3 layers x 2


@pytest.mark.slow
def test_a_run_without_summaries_offers_the_command_then_draws(big_and_old):
    at = open_page("pages/directions.py", {"runs": ["old"]})
    assert "old: has no summaries (it was committed before" in messages(at).replace("\\", "")
    command = [c.value for c in at.code if "store summarize" in c.value]
    assert command == [f"python -m store summarize --store {big_and_old} --runs old"]
    assert any("old" in e.value and "no summaries" in e.value for e in at.error)
    with pytest.raises(SummaryUnavailable):
        open_store(big_and_old).summary("old")
    (button,) = [b for b in at.button if b.label.startswith("Summarize")]
    button.click().run()
    assert not at.exception, at.exception
    assert "no summaries" not in messages(at)
    assert set(chart(at, "L2 norm")["model"]) == {"other-model"}
    open_store(big_and_old).summary("old")  # written to the store


@pytest.mark.slow
def test_read_only_names_the_command_only(big_and_old, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    for page in ("pages/directions.py", "pages/cross_model.py"):
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
        at.switch_page(page)
        at.run()
        assert not at.exception, at.exception
        assert [c.value for c in at.code if "summarize" in c.value] == [
            "python -m store summarize --store store --runs old"
        ]
        assert not [b for b in at.button if b.label.startswith("Summarize")]
        assert str(big_and_old) not in page_text(at)
    with pytest.raises(SummaryUnavailable):
        open_store(big_and_old).summary("old")  # nothing written
