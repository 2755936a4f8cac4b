"""Propositions page: how a model answers two framings of one claim, and how alike it is inside.

For a generation run (`--generate N`) of a paired dataset (the built-in `propositions`: sides A
and B of one claim): per layer, the cosine between the A and B states pooled over the first N
answer tokens (`answer_mean`), its mean per category; at a chosen layer, every pair's two
answers side by side with its cosine; one pair's answers in full. A store without such a run gets
the one command that makes it. Computation: ui.propositions_compute. Answers are model output
(or a planted file's text): shown as text and table cells, never as Markdown.
"""

import streamlit as st

from store import StoreError
from ui import charts, controls, downloads, links
from ui.compute import Unsuitable, run_title
from ui.context import current_view, plain
from ui.pairs_compute import ALL_CATEGORIES
from ui.propositions_compute import (
    POSITIONS,
    answer_runs,
    answers_command,
    generation_settings,
    pairs_at_layer,
    proposition_profile,
)

st.title("Propositions")
view = current_view()
runs = controls.runs_or_stop(view)
answered = answer_runs(runs)
if answered.empty:
    st.info(
        "No run in this store has the model's answers to paired prompts (a run made with "
        "`--generate N` on a dataset of A / B pairs). Make one with:"
    )
    st.code(answers_command(view.shown()), language="bash", wrap_lines=True)
    links.stop()

columns = st.columns([3, 1, 1])
run_ids = list(answered.index)
run_id = links.pinned(
    columns[0].selectbox, "Run", run_ids, key="prop_run", what="run", default=run_ids[0],
    format_func=lambda r: run_title(answered.loc[r]),
)  # fmt: skip
chosen = answered.loc[run_id]
st.caption(plain(generation_settings(view, run_id)))
hooks = list(chosen["hooks"])
hook = links.pinned(
    columns[1].selectbox, "Hook", hooks, key="site", what="hook",
    default="resid_post" if "resid_post" in hooks else hooks[0],
    help="Where in each block the activations were captured.",
)  # fmt: skip
positions = [p for p in POSITIONS if p in chosen["positions"]]
position = links.pinned(
    columns[2].selectbox, "Position", positions, key="position", what="position",
    default=positions[0],
    help="answer_mean: the mean over the first answer states (see the run's provenance); "
    "last / mean: the question's last token / its mean.",
)  # fmt: skip
try:
    profile = proposition_profile(view, run_id, hook, position)
except (Unsuitable, StoreError) as exc:
    controls.show_problem(exc)
    links.stop()

categories = sorted(set(profile.pairs["category"]))
shown = controls.pick_many(st, "Categories", categories, key="categories", what="category",
                           default=categories)  # fmt: skip
per_layer = profile.per_layer[profile.per_layer["category"].isin([ALL_CATEGORIES, *shown])]
charts.draw(
    st, charts.lines,
    per_layer, "layer", "cosine", "category", x_title="layer", y_title="cosine(A, B)",
    title="Cosine between the A and B states, mean over pairs", tooltip=("n_pairs",),
    colours=charts.category_colours(categories, overall=ALL_CATEGORIES), y_domain=(0, 1),
)  # fmt: skip
st.caption(
    "1: the model is in the same state whichever way the claim is framed; lower: the framing "
    f"moves it. Position {plain(position)} of hook {plain(hook)}."
)

st.subheader("The answers side by side")
layer = controls.pick_layer(profile.layers, st)
table = pairs_at_layer(profile, layer, shown)
st.dataframe(
    table, hide_index=True,
    column_config={
        "cosine": st.column_config.NumberColumn(f"cosine at layer {layer}", format="%.3f"),
        "text_a": "A: question", "answer_a": "A: answer", "text_b": "B: question",
        "answer_b": "B: answer", "stopped_a": "A ended by itself", "stopped_b": "B ended by itself",
    },
)  # fmt: skip
if not table.empty:
    pair_id = controls.pick_one(st, "Pair", list(table["pair_id"]), key="pair", what="pair")
    row = table.set_index("pair_id").loc[pair_id]
    for column, side in zip(st.columns(2), ("a", "b"), strict=True):
        column.markdown(f"**{side.upper()}:** {plain(row[f'text_{side}'])}")
        column.text(row[f"answer_{side}"] or "(no answer)")

st.subheader("Download")
st.caption(f"Every sample's {position} vector at layer {layer} of {hook}, labelled id and label.")
downloads.run_vector_buttons(st, view, run_id, hook, layer, position, key="prop_dl")
