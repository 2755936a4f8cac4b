"""Links that pin what they show, one colour per label, readable tooltips, "open in" links
(AppTest over the tiny store, and copies of it that gain runs; see ui/links.py and ui/charts.py).

A page opened with no query writes every setting it resolved into the URL, and the sidebar's
Copy link gives that URL; a link reopens the same view after newer runs are committed, and a
run that covers only some layers is never a default while a complete one exists. Colours are
read back from the chart specs Streamlit ships to the browser.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from tests.support.synthetic import label_rows, write_run
from tests.ui.apptest import (
    chart,
    chart_spec,
    colour_maps,
    messages,
    open_page,
    page_text,
    run_id_named,
)
from ui import charts, links
from ui.compute import complete_first, run_summaries
from ui.context import StoreView, describe_layers
from ui.controls import default_runs_by_labels

PINNED = {
    "pages/runs.py": {"model", "dataset", "hook", "run"},
    "pages/directions.py": {"runs", "site", "position", "baseline", "hide", "relative", "depth",
                            "detail", "layer", "project", "pca3d"},
    "pages/cross_model.py": {"runs", "site", "position", "baseline", "label", "a", "b"},
    "pages/pairs.py": {"pairs_run", "site", "position", "categories", "layer", "top", "pair"},
}  # fmt: skip


def as_lists(query: dict) -> dict[str, list[str]]:
    return {k: v if isinstance(v, list) else [v] for k, v in query.items()}


def copied_link(at) -> dict[str, list[str]]:
    """The query of the link in the sidebar's Copy link popover (opened, which reruns the page:
    the popover is filled only then)."""
    (code,) = [c.value for c in open_link(at).sidebar.code]
    return parse_qs(urlsplit(code).query, keep_blank_values=True)


def open_link(at):
    """Open the sidebar's Copy link popover, as a click does, and rerun."""
    assert not at.sidebar.code  # closed, it holds nothing
    at.session_state[links.LINK_OPEN] = True
    at.run()
    assert not at.exception, at.exception
    return at


def commit_newer_runs(root: Path, like: dict) -> tuple[str, str]:
    """A newer complete run and a newer 2-layer run of the model and dataset of manifest `like`."""
    rows = label_rows(["anger", "gratitude", "neutral"], 6)
    same = {"model": like["model"], "dataset_name": like["dataset_name"], "d_model": 32,
            "dataset_sha256": like["dataset_sha256"], "n_layers": like["n_layers"],
            "hooks": ("resid_post",)}  # fmt: skip
    complete = write_run(root, "zz-newer-complete", rows, **same)
    partial = write_run(root, "zz-newer-partial", rows, layers=(0, 1), **same)
    return complete, partial


@pytest.fixture
def growing_store(tiny_store, tmp_path, monkeypatch):
    """A copy of the tiny store that a test may commit runs into."""
    root = tmp_path / "store"
    shutil.copytree(tiny_store["root"], root)
    monkeypatch.setenv("ACTX_STORE", str(root))
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    return {"root": root, "run_ids": tiny_store["run_ids"]}


@pytest.mark.slow  # seconds: every page, twice
def test_every_page_pins_what_it_resolved_and_copy_link_gives_it(tiny_env):
    for page, keys in PINNED.items():
        at = open_page(page)
        assert set(at.query_params) == keys, page
        assert copied_link(at) == as_lists(at.query_params), page
        again = open_page(page, at.query_params)  # the link reopens the same view
        assert again.query_params == at.query_params, page
        assert not messages(again) or "link" not in messages(again), page
    emotions = [r for r in tiny_env["run_ids"] if r.startswith("emo-")]
    at = open_page("pages/directions.py")
    assert sorted(at.query_params["runs"]) == sorted(emotions)
    # The detail run is the newest (runs made in the same second may come in either order):
    # the middle of its layers (tiny GPT-2 has 3, the others 4) is the default layer.
    detail = at.query_params["detail"]
    manifest = json.loads((tiny_env["root"] / "runs" / detail / "manifest.json").read_text())
    assert at.query_params["layer"] == str(manifest["n_layers"] // 2)
    assert at.query_params["baseline"] == "neutral"


@pytest.mark.slow  # seconds: real runs committed between page loads
def test_a_link_reopens_its_view_after_newer_runs_are_committed(growing_store):
    pages = ("pages/directions.py", "pages/cross_model.py")
    before = {page: open_page(page).query_params for page in pages}
    llama = run_id_named(growing_store, "emo-llama")
    manifest = json.loads((growing_store["root"] / "runs" / llama / "manifest.json").read_text())
    complete, partial = commit_newer_runs(growing_store["root"], manifest)
    for page in pages:
        fresh = open_page(page).query_params["runs"]
        assert complete in fresh and llama not in fresh, page  # the newest complete run ...
        assert partial not in fresh, page  # ... never one that lacks layers
        at = open_page(page, before[page])
        assert at.query_params == before[page], page  # the link still shows the old runs
        assert at.multiselect(key="runs").value == before[page]["runs"], page
    # A model with only a partial run: that run is its default (nothing better exists).
    view = StoreView(str(growing_store["root"]), ("any",))
    runs = run_summaries(view).frame.set_index("run_id")
    assert list(complete_first(runs.loc[[partial, complete]]).index) == [complete, partial]
    assert partial in default_runs_by_labels(runs.drop(index=[complete, llama]))


def test_a_link_whose_runs_are_gone_says_so(tiny_env):
    bait = "[gone](http://evil.example)"
    at = open_page("pages/directions.py", {"runs": ["emo-deleted-1", bait]})
    text = messages(at)
    assert "'emo-deleted-1'" in text and "this store does not have" in text and "deleted" in text
    assert "[gone](http" not in text and "Traceback" not in page_text(at)
    assert len(at.multiselect(key="runs").value) == 3  # the default, said to be shown instead
    assert "emo-deleted-1" not in str(at.query_params) and "evil" not in str(copied_link(at))
    llama = run_id_named(tiny_env, "emo-llama")
    at = open_page("pages/directions.py", {"runs": [llama, "emo-deleted-1"]})
    assert at.multiselect(key="runs").value == [llama] and "Showing the others" in messages(at)


def test_a_visitors_choice_is_pinned_and_a_stale_pin_replaced_quietly(tiny_env):
    llama, gpt2 = run_id_named(tiny_env, "emo-llama"), run_id_named(tiny_env, "emo-gpt2")
    at = open_page("pages/directions.py", {"runs": [llama]})
    at.select_slider(key="layer").set_value(3).run()
    at.selectbox(key="baseline").set_value("anger").run()
    assert at.query_params["layer"] == "3" and at.query_params["baseline"] == "anger"
    assert copied_link(at)["layer"] == ["3"]
    at.multiselect(key="runs").set_value([gpt2]).run()  # 3 layers: layer 3 is gone
    assert at.query_params["runs"] == gpt2 and at.query_params["layer"] == "1"
    assert at.query_params["baseline"] == "anger"  # a pin the change left valid stays
    assert "link asks for" not in messages(at)  # our own pin, not a link: no warning
    at.multiselect(key="runs").set_value([]).run()
    assert at.query_params["runs"] == "" and "Pick a run" in messages(at)  # pinned by stop()


def test_read_only_pages_pin_and_link_without_server_paths(tiny_env, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    for page in ("pages/runs.py", "pages/directions.py"):
        at = open_page(page)
        assert set(at.query_params) == PINNED[page]
        link = open_link(at).sidebar.code[0].value
        assert str(tiny_env["root"].parent) not in link and "/tmp" not in link


# -- colours, legends, tooltips ------------------------------------------------------------------
def one_colour_per_value(at) -> dict[str, dict[str, str]]:
    """field -> value -> colour over every chart of the page; fails if a value has two."""
    seen: dict[str, dict[str, str]] = {}
    for title, field, mapping in colour_maps(at):
        for value, colour in mapping.items():
            known = seen.setdefault(field, {}).setdefault(value, colour)
            assert known == colour, f"{field} {value!r}: {known} elsewhere, {colour} in {title!r}"
    return seen


def test_a_label_has_one_colour_on_every_chart(tiny_env):
    labels = ["anger", "gratitude", "neutral"]
    expected = charts.label_colours(labels).mapping()
    at = open_page("pages/directions.py", {"baseline": "gratitude", "pca3d": "true"})
    seen = one_colour_per_value(at)
    assert seen["label"] == expected  # lines, histogram, 3-D PCA (Plotly): all from one map
    assert seen["Label"] == expected
    assert len(set(expected.values())) == 3
    at.toggle(key="pca3d").set_value(False).run()
    at.multiselect(key="hide").set_value(["anger"]).run()
    assert one_colour_per_value(at)["label"] == expected  # hiding a label recolours nothing
    seen = one_colour_per_value(open_page("pages/pairs.py"))
    assert seen["category"]["(all pairs)"] == charts.OVERALL
    assert len(set(seen["category"].values())) == 3
    seen = one_colour_per_value(open_page("pages/cross_model.py"))
    assert len(set(seen["model"].values())) == 3


def test_line_styles_are_named_and_tooltips_readable(tiny_env):
    at = open_page("pages/directions.py")
    spec = chart_spec(at, "L2 norm")
    line, points = spec["layer"]
    dash = line["encoding"]["strokeDash"]
    assert dash["legend"]["symbolType"] == "stroke" and dash["title"] == "Model (line)"
    assert [d.rsplit(" (", 1)[1] for d in dash["scale"]["domain"]] == [
        "solid)",
        "dashed)",
        "dotted)",
    ]
    assert "strokeDash" not in points.get("encoding", {})  # the legend shows lines, not dots
    tips = {t["field"]: t.get("title") for t in spec["encoding"]["tooltip"]}
    assert tips["Layer"] == "Layer" and tips["l2_rel"] == "L2 ÷ typical norm"
    assert "depth" not in tips and "n_layers" not in tips  # said once, in the Layer line
    data = chart(at, "L2 norm")
    row = data[data["model"].str.endswith("model-gpt2") & (data["layer"] == 2)].iloc[0]
    assert row["Layer"] == "2 of 3 (depth 1.00)"
    heat = chart_spec(at, "Cosine between label directions at")
    assert all(t.get("title") for t in heat["encoding"]["tooltip"])


# -- open a run in a page ------------------------------------------------------------------------
def test_open_in_gives_each_run_its_pages_and_the_runs_page_links_them(tiny_env):
    view = StoreView(str(tiny_env["root"]), tuple(sorted(tiny_env["run_ids"])))
    runs = run_summaries(view).frame.set_index("run_id")
    llama, pairs = run_id_named(tiny_env, "emo-llama"), run_id_named(tiny_env, "pairs-llama")
    targets = {t.title: t for t in links.open_in(runs, llama)}
    assert set(targets) == {"Directions", "Cross-model", "Query"}
    partner = targets["Cross-model"].query["b"]
    assert runs.loc[partner, "model"] != runs.loc[llama, "model"]
    titles = {t.title for t in links.open_in(runs, pairs)}
    assert titles == {"Directions", "Pairs", "Vectors", "Query"}
    # The Runs page: a link column per page, and buttons for the chosen run.
    at = open_page("pages/runs.py", {"run": llama})
    table = at.dataframe[0].value.set_index("run_id")
    assert table.loc[llama, "open Directions"] == f"directions?runs={llama}"
    assert table.loc[pairs, "open Pairs"] == f"pairs?pairs_run={pairs}"
    assert table.loc[pairs, "open Vectors"] == f"vectors?vec_run={pairs}"
    assert pd.isna(table.loc[llama, "open Vectors"])  # no pairs: no control vectors
    assert table.loc[pairs, "open Query"] == f"query?run={pairs}"
    assert pd.isna(table.loc[llama, "open Pairs"])
    buttons = {b.proto.page: parse_qs(b.proto.query_string) for b in at.get("page_link")}
    assert set(buttons) == {"directions", "cross_model", "query"}
    opened = open_page("pages/cross_model.py", buttons["cross_model"])
    assert opened.multiselect(key="runs").value == [llama, partner]
    assert opened.selectbox(key="a").value == llama and not messages(opened)


def test_a_damaged_run_gets_no_links(tiny_store, tmp_path, monkeypatch):
    root = tmp_path / "store"
    shutil.copytree(tiny_store["root"], root)
    victim = run_id_named(tiny_store, "emo-gemma3")
    (root / "runs" / victim / "manifest.json").write_text("{planted")
    monkeypatch.setenv("ACTX_STORE", str(root))
    at = open_page("pages/runs.py")
    table = at.dataframe[0].value
    assert victim not in set(table["run_id"]) and table["open Directions"].notna().all()
    assert not any(victim in str(b.proto.query_string) for b in at.get("page_link"))


# -- helpers on their own ------------------------------------------------------------------------
def test_colour_maps_are_fixed_by_the_full_list():
    colours = charts.label_colours(["neutral", "anger", "gratitude"])
    assert colours.values == ("anger", "gratitude", "neutral")
    assert colours.styles == charts.PALETTE[:3]
    drawn = colours.drawn(["neutral", "anger"])  # a legend lists what is drawn, same colours
    assert drawn.mapping() == {"anger": charts.PALETTE[0], "neutral": charts.PALETTE[2]}
    extra = colours.drawn(["surprise"])  # a value the list lacks still gets its own colour
    assert extra.mapping()["surprise"] == charts.PALETTE[3]
    pairs = charts.pair_colours(["b", "a", "c"])
    assert pairs.values == ("a · b", "a · c", "b · c")
    many = charts.colours_for([f"l{i}" for i in range(25)])
    assert many.styles[20] == many.styles[0] and len(set(many.styles)) == 20


def test_layers_are_described_for_people():
    assert describe_layers(range(30), 30) == "all 30"
    assert describe_layers([0, 1], 30) == "2 of 30: 0-1"
    assert describe_layers([8, 0, 4, 5], 30) == "4 of 30: 0, 4-5, 8"


def test_pages_stop_through_links_so_their_pins_are_written():
    for page in Path(__file__).resolve().parents[2].glob("pages/*.py"):
        text = page.read_text()
        if "controls." in text or "links." in text:  # pages that pin
            assert "st.stop()" not in text, f"{page.name}: use links.stop() (see ui/links.py)"
