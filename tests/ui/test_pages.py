"""AppTest for the analysis pages (and Runs) over stores made by the real extraction code.

Each page is opened through app.py's navigation. Tests change a widget and check that what is
drawn changes, by reading the data Streamlit ships inside each Vega-Lite chart; they also check
the on-page messages for unsuitable selections (never an exception). The `tiny_store` fixture
(tests/conftest.py) holds emotions on tiny llama / gemma3 / gpt2 and minimal pairs on llama with
positions last/mean/all; synthetic stores (tests/support/synthetic.py) cover the other shapes.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import numpy as np
import pytest

from tests.support.synthetic import label_rows, pair_rows, write_run
from tests.ui.apptest import chart, chart_spec, charts, messages, open_page, run_id_named


# -- directions --------------------------------------------------------------------------------
def test_directions_default_view_draws_every_chart(tiny_env):
    at = open_page("pages/directions.py")
    # All three emotion runs (one per model), none of the pairs run.
    assert len(at.multiselect(key="runs").value) == 3
    assert at.selectbox(key="baseline").value == "neutral"
    norms = chart(at, "L2 norm of each direction")
    assert set(norms["label"]) == {"anger", "gratitude"}
    assert norms["model"].nunique() == 3
    for title in ("L1 norm", "Split-half stability", "Held-out separability",
                  "Cosine between label directions, across", "Cosine between label directions at",
                  "Samples projected", "PCA of the samples"):  # fmt: skip
        assert not chart(at, title).empty, title
    stability = chart(at, "Split-half stability")  # each chart carries the columns it draws
    assert stability["stability"].between(-1, 1).all()


def test_directions_widgets_change_the_charts(tiny_env):
    at = open_page("pages/directions.py")
    at.selectbox(key="baseline").set_value("anger").run()
    assert set(chart(at, "L2 norm")["label"]) == {"gratitude", "neutral"}
    assert chart_spec(at, "L2 norm")["encoding"]["y"]["field"] == "l2_rel"
    at.toggle(key="relative").set_value(False).run()
    assert chart_spec(at, "L2 norm")["encoding"]["y"]["field"] == "l2"
    before = chart(at, "PCA of the samples")
    at.select_slider(key="layer").set_value(0).run()
    assert "layer 0" in next(t for t in charts(at) if t.startswith("PCA"))
    assert not chart(at, "PCA of the samples")["pc1"].equals(before["pc1"])
    at.multiselect(key="hide").set_value(["gratitude"]).run()
    assert set(chart(at, "L2 norm")["label"]) == {"neutral"}
    at.toggle(key="pca3d").set_value(True).run()
    assert len(at.get("plotly_chart")) == 1
    assert not at.exception


def _mean_projection(at, target: str) -> tuple[float, float]:
    """Mean projection of the target's samples and of every other sample."""
    frame = chart(at, "Samples projected")
    mine = frame["label"] == target
    return frame.loc[mine, "projection"].mean(), frame.loc[~mine, "projection"].mean()


@pytest.mark.slow
def test_directions_projection_centred_and_one_vs_rest(tiny_env):
    llama = run_id_named(tiny_env, "emo-llama")  # every sample is kept: means are exact
    at = open_page("pages/directions.py", {"runs": [llama], "project": "anger"})
    frame = chart(at, "Samples projected")
    by_label = frame.groupby("label")["projection"].mean()
    assert abs(by_label["neutral"]) < 1e-6 and abs(by_label["anger"] - 1.0) < 1e-6
    assert frame["projection"].abs().max() < 100  # in the direction's lengths, not raw units
    spec = chart_spec(at, "Samples projected")
    assert spec["mark"]["filled"] is False  # outlines, not translucent fills
    assert "0 = mean of neutral, 1 = mean of anger" in spec["encoding"]["x"]["title"]
    assert "Baseline: neutral" in " ".join(c.value for c in at.caption)
    # One vs rest: every label gets a direction; the others' samples sit at 0 on average.
    at.selectbox(key="baseline").set_value("(every other label)").run()
    assert set(chart(at, "L2 norm")["label"]) == {"anger", "gratitude", "neutral"}
    assert "(vs every other label)" in chart_spec(at, "L2 norm")["title"]
    mine, others = _mean_projection(at, "anger")
    assert abs(mine - 1.0) < 1e-6 and abs(others) < 1e-6
    at.selectbox(key="project").set_value("neutral").run()  # the former baseline has one too
    mine, others = _mean_projection(at, "neutral")
    assert abs(mine - 1.0) < 1e-6 and abs(others) < 1e-6
    assert "one vs rest" in " ".join(c.value for c in at.caption)
    assert at.query_params["baseline"] == "(every other label)" and not at.exception


def test_directions_view_comes_from_the_url(tiny_env):
    llama = run_id_named(tiny_env, "emo-llama")
    at = open_page(
        "pages/directions.py",
        {"runs": [llama], "baseline": "gratitude", "layer": "1", "site": "mlp_out"},
    )
    assert at.multiselect(key="runs").value == [llama]
    assert at.selectbox(key="baseline").value == "gratitude"
    assert at.selectbox(key="site").value == "mlp_out"
    assert at.select_slider(key="layer").value == 1
    assert chart(at, "L2 norm")["model"].nunique() == 1
    assert at.query_params["baseline"] == "gratitude"


def test_directions_messages_for_unsuitable_selections(tiny_env):
    llama, pairs = run_id_named(tiny_env, "emo-llama"), run_id_named(tiny_env, "pairs-llama")
    at = open_page("pages/directions.py", {"runs": [llama, pairs]})
    assert "different datasets" in messages(at)
    assert not charts(at)
    at = open_page("pages/directions.py", {"runs": [llama], "baseline": "joy", "layer": "99"})
    text = messages(at)
    assert "'joy'" in text and "'99'" in text
    assert at.selectbox(key="baseline").value == "neutral"
    assert charts(at)  # the default view is still drawn
    at.multiselect(key="runs").set_value([]).run()
    assert "Pick a run" in messages(at)


def test_directions_one_label_and_missing_neutral(synthetic_env):
    write_run(synthetic_env, "one-label", label_rows(["only"], 6), dataset_name="one")
    write_run(synthetic_env, "no-neutral", label_rows(["joy", "fear", "calm"], 6))
    at = open_page("pages/directions.py", {"runs": ["one-label"]})
    assert "one label" in messages(at)
    assert not at.exception and not charts(at)
    at = open_page("pages/directions.py", {"runs": ["no-neutral"]})
    assert "No `neutral` label" in messages(at)
    assert at.selectbox(key="baseline").value == "calm"
    assert set(chart(at, "L2 norm")["label"]) == {"fear", "joy"}


def test_every_analysis_page_handles_an_empty_store(synthetic_env):
    for page in ("pages/directions.py", "pages/cross_model.py", "pages/pairs.py"):
        at = open_page(page)
        assert "No committed runs" in messages(at), page


# -- cross-model -------------------------------------------------------------------------------
def best_is_the_row_maximum(frame) -> None:
    """One ring per layer of A, on the largest value of its row."""
    rings = frame[frame["best"]].set_index("layer_a")["value"]
    assert sorted(rings.index) == sorted(frame["layer_a"].unique())
    assert (rings == frame.groupby("layer_a")["value"].max()).all()


def test_cross_model_default_view_and_widgets(tiny_env):
    at = open_page("pages/cross_model.py")
    assert len(at.multiselect(key="runs").value) == 3
    strength = chart(at, "Strength of the")
    assert strength["depth"].between(0, 1).all() and strength["model"].nunique() == 3
    for title in ("RSA", "Linear CKA", "Cosine after orthogonal Procrustes", "Raw cosine"):
        frame = chart(at, title)
        assert {"layer_a", "layer_b", "value"} <= set(frame.columns), title
        best_is_the_row_maximum(frame)
        assert "best" in chart_spec(at, title)["layer"][1]["transform"][0]["filter"]
    cka = chart(at, "Linear CKA")
    assert cka["value"].between(0, 1).all()
    assert not at.dataframe  # no top-5 tables: the best matches are drawn on the heatmaps
    # A chance level at every ring of CKA and Procrustes, below the real value, and said.
    for title in ("Linear CKA", "Cosine after orthogonal Procrustes"):
        rings = chart(at, title).query("best")
        assert rings["chance"].notna().all() and (rings["chance"] < rings["value"]).all()
    assert "shuffles, the chance level" in " ".join(c.value for c in at.caption)
    spec = chart_spec(at, "Linear CKA")
    name_a = at.selectbox(key="a").value.split("-")[1]
    assert name_a in spec["encoding"]["y"]["title"]  # model names on the axes
    # "Direction of" changes the lines (and raw cosine), not CKA.
    at.selectbox(key="label").set_value("gratitude").run()
    assert "gratitude" in next(t for t in charts(at) if t.startswith("Strength"))
    assert chart(at, "Linear CKA")["value"].equals(cka["value"])
    # A = llama (4 layers), B = the 3-layer gpt2 run: the heatmaps go from 4x4 to 4x3.
    llama, gpt2 = run_id_named(tiny_env, "emo-llama"), run_id_named(tiny_env, "emo-gpt2")
    at.selectbox(key="a").set_value(llama)
    at.selectbox(key="b").set_value(gpt2).run()
    assert sorted(chart(at, "Linear CKA")["layer_b"].unique()) == [0, 1, 2]
    assert sorted(chart(at, "Linear CKA")["layer_a"].unique()) == [0, 1, 2, 3]
    at.button(key="swap").click().run()
    assert at.selectbox(key="a").value == gpt2 and at.selectbox(key="b").value == llama
    assert at.query_params["a"] == gpt2 and at.query_params["b"] == llama
    assert sorted(chart(at, "Linear CKA")["layer_a"].unique()) == [0, 1, 2]
    assert not at.exception


@pytest.mark.slow
def test_cross_model_same_run_on_both_sides_is_explained(tiny_env):
    llama = run_id_named(tiny_env, "emo-llama")
    at = open_page("pages/cross_model.py", {"a": llama, "b": llama})
    assert "same run" in messages(at) and "with each other" in messages(at)
    cka = chart(at, "Linear CKA")
    diagonal = cka[cka["layer_a"] == cka["layer_b"]]
    assert len(diagonal) == 4 and (diagonal["value"] > 0.999).all()
    best_is_the_row_maximum(cka)


@pytest.mark.slow
def test_cross_model_chance_level_on_structured_and_unstructured_samples(synthetic_env):
    rows = label_rows(["neutral", "joy", "fear"], 12)
    write_run(synthetic_env, "m1", rows, d_model=16, model="m-one", seed=1, signal=3.0)
    write_run(synthetic_env, "m2", rows, d_model=20, model="m-two", seed=2, signal=3.0)
    at = open_page("pages/cross_model.py", {"a": "m1", "b": "m2"})
    rings = chart(at, "Linear CKA").query("best")
    assert (rings["value"] > rings["chance"] + 0.2).all()  # shared label structure
    flat = label_rows(["neutral", "joy", "fear"], 12, dataset="flat")
    write_run(synthetic_env, "f1", flat, d_model=16, model="m-one", seed=3, signal=0.0,
              dataset_name="flat")  # fmt: skip
    write_run(synthetic_env, "f2", flat, d_model=20, model="m-two", seed=4, signal=0.0,
              dataset_name="flat")  # fmt: skip
    at = open_page("pages/cross_model.py", {"runs": ["f1", "f2"], "a": "f1", "b": "f2"})
    cka = chart(at, "Linear CKA")
    # Independent noise: every cell is a chance value, so the rings sit near their chance level.
    assert (cka["value"] - cka["chance"].mean()).abs().max() < 0.15


def test_cross_model_view_comes_from_the_url(tiny_env):
    llama, gemma = run_id_named(tiny_env, "emo-llama"), run_id_named(tiny_env, "emo-gemma3")
    at = open_page(
        "pages/cross_model.py", {"runs": [gemma, llama], "label": "gratitude", "b": llama}
    )
    assert at.multiselect(key="runs").value == [gemma, llama]
    assert at.selectbox(key="label").value == "gratitude"
    assert at.selectbox(key="a").value == gemma and at.selectbox(key="b").value == llama


def test_cross_model_messages(tiny_env):
    llama, pairs = run_id_named(tiny_env, "emo-llama"), run_id_named(tiny_env, "pairs-llama")
    at = open_page("pages/cross_model.py", {"runs": [llama]})
    assert "at least two runs" in messages(at)
    at = open_page("pages/cross_model.py", {"runs": [llama, pairs]})
    assert "different datasets" in messages(at)
    gemma = run_id_named(tiny_env, "emo-gemma3")
    at = open_page("pages/cross_model.py", {"runs": [llama, gemma], "a": gemma})
    assert "same run" in messages(at) and chart(at, "Linear CKA") is not None


def test_cross_model_different_widths_and_two_labels(synthetic_env):
    rows = label_rows(["neutral", "joy"], 8)
    write_run(synthetic_env, "narrow", rows, d_model=8, model="m-narrow")
    write_run(synthetic_env, "wide", rows, d_model=12, n_layers=5, model="m-wide")
    at = open_page("pages/cross_model.py")
    text = messages(at)
    assert "needs equal widths" in text and "RSA needs at least 3 labels" in text
    assert set(chart(at, "Linear CKA")["layer_b"]) == set(range(5)) or set(
        chart(at, "Linear CKA")["layer_a"]
    ) == set(range(5))
    assert not at.exception


# -- pairs -------------------------------------------------------------------------------------
def test_pairs_default_view_and_widgets(tiny_env):
    at = open_page("pages/pairs.py")
    assert at.selectbox(key="pairs_run").value == run_id_named(tiny_env, "pairs-llama")
    per_layer = chart(at, "Mean absolute difference")
    assert set(per_layer["category"]) == {"(all pairs)", "grammar_error", "meaning_change"}
    assert not chart(at, "Relative to the activation norm").empty
    at.multiselect(key="categories").set_value(["grammar_error"]).run()
    assert set(chart(at, "Mean absolute")["category"]) == {"(selected pairs)", "grammar_error"}
    # Dimensions: the table and per-layer view follow the layer slider.
    top_before = at.dataframe[0].value["dimension"].tolist()
    at.select_slider(key="layer").set_value(0).run()
    assert "layer 0" in at.markdown[0].value or any("layer 0" in m.value for m in at.markdown)
    assert at.dataframe[0].value["dimension"].tolist() != top_before
    at.select_slider(key="top").set_value(5).run()
    assert len(at.dataframe[0].value) == 5
    # One pair token by token (the run has position `all`).
    tokens = chart(at, "||b - a|| per token")
    at.selectbox(key="pair").set_value("p3").run()
    assert not chart(at, "||b - a|| per token")["distance"].equals(tokens["distance"])
    assert not at.exception


def test_pairs_categories_filter_every_table_and_chart(tiny_env):
    at = open_page("pages/pairs.py", {"layer": "1", "top": "5"})
    tables = [at.dataframe[i].value for i in (0, 1)]  # most and least changed dimensions
    heat = chart(at, "Most changed: score")
    assert len(at.dataframe[2].value) == 6  # the pair table: every pair
    at.multiselect(key="categories").set_value(["grammar_error"]).run()
    per_layer = chart(at, "Relative to the activation norm").pivot(
        index="layer", columns="category", values="relative"
    )
    # One category chosen: the line over the chosen pairs is that category's line.
    assert np.allclose(per_layer["(selected pairs)"], per_layer["grammar_error"])
    for i in (0, 1):
        assert not np.allclose(at.dataframe[i].value["score"], tables[i]["score"]), i
    assert not chart(at, "Most changed: score")["score"].equals(heat["score"])
    pairs = at.dataframe[2].value
    assert set(pairs["category"]) == {"grammar_error"} and len(pairs) == 3
    assert {o.split(":")[0] for o in at.selectbox(key="pair").options} == set(pairs["pair_id"])
    assert "Over the 3 pairs" in " ".join(c.value for c in at.caption)
    at.multiselect(key="categories").set_value([]).run()
    assert "Every category is hidden" in messages(at) and not at.exception


def test_pairs_search_finds_a_pair_and_a_click_picks_it(tiny_env):
    at = open_page("pages/pairs.py")
    at.text_input(key="pair_search").input("DOG sat on mat 4").run()
    table = at.dataframe[2]
    assert table.value["pair_id"].tolist() == ["p4"]
    at.text_input(key="pair_search").input("mat 4 grammar").run()
    assert at.dataframe[2].value.empty  # p4 is a meaning change: every word must match
    at.text_input(key="pair_search").input("[.*(").run()  # a pattern is plain text
    assert at.dataframe[2].value.empty and not at.exception
    at.text_input(key="pair_search").input("mat 4").run()
    at.session_state[at.dataframe[2].key] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert at.selectbox(key="pair").value == "p4"
    assert at.query_params["pair"] == "p4"
    assert "mat 4" in " ".join(m.value for m in at.markdown)
    # The click is spent: picking another pair in the box is not undone on the next run.
    at.selectbox(key="pair").set_value("p1").run()
    at.run()
    assert at.selectbox(key="pair").value == "p1"


def test_pairs_one_pair_per_layer_without_an_all_run(synthetic_env):
    from store import Store

    write_run(synthetic_env, "pairs-no-all", pair_rows(4), dataset_name="minimal_pairs")
    at = open_page("pages/pairs.py", {"pair": "p2"})
    drawn = chart(at, "This pair per layer")
    assert set(drawn["pairs"]) == {"this pair", "median of the chosen pairs"}
    X, samples, _ = Store(synthetic_env).layer_vectors("pairs-no-all", "resid_post", "last")
    a, b = (X[:, samples.index[samples["id"] == f"p2{side}"][0]] for side in "ab")
    expected = np.linalg.norm(b - a, axis=1) / (
        0.5 * (np.linalg.norm(a, axis=1) + np.linalg.norm(b, axis=1))
    )
    mine = drawn[drawn["pairs"] == "this pair"].sort_values("layer")["relative"]
    assert np.allclose(mine, expected, rtol=1e-5)


def test_pairs_view_comes_from_the_url(tiny_env):
    at = open_page("pages/pairs.py", {"pair": "p2", "layer": "1", "position": "mean"})
    assert at.selectbox(key="pair").value == "p2"
    assert at.select_slider(key="layer").value == 1
    assert at.selectbox(key="position").value == "mean"


def test_pairs_without_an_all_run_says_how_to_make_one(synthetic_env):
    write_run(synthetic_env, "pairs-no-all", pair_rows(4), dataset_name="minimal_pairs")
    at = open_page("pages/pairs.py")
    assert "position `all`" in messages(at)
    command = at.code[0].value
    assert command.startswith("python -m extraction run --model synthetic-model")
    assert "--dataset minimal_pairs" in command and "--positions all" in command
    assert not chart(at, "Mean absolute").empty  # the rest of the page is still there
    (link,) = at.get("page_link")
    assert link.proto.page == "new_run"
    query = parse_qs(link.proto.query_string)
    assert query["model_other"] == ["synthetic-model"] and query["positions"] == ["all"]
    assert query["dataset_pick"] == ["minimal_pairs"] and query["hooks"] == ["resid_post"]


def test_pairs_offers_no_run_link_in_read_only_mode(synthetic_env, monkeypatch):
    write_run(synthetic_env, "pairs-no-all", pair_rows(4), dataset_name="minimal_pairs")
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    at = open_page("pages/pairs.py")
    assert "position `all`" in messages(at) and at.code
    assert not at.get("page_link")


def test_pairs_messages(synthetic_env):
    write_run(synthetic_env, "emotions-only", label_rows(["a", "b"], 4))
    at = open_page("pages/pairs.py")
    assert "No run in this store has minimal pairs" in messages(at)
    # Sides of different token counts: no per-token map, and a message saying why.
    write_run(synthetic_env, "pairs-uneven", pair_rows(3), positions=("last", "all"),
              n_tokens=[3, 4] * 3)  # fmt: skip
    at = open_page("pages/pairs.py", {"pairs_run": "pairs-uneven"})
    assert "token count" in messages(at)
    assert not at.exception


# -- runs --------------------------------------------------------------------------------------
def test_runs_page_filters(tiny_env):
    at = open_page("pages/runs.py")
    assert len(at.dataframe[0].value) == 4
    at.multiselect(key="dataset").set_value(["minimal_pairs"]).run()
    assert at.dataframe[0].value["name"].tolist() == ["pairs-llama"]
    assert not at.exception
