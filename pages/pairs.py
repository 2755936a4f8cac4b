"""Pairs page: what a one-token edit does inside the model, layer by layer.

For a minimal-pairs run (samples with a pair_id and sides a / b; differences are b - a): the
mean absolute difference per layer and category (raw or relative to activation norm); the
dimensions the edit moves consistently much (or little) compared with their natural spread, as a
ranked table (with the signed change and how many pairs agree in sign) and a per-layer view;
every part follows the chosen categories. One pair, picked from a searchable table: its distance
per layer from the pooled vectors, and per token and layer, which needs a run captured with
position `all` (if there is none, the page gives the command and a link to
the New run page with the settings filled in).
Computation: ui.pairs_compute.
"""

import streamlit as st

from store import StoreError
from ui import charts, controls, downloads, links
from ui.compute import Unsuitable, run_title
from ui.context import current_view, plain, read_only, short
from ui.pairs_compute import (
    DIMENSION_COLUMNS,
    MEDIAN_PAIR,
    THIS_PAIR,
    all_positions_run_of,
    dimension_caption,
    dimension_layers,
    dimension_table,
    extraction_command,
    found_pairs,
    new_run_prefill,
    overall_name,
    pair_layers,
    pair_profile,
    pair_texts,
    per_layer_selected,
    selected_pairs,
    token_map,
)

st.title("Minimal pairs")
view = current_view()
runs = controls.runs_or_stop(view)
pair_runs, first = controls.pair_runs(runs)
if not pair_runs:
    st.info(
        "No run in this store has minimal pairs (samples with a pair_id and sides a / b). Make "
        f"one with `python -m extraction run --model smollm2-135m --dataset minimal_pairs "
        f"--store {view.shown()}`."
    )
    links.stop()

columns = controls.row(3)
run_id = controls.pick_one(columns[0], "Run", pair_runs, key="pairs_run", what="run",
                           index=first)  # fmt: skip
chosen = controls.chosen_runs(runs, [run_id])
hook, position = controls.pick_site(chosen, columns[1:3])
try:
    profile = pair_profile(view, run_id, hook, position)
    manifest = view.store.manifest(run_id)
except (Unsuitable, StoreError) as exc:
    controls.show_problem(exc)
    links.stop()

categories = list(profile.categories)
shown = controls.pick_many(st, "Categories", categories, key="categories", what="category",
                           default=categories)  # fmt: skip
if not shown:
    st.info("Every category is hidden: pick at least one to see its pairs.")
    links.stop()
per_layer = per_layer_selected(profile, shown)
colours = charts.category_colours(categories, overall=overall_name(profile, shown))
left, right = controls.row(2)
charts.draw(
    left, charts.lines,
    per_layer, "layer", "mean_abs", "category", x_title="layer", y_title="mean |b - a|",
    title="Mean absolute difference per dimension, b - a", tooltip=("n_pairs",),
    colours=colours,
)  # fmt: skip
charts.draw(
    right, charts.lines,
    per_layer, "layer", "relative", "category", x_title="layer", tooltip=("n_pairs",),
    y_title="mean ||b - a|| ÷ mean norm", title="Relative to the activation norm",
    colours=colours,
)  # fmt: skip

controls.subsample_note(len(profile.pairs), profile.n_pairs_total, "Pair statistics", "pairs")
st.subheader("Dimensions")
columns = controls.row(2)
layer = controls.pick_layer(profile.layers, columns[0])
top = controls.pick_count(columns[1], "How many", [5, 10, 15, 20, 30, 50], value=10, key="top")
n_chosen = int(selected_pairs(profile, shown).sum())
tables = {True: dimension_table(profile, layer, top, True, shown),
          False: dimension_table(profile, layer, top, False, shown)}  # fmt: skip
st.caption(dimension_caption(n_chosen, profile.score.shape[1], tables[True]["score"].iloc[0]))
columns = st.columns(2)
for column, largest, title in ((columns[0], True, "Most changed"), (columns[1], False, "Least")):
    table = tables[largest]
    column.markdown(f"**{title} at layer {layer}**")
    controls.show_table(column, table, height=35 * (len(table) + 1) + 3,
                        column_config=DIMENSION_COLUMNS)  # fmt: skip
    charts.draw(
        column, charts.heatmap,
        dimension_layers(profile, table["dimension"].tolist(), shown), "dimension", "layer",
        "score", x_title="dimension (ranked at the chosen layer)", y_title="layer",
        title=f"{title}: score at every layer",
    )  # fmt: skip

downloads.pair_downloads(view, run_id, hook, position, layer)  # b - a and the vectors

st.subheader("One pair")
texts = pair_texts(profile, shown)  # pair id -> its texts and category, shared by every view
words = st.text_input("Search pairs", placeholder="a word of either sentence, a category or id",
                      max_chars=200, key="pair_search")  # fmt: skip
found = found_pairs(profile, shown, words)
st.caption(f"{len(found)} of {len(texts)} pairs match. Click a row to pick its pair.")


def pair_label(pair: str) -> str:
    text = texts.get(pair)
    return f"{pair}: {short(text['text_a'] + ' → ' + text['text_b'] if text else '', 80)}"


pair_id = controls.pick_in_table(found, "pair_id", "Pair", list(texts), key="pair", what="pair",
                                 format_func=pair_label)  # fmt: skip
chosen_pair = texts[str(pair_id)]
st.markdown(
    f"**a:** {plain(chosen_pair['text_a'])}  \n**b:** {plain(chosen_pair['text_b'])}"
    f"  \nCategory: {plain(chosen_pair['category'])}"
)
charts.draw(
    st, charts.lines,
    pair_layers(profile, pair_id, shown), "layer", "relative", "pairs", x_title="layer",
    y_title="||b - a|| ÷ mean norm", tooltip=("distance",),
    title=f"This pair per layer ({position} vectors of {hook}), beside the median pair",
    colours=charts.colours_for([THIS_PAIR, MEDIAN_PAIR]),
)  # fmt: skip
all_run = all_positions_run_of(view, run_id, hook)
if all_run is None:
    st.info(
        f"The per-token view needs a run of {plain(runs.at[run_id, 'model'])} on this dataset "
        f"captured with position `all` (hook {hook}); there is none in this store. Start one with:"
    )
    st.code(extraction_command(manifest, hook, view.path), language="bash", wrap_lines=True)
    prefill = None if read_only() else new_run_prefill(manifest, hook, view.path)
    if prefill:
        st.page_link(
            "pages/new_run.py", label="or on the New run page, settings filled in",
            icon=":material/play_circle:", query_params=prefill,
        )  # fmt: skip
    links.stop()
try:
    tokens = token_map(view, all_run, hook, pair_id)
except (Unsuitable, StoreError) as exc:
    controls.show_problem(exc)
    links.stop()
tokens = tokens.assign(token=tokens["token_idx"].astype(str) + " " + tokens["token_a"])
charts.draw(
    st, charts.heatmap,
    tokens, "token", "layer", "distance", x_title="token (side a)", y_title="layer",
    title="||b - a|| per token and layer", tooltip=("token_a", "token_b"),
)  # fmt: skip
if all_run != run_id and all_run in runs.index:
    st.caption(f"Tokens from run {plain(run_title(controls.run_row(runs, all_run)))}.")
