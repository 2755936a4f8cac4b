"""Downloads on the Directions and Pairs pages (AppTest, tiny store): the files the buttons make
(`ui.downloads`) hold what the page shows, in the formats of `python -m store export`; a run
damaged after the page drew is one error line in the file; read-only mode offers them too
(they write nothing on the server)."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest

from store import open_store
from store.export import export_vectors
from tests.ui.apptest import open_downloads, open_page, record_downloads, run_id_named


def _file(made: dict, starts: str, fmt: str) -> bytes:
    (name,) = [n for n in made if n.startswith(starts) and n.endswith(f".{fmt}")]
    return made[name]()


@pytest.mark.slow
def test_directions_offers_its_label_directions_and_the_samples(tiny_env, monkeypatch):
    made = record_downloads(monkeypatch)
    llama = run_id_named(tiny_env, "emo-llama")
    at = open_page("pages/directions.py", {"runs": [llama], "layer": "2", "baseline": "neutral"})
    assert len(at.get("download_button")) == 0  # built only once the Download section opens
    assert len(open_downloads(at).get("download_button")) == 6
    X, samples = open_store(tiny_env["root"]).vectors(llama, "resid_post", 2, "last")
    labels = samples["label"].to_numpy()
    frame = pd.read_csv(io.BytesIO(_file(made, f"directions-{llama}-resid_post-L2", "csv")))
    assert list(frame["label"]) == ["anger", "gratitude"]
    for row in frame.itertuples(index=False):
        expected = X[labels == row.label].mean(0) - X[labels == "neutral"].mean(0)
        np.testing.assert_allclose(np.array(row[1:], np.float32), expected, atol=1e-5)
    samples_csv = _file(made, f"{llama}-resid_post-L2-last", "csv")
    store = open_store(tiny_env["root"])
    assert samples_csv == export_vectors(store, llama, "resid_post", 2, "last", ("id", "label"),
                                         "csv").data  # fmt: skip


@pytest.mark.slow
def test_pairs_offers_each_pairs_difference(tiny_env, monkeypatch):
    made = record_downloads(monkeypatch)
    run_id = run_id_named(tiny_env, "pairs-llama")
    at = open_page("pages/pairs.py", {"layer": "1", "site": "resid_post", "position": "last"})
    assert len(open_downloads(at).get("download_button")) == 6
    D = np.load(io.BytesIO(_file(made, f"pair-differences-{run_id}-resid_post-L1", "npy")))
    X, samples = open_store(tiny_env["root"]).vectors(run_id, "resid_post", 1, "last")
    row = {i: k for k, i in enumerate(samples["id"])}
    np.testing.assert_allclose(D[0], X[row["p0b"]] - X[row["p0a"]], atol=1e-6)
    frame = pd.read_parquet(io.BytesIO(_file(made, f"pair-differences-{run_id}", "parquet")))
    assert list(frame["label"]) == [f"p{i}" for i in range(6)]


@pytest.mark.slow
def test_a_run_damaged_after_the_page_drew_is_one_error_line(tiny_store, tmp_path, monkeypatch):
    root = tmp_path / "store"
    shutil.copytree(tiny_store["root"], root)
    monkeypatch.setenv("ACTX_STORE", str(root))
    made = record_downloads(monkeypatch)
    run_id = run_id_named(tiny_store, "pairs-llama")
    open_downloads(open_page("pages/pairs.py", {"site": "resid_post", "position": "last"}))
    for part in (root / "runs" / run_id / "vectors").glob("part-*.parquet"):
        part.write_bytes(b"not parquet")
    for starts in ("pair-differences", run_id):
        data = _file(made, starts, "csv")
        assert data.startswith(f"error: run '{run_id}'".encode()) and data.count(b"\n") == 1


@pytest.mark.slow
def test_read_only_offers_the_downloads(tiny_env, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    assert len(open_downloads(open_page("pages/pairs.py")).get("download_button")) == 6
