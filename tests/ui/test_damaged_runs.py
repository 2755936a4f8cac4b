"""A damaged run never takes a page down (AppTest over a copy of the tiny store).

The tiny store (tests/conftest.py, made by real extraction) is copied and its gemma3 emotions
run damaged in one way per case; every page must then draw its healthy runs, show no exception,
and name the damaged run: the Runs page in its "Damaged runs" list with the reason, the analysis
pages in an error for that run (when it is only found while reading vectors) or by leaving it
out of their pickers (when the store finds it while listing).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.ui.apptest import PAGES, chart, messages, open_page, page_text, run_id_named

VICTIM = "emo-gemma3"


def _edit_manifest(run: Path, **changes) -> None:
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _part(run: Path) -> Path:
    return sorted((run / "vectors").glob("part-*.parquet"))[0]


def garbage_manifest(run: Path) -> None:
    (run / "manifest.json").write_text("{not json at all")


def scrambled_vectors(run: Path) -> None:
    part = _part(run)
    part.write_bytes(bytes(range(256)) * (part.stat().st_size // 256 + 1))


def wrong_d_model(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    _edit_manifest(run, d_model=manifest["d_model"] * 2 + 1)


def layers_beyond_the_data(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    n = manifest["n_layers"] * 2
    _edit_manifest(run, n_layers=n, layers=list(range(n)))


def flipped_vector_bytes(run: Path) -> None:
    """Data pages of a vectors file scrambled, footer intact: only found when the vectors are
    read (by pages that read vectors: Propositions, downloads)."""
    _flip_middle(_part(run))


def _flip_middle(part: Path) -> None:
    data = bytearray(part.read_bytes())
    middle = slice(len(data) // 4, len(data) // 2)
    data[middle] = bytes(b ^ 0x5A for b in data[middle])
    part.write_bytes(bytes(data))


def flipped_bytes_inside(run: Path) -> None:
    """Data pages of the summaries' label sums (what the analysis pages read) scrambled, footer
    and size intact: only found when they are read."""
    _flip_middle(run / "summaries" / "labels.parquet")


def no_summaries(run: Path) -> None:
    """As a run committed before summaries: named with the command that makes them."""
    shutil.rmtree(run / "summaries")


DAMAGE = {f.__name__: f for f in (garbage_manifest, scrambled_vectors, wrong_d_model,
                                  layers_beyond_the_data, flipped_bytes_inside,
                                  no_summaries)}  # fmt: skip


@pytest.fixture
def damaged_store(tiny_store, tmp_path, monkeypatch, request):
    root = tmp_path / "store"
    shutil.copytree(tiny_store["root"], root)
    victim = run_id_named(tiny_store, VICTIM)
    DAMAGE[request.param](root / "runs" / victim)
    monkeypatch.setenv("ACTX_STORE", str(root))
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    return {"root": root, "run_ids": tiny_store["run_ids"], "victim": victim}


@pytest.mark.parametrize("damaged_store", list(DAMAGE), indirect=True)
@pytest.mark.slow
def test_every_page_survives_one_damaged_run(damaged_store):
    victim = damaged_store["victim"]
    healthy = [r for r in damaged_store["run_ids"] if r != victim]
    for page in PAGES:
        at = open_page(page)  # asserts no exception element
        assert "This view failed" not in messages(at), (page, messages(at))
    # Directions and Cross-model over every emotions run: the two healthy ones are drawn.
    emotions = [r for r in damaged_store["run_ids"] if r.startswith("emo-")]
    at = open_page("pages/directions.py", {"runs": emotions})
    models = set(chart(at, "L2 norm")["model"])
    assert len(models) == 2 and not any("gemma" in m for m in models), models
    assert victim in messages(at) or "damaged run" in page_text(at)
    at = open_page("pages/cross_model.py", {"runs": emotions})
    assert not chart(at, "Linear CKA").empty
    at = open_page("pages/pairs.py")
    assert not chart(at, "Mean absolute difference").empty
    # The Runs page: healthy runs in the table; the damaged one either there (its files look
    # fine until read) or in the damaged list with a reason, never both.
    at = open_page("pages/runs.py")
    listed = set(at.dataframe[0].value["run_id"])
    assert set(healthy) <= listed
    damaged = at.dataframe[1].value if len(at.dataframe) > 1 else None
    if victim not in listed:
        assert damaged is not None and list(damaged.columns) == ["folder", "reason"]
        (row,) = damaged[damaged["folder"] == f"runs/{victim}"].itertuples()
        assert row.reason and "Traceback" not in row.reason


@pytest.mark.parametrize("damaged_store", ["garbage_manifest"], indirect=True)
def test_the_runs_page_lists_a_damaged_manifest_with_its_reason(damaged_store):
    at = open_page("pages/runs.py")
    assert "Damaged runs" in [s.value for s in at.subheader]
    damaged = at.dataframe[1].value
    assert damaged["folder"].tolist() == [f"runs/{damaged_store['victim']}"]
    assert "manifest.json is not JSON" in damaged["reason"].iloc[0]
    assert len(at.dataframe[0].value) == 3
    # Said at the top too: the list sits below a long provenance view.
    assert "1 damaged run(s) cannot be read" in at.warning[0].value
    # The analysis pages say how many runs they left out.
    assert "1 damaged run(s) left out" in page_text(open_page("pages/directions.py"))


@pytest.mark.parametrize("damaged_store", ["flipped_bytes_inside"], indirect=True)
def test_a_run_that_fails_while_read_is_one_error_beside_the_others(damaged_store):
    victim = damaged_store["victim"]
    llama = run_id_named(damaged_store, "emo-llama")
    at = open_page("pages/directions.py", {"runs": [llama, victim]})
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and victim in errors[0], errors
    assert chart(at, "L2 norm")["run"].str.startswith("emo-llama").all()
    assert not chart(at, "PCA of the samples").empty  # the layer view uses the healthy run


@pytest.mark.parametrize("damaged_store", ["garbage_manifest"], indirect=True)
def test_a_repaired_run_leaves_the_damaged_list_on_the_next_view(damaged_store, tiny_store):
    """The Runs page's listing is shared by every session (ui.runs_compute), but never one that
    names a damaged run: the view after the repair lists it with the others."""
    assert "Damaged runs" in [s.value for s in open_page("pages/runs.py").subheader]
    victim = damaged_store["victim"]
    original = tiny_store["root"] / "runs" / victim / "manifest.json"
    shutil.copyfile(original, damaged_store["root"] / "runs" / victim / "manifest.json")
    at = open_page("pages/runs.py")
    assert "Damaged runs" not in [s.value for s in at.subheader]
    assert len(at.dataframe[0].value) == len(damaged_store["run_ids"])
