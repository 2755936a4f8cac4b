"""Cross-model page: do two models represent the same labels alike, and at which depths?

Two or more runs of one dataset on different models. Layers go on a normalised depth axis (0..1)
so an 18-layer and a 30-layer model line up. Each control sits above what it drives: the runs,
hook and position drive everything; the baseline and "Direction of" drive one label's direction
(the lines, and the raw-cosine heatmap); Run A and Run B (with a swap) drive the heatmaps. For
two runs: basis-free comparisons as (layer A, layer B) heatmaps, a ring on the best layer of B
for each layer of A: RSA of label similarity, linear CKA of the samples and held-out cosine after
an orthogonal Procrustes alignment, the last two with a chance level from shuffled samples; and
the raw cosine of the directions (only when widths match; basis-dependent). The same run on both
sides is allowed and said: it compares a model's layers with each other.
Computation: ui.compute (see its caveats on subsampling).
"""

import streamlit as st

from store import StoreError
from ui import charts, controls, links
from ui.compute import (
    CHANCE_SHUFFLES,
    CROSS_MODEL_MAX_ROWS,
    PROCRUSTES_RANK,
    Unsuitable,
    best_matches,
    cross_model_drawn,
    directions_of,
    run_title,
)
from ui.context import current_view, plain, short

st.title("Cross-model comparison")
view = current_view()
runs = controls.runs_or_stop(view)

run_ids = controls.pick_runs(
    runs, controls.default_runs(view),
    help="Two or more runs of the same dataset, on different models.",
)  # fmt: skip
if len(run_ids) < 2:
    st.info("Pick at least two runs of the same dataset (one per model) to compare them.")
    links.stop()
chosen = controls.chosen_runs(runs, run_ids)
controls.one_dataset_or_stop(chosen)
if not chosen["model"].is_unique:
    st.info("Some of these runs use the same model: the comparison still works, across runs.")
labels = list(chosen["labels"].iloc[0])
if len(labels) < 2:
    st.warning(f"These runs have one label ({plain(short(labels[0]))}): nothing to compare.")
    links.stop()
hook, position = controls.pick_site(chosen, controls.row(2))

st.subheader("One label's direction, model by model")
columns = controls.row(2)
baseline = controls.pick_baseline(labels, columns[0])
targets = [label for label in labels if label != baseline]
target = controls.pick_one(columns[1], "Direction of", targets, key="label", what="label")
try:
    directions = directions_of(view, tuple(run_ids), hook, position, baseline)
except (Unsuitable, StoreError) as exc:
    controls.show_problem(exc)
    links.stop()
controls.show_failures(directions.failed)  # a damaged run is named; the others are compared
readable = [r for r in run_ids if r not in dict(directions.failed)]
if len(readable) < 2:
    st.info("Fewer than two of these runs can be read: pick others to compare.")
    links.stop()
profile = controls.rows_where(directions.per_label, "label", target)
series = "model" if chosen["model"].is_unique else "run"
colours = charts.series_colours(runs, series)
left, right = controls.row(2)
charts.draw(
    left, charts.lines,
    profile, "depth", "l2_rel", series, x_title="normalised depth", y_title="L2 ÷ typical norm",
    title=f"Strength of the {target} direction (vs {baseline}) by depth", colours=colours,
)  # fmt: skip
charts.draw(
    right, charts.lines,
    profile, "depth", "auc", series, x_title="normalised depth", y_title="held-out AUC",
    title=f"Separability of {target} from {baseline} by depth", colours=colours,
    y_domain=(0.0, 1.0),
)  # fmt: skip

st.subheader("Layer by layer, two runs")
st.caption(
    "RSA, CKA and Procrustes compare whole representations: the label and baseline above "
    "change only the raw cosine. A ring marks the best layer of B for each layer of A."
)
pick = controls.row(3, vertical_alignment="bottom")  # filled left to right: A, Swap, B
run_a = controls.pick_one(pick[0], "Run A (rows)", readable, key="a", what="run", index=0)


def swap() -> None:
    """Run A becomes B and B A (the two selectboxes' values when Swap was pressed)."""
    a, b = st.session_state.get("a"), st.session_state.get("b")
    if a is not None and b is not None:
        links.choose("a", b)
        links.choose("b", a)


pick[1].button("Swap", icon=":material/swap_horiz:", key="swap", on_click=swap, width="content")
run_b = controls.pick_one(pick[2], "Run B (columns)", readable, key="b", what="run", index=1)
if run_a == run_b:
    st.info(
        f"A and B are the same run, {plain(run_title(controls.run_row(runs, run_a)))}: each "
        "heatmap compares the model's layers with each other. The diagonal is 1 for CKA, RSA "
        "and raw cosine by definition (Procrustes near 1); off the diagonal, high values mark "
        "layers that represent the samples alike. Pick another run as B to compare two models."
    )
try:
    result = cross_model_drawn(view, run_a, run_b, hook, position, target, baseline)
except (Unsuitable, StoreError) as exc:
    controls.show_problem(exc)
    links.stop()

name_a, name_b = runs.at[run_a, "model"], runs.at[run_b, "model"]
axes = {"x_title": f"layer of {name_b} (B)", "y_title": f"layer of {name_a} (A)"}


def heatmap(column, frame, title, caption, legend, domain=(0.0, 1.0)) -> None:
    charts.draw(column, charts.heatmap, frame, "layer_b", "layer_a", "value", title=title,
                domain=domain, legend=legend, best="best", best_tooltip=("chance",),
                **axes)  # fmt: skip
    best = best_matches(frame)
    text = f"{caption} Best match per layer of A (rings): {best.low:.2f} to {best.high:.2f}"
    if best.chance is not None:
        text += (
            f"; the same layer pairs with B's samples shuffled ({CHANCE_SHUFFLES} shuffles, "
            f"the chance level): {best.chance[0]:.2f} to {best.chance[1]:.2f} "
            "(each ring's tooltip has its own)"
        )
    column.caption(text + ".")


left, right = st.columns(2)
if result.rsa is None:
    left.info(result.rsa_note)
else:
    heatmap(
        left, result.rsa, "RSA: correlation of label-by-label similarity",
        "Pearson correlation between the cosine matrices of the centred label means of layer i "
        f"(A) and layer j (B); {len(labels)} labels give {len(labels) * (len(labels) - 1) // 2} "
        "numbers per matrix, so it is coarse. Basis-free.", "RSA", domain=(-1.0, 1.0),
    )  # fmt: skip
heatmap(
    right, result.cka, "Linear CKA of the sample representations",
    f"Over {result.n_shared} shared samples of the runs' fixed subsamples (at most "
    f"{CROSS_MODEL_MAX_ROWS}); biased upwards "
    "when samples are few relative to the width. Basis-free.", "CKA",
)  # fmt: skip
left, right = st.columns(2)
heatmap(
    left, result.procrustes,
    "Cosine after orthogonal Procrustes alignment (held out)",
    f"Map fitted on half of the {result.n_shared} shared samples, in each layer's top "
    f"{PROCRUSTES_RANK} principal directions; mean cosine on the other half.",
    "cosine", domain=(-1.0, 1.0),
)  # fmt: skip
if result.raw is None:
    right.info(
        f"Raw cosine between the two models' directions needs equal widths; {plain(name_a)} "
        f"has {runs.at[run_a, 'd_model']} dimensions and {plain(name_b)} "
        f"{runs.at[run_b, 'd_model']}. "
        "Use the basis-free comparisons."
    )
else:
    heatmap(
        right, result.raw, f"Raw cosine of the {target} directions (basis-dependent!)",
        f"The {plain(target)} vs {plain(baseline)} direction set above. Only meaningful if "
        "both models share a basis (e.g. one is a fine-tune of the other); for unrelated models "
        "expect values near 0 whatever they represent.", "cosine", domain=(-1.0, 1.0),
    )  # fmt: skip
