"""Vectors page: control vectors (vector sets) layer by layer, in words, and as files.

For one vector set (`python -m extraction vectors`, or the form here): explained variance and
sign agreement per layer, its cosine with the other methods' sets of the same run and with the
Directions page's difference of means, the tokens each layer's vector promotes and suppresses
(ui.readout), and the set as `.pt` and GGUF files. The set, the layers read in words and the
scaling of the files live in the URL. The form computes a set as a job (jobs, `vectors` kind);
read-only mode shows no form. Computation: ui.vectors.
"""

import streamlit as st

from settings.run import describe_layers
from settings.vectors import METHOD_HELP
from store import StoreError
from ui import charts, links, vectors
from ui.context import current_view, plain, public_text, read_only

st.title("Control vectors")
view = current_view()
try:
    sets, damaged = vectors.vector_sets(view)
except StoreError as exc:
    st.error(plain(public_text(exc)))
    links.stop()
if damaged:
    with st.expander(f"{len(damaged)} damaged vector set(s) left out"):
        st.text("\n".join(f"{d.folder}: {public_text(d.reason)}" for d in damaged))
opened = vectors.opened_run(view)  # "Open in Vectors" from Runs: that run's newest set
of_opened = [m.set_id for m in sets if m.run_id == opened]
# On object storage the app starts no jobs (jobs.paths): sets come from the command line.
computes_here = not read_only() and not view.on_object_storage
if opened and not of_opened:
    how = "compute one below" if computes_here else "`python -m extraction vectors` makes one"
    st.info(f"Run {plain(opened)} has no vector set yet: {how}.")
if computes_here:
    vectors.compute_form(view, opened if opened and not of_opened else None)
elif not read_only():
    st.info(
        "This store is on object storage: compute vector sets into it from the command line, "
        "`python -m extraction vectors --run RUN --store <the store's URI>`, and they show up here."
    )
if not sets:
    where = (
        "" if not computes_here else " Compute one above, or with `python -m extraction vectors`."
    )
    st.info(f"The store {plain(view.name)} has no vector sets yet.{where}")
    links.stop()

by_id = {m.set_id: m for m in sets}
set_id = links.pinned(
    st.selectbox, "Vector set", list(by_id), key="set", what="vector set",
    default=(of_opened or [sets[0].set_id])[0], format_func=lambda i: vectors.set_label(by_id[i]),
)  # fmt: skip
m = by_id[set_id]
st.caption(
    plain(
        f"From run {m.run_id} ({m.n_pairs} pairs of {m.dataset_name}), {m.hook}, last token, "
        f"layers {describe_layers(m.layers)} of {m.n_layers}; {m.method}: "
        f"{METHOD_HELP[m.method]}. Each vector points from {m.first_label!r} to "
        f"{m.second_label!r}."
    )
)
links.page_links(vectors.open_targets(view, m))

try:
    figures = vectors.figures(view, set_id)
    compared, notes = vectors.comparisons(view, set_id, sets)
except StoreError as exc:
    st.error(plain(public_text(exc)))
    links.stop()
long = figures.melt(["layer", "n_layers"], ["explained_variance", "sign_agreement"], "figure")
left, right = st.columns(2)
charts.draw(
    left, charts.lines,
    long, "layer", "value", "figure", colours=charts.colours_for(vectors.FIGURES),
    title="Explained variance and sign agreement per layer", x_title="layer",
    y_title="fraction", y_domain=(0.0, 1.0),
)  # fmt: skip
charts.draw(
    right, charts.lines,
    compared, "layer", "cosine", "with", colours=vectors.comparison_colours(compared),
    title="Cosine with the other methods and the difference of means", x_title="layer",
    y_title="cosine", y_domain=(-1.0, 1.0),
)  # fmt: skip
for note in notes:
    st.caption(plain(public_text(note)))

st.subheader("What it says in words")
shown = links.pinned(
    st.multiselect, "Layers read in words", list(m.layers), key="words", what="layer", many=True,
    default=vectors.default_word_layers(m.layers),
    help="Each vector read through the model's final norm and unembedding: the tokens whose "
    "logits it raises most (promotes) and lowers most (suppresses).",
)  # fmt: skip
try:
    words = vectors.set_words(view, set_id, shown)
except (StoreError, ValueError) as exc:
    st.warning(plain(public_text(exc)))
else:
    st.dataframe(words, hide_index=True)

st.subheader("Download")
scaled = links.pinned_toggle(
    st, "Scaled to each layer's typical norm", key="scaled", default=False,
    help="Off: unit vectors. On: each multiplied by its layer's typical residual norm, so a "
    "strength of 1 in llama.cpp or repeng adds a typical state's length.",
)  # fmt: skip
files = vectors.set_files(view, set_id, scaled)
left, right = st.columns(2)
left.download_button("Download .pt", files["pt"], file_name=f"{set_id}.pt",
                     help="{layer: tensor[d]}, for torch.load(..., weights_only=True)")  # fmt: skip
if files["gguf"]:
    right.download_button("Download GGUF", files["gguf"], file_name=f"{set_id}.gguf",
                          help="llama.cpp's control-vector layout (--control-vector)")  # fmt: skip
else:
    right.caption("No GGUF: llama.cpp steers no layer of this set (see the README).")
