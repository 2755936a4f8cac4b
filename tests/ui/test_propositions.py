"""The Propositions page (AppTest) on a real tiny generation run of A / B pairs: the per-layer
cosine per category equals the stored states', answers side by side as text, downloads equal to
`python -m store export`; a hostile URL, a damaged or planted run, read-only mode, and a store
without answers (the command that makes them, never a traceback)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from settings.run import ANSWER_POSITION
from store import open_store
from store.export import export_vectors
from tests.support.synthetic import pair_rows, write_run
from tests.ui.apptest import (
    chart,
    colour_maps,
    messages,
    open_page,
    page_text,
    record_downloads,
    shown,
)
from tests.ui.test_damaged_runs import flipped_vector_bytes, garbage_manifest
from tests.ui.test_hostile_urls import HOSTILE

PAGE = "pages/propositions.py"
KEYS = ("prop_run", "site", "position", "categories", "layer", "pair")
BAIT = "[session expired](http://evil.example)"


def use_copy(answers_store: dict, root: Path, monkeypatch) -> dict:
    """A copy of the answers store at `root`, in ACTX_STORE. A new folder for each damage: the
    page's cached reads are keyed by the store's folder and runs (committed runs never change)."""
    shutil.copytree(answers_store["root"], root)
    monkeypatch.setenv("ACTX_STORE", str(root))
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    run_id = answers_store["run_id"]
    return {"root": root, "run_id": run_id, "run": root / "runs" / run_id}


@pytest.fixture
def store_copy(answers_store, tmp_path, monkeypatch) -> dict:
    return use_copy(answers_store, tmp_path / "store", monkeypatch)


def _cosines(root: Path, run_id: str, layer: int) -> dict[str, float]:
    """Mean A-B cosine per category at `layer`, straight from the store."""
    X, samples, layers = open_store(root).layer_vectors(run_id, "resid_post", ANSWER_POSITION)
    V = X[layers.index(layer)]
    by_id = dict(zip(samples["id"], range(len(samples)), strict=True))
    per = {}
    for i, category in enumerate(["politics", "science", "politics", "science"]):
        a, b = V[by_id[f"q{i}a"]], V[by_id[f"q{i}b"]]
        per.setdefault(category, []).append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return {c: float(np.mean(v)) for c, v in per.items()}


@pytest.mark.slow
def test_the_page_shows_answers_side_by_side_and_the_cosine_per_layer(store_copy, monkeypatch):
    made = record_downloads(monkeypatch)
    at = open_page(PAGE)
    assert at.query_params["prop_run"] == store_copy["run_id"]
    assert at.query_params["position"] == ANSWER_POSITION  # the default: the answer states
    # How the answers were made and which states are pooled (the fixture: --generate 2, 3 tokens).
    (settings,) = [shown(c.value) for c in at.caption if c.value.startswith("Answers")]
    assert "up to 3 new tokens, greedy" in settings
    assert "mean of the first 2 answer states, 'producing'" in settings
    curve = chart(at, "Cosine between the A and B states")
    layer = int(at.select_slider(key="layer").value)
    expected = _cosines(store_copy["root"], store_copy["run_id"], layer)
    at_layer = curve[curve["layer"] == layer].set_index("category")["cosine"]
    for category, cosine in expected.items():
        assert at_layer[category] == pytest.approx(cosine, abs=1e-5)
    assert at_layer["(all pairs)"] == pytest.approx(np.mean(list(expected.values())), abs=1e-5)
    (colours,) = [c for _, field, c in colour_maps(at) if field == "category"]
    assert colours["(all pairs)"] == "#222222" and colours["politics"] != colours["science"]
    # The answers as the store has them, A beside B.
    samples = open_store(store_copy["root"]).samples(store_copy["run_id"]).set_index("id")
    table = at.dataframe[0].value.set_index("pair_id")
    assert table.loc["q1", "answer_a"] == samples.loc["q1a", "answer"]
    assert table.loc["q1", "answer_b"] == samples.loc["q1b", "answer"]
    # A category filter narrows chart and table; it is pinned in the URL.
    at.multiselect(key="categories").set_value(["science"]).run()
    assert set(chart(at, "Cosine between")["category"]) == {"(all pairs)", "science"}
    assert set(at.dataframe[0].value["category"]) == {"science"}
    assert at.query_params["categories"] in ("science", ["science"])
    # Downloads: what `python -m store export` writes for this layer.
    run_id = store_copy["run_id"]
    export = export_vectors(open_store(store_copy["root"]), run_id, "resid_post", layer,
                            ANSWER_POSITION, ("id", "label"), "csv")  # fmt: skip
    stem = f"{run_id}-resid_post-L{layer}-{ANSWER_POSITION}"
    assert made[f"{stem}.csv"]() == export.data
    assert {f"{stem}.npy", f"{stem}.parquet"} <= set(made)


@pytest.mark.slow
def test_hostile_url_values_are_dropped_with_a_plain_warning(store_copy):
    for name in ("inf", "markdown", "huge", "dot dot"):
        hostile = HOSTILE[name][: 480_000 // len(KEYS)]
        at = open_page(PAGE, dict.fromkeys(KEYS, hostile))
        assert not chart(at, "Cosine between").empty, name
        text = messages(at)
        assert "The link" in text and len(text) < 400 * len(KEYS), name
        assert "[session expired](" not in text
        assert at.query_params["prop_run"] == store_copy["run_id"]


@pytest.mark.slow
def test_a_planted_answer_is_text_and_a_damaged_run_is_one_message(
    answers_store, tmp_path, monkeypatch
):
    store_copy = use_copy(answers_store, tmp_path / "planted", monkeypatch)
    samples = store_copy["run"] / "samples.parquet"
    table = pq.read_table(samples).to_pandas()
    table.loc[table["id"] == "q0a", "answer"] = f"{BAIT} <script>alert(1)</script>"
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), samples)
    at = open_page(PAGE, {"pair": "q0"})
    assert [t.value for t in at.text][0].startswith(BAIT)  # shown as is, as plain text
    assert "evil.example" not in "".join(m.value for m in at.markdown)
    store_copy = use_copy(answers_store, tmp_path / "flipped", monkeypatch)
    flipped_vector_bytes(store_copy["run"])
    at = open_page(PAGE)
    assert at.error and store_copy["run_id"] in at.error[0].value
    assert "Traceback" not in page_text(at)
    store_copy = use_copy(answers_store, tmp_path / "garbage", monkeypatch)
    garbage_manifest(store_copy["run"])
    at = open_page(PAGE)  # the run is left out, and said to be
    assert "1 damaged run(s) left out" in page_text(at)


@pytest.mark.slow
def test_read_only_shows_the_view_and_downloads_without_server_paths(store_copy, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    at = open_page(PAGE)
    assert not chart(at, "Cosine between").empty
    assert len(at.get("download_button")) == 3
    assert str(store_copy["root"]) not in page_text(at)


@pytest.mark.slow
def test_a_store_without_answers_names_the_run_to_make(synthetic_env, monkeypatch):
    write_run(synthetic_env, "pairs-plain", pair_rows(4), dataset_name="minimal_pairs")
    at = open_page(PAGE)
    (command,) = [c.value for c in at.code]
    assert command == (
        "python -m extraction run --model smollm2-135m --dataset propositions --generate 3 "
        f"--store {synthetic_env}"
    )
    assert not at.exception and not at.error
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    assert "--store store" in shown(open_page(PAGE).code[0].value)


def test_open_in_offers_propositions_for_answer_runs_only(store_copy):
    from ui import links

    frame = pd.DataFrame(
        [{"run_id": "gen", "labels": ("A", "B"), "has_pairs": True, "dataset_sha256": "x",
          "model": "m", "positions": ("last", ANSWER_POSITION), "layers": (0,), "n_layers": 1},
         {"run_id": "plain", "labels": ("A", "B"), "has_pairs": True, "dataset_sha256": "x",
          "model": "m", "positions": ("last",), "layers": (0,), "n_layers": 1}]
    ).set_index("run_id")  # fmt: skip
    titles = {t.title: t for t in links.open_in(frame, "gen")}
    assert titles["Propositions"].relative_url() == "propositions?prop_run=gen"
    assert "Propositions" not in {t.title for t in links.open_in(frame, "plain")}
