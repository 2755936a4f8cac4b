"""Directions page: where each label's difference-of-means direction lives, layer by layer.

For one run (or several runs of one dataset, e.g. one per model): the direction of every label
against a baseline label per layer, its L1/L2 norm (optionally divided by the layer's typical
activation norm), cosines between label directions, split-half stability and held-out AUC, then
one layer in detail: cosine heatmap, samples projected on a direction, and PCA in 2-D and 3-D.
The filters live in the URL. Computation: ui.compute (streams vectors; see its caveats).
"""

import streamlit as st

from store import StoreError
from ui import charts, controls, downloads, links
from ui.compute import REST, Unsuitable, directions_of, layer_detail, run_title
from ui.context import current_view, plain, short

st.title("Concept directions")
view = current_view()
runs = controls.runs_or_stop(view)

run_ids = controls.pick_runs(
    runs, controls.default_runs(view),
    help="One run, or several runs of the same dataset (e.g. one per model).",
)  # fmt: skip
if not run_ids:
    st.info("Pick a run to see its label directions.")
    links.stop()
chosen = controls.chosen_runs(runs, run_ids)
controls.one_dataset_or_stop(chosen)
labels = list(chosen["labels"].iloc[0])
if len(labels) < 2:
    st.warning(
        f"{plain(run_title(chosen.iloc[0]))} has one label ({plain(short(labels[0]))}): a "
        "direction needs a target label and a baseline label. Pick a run of a labelled dataset "
        "(e.g. emotions)."
    )
    links.stop()

columns = controls.row(4)
hook, position = controls.pick_site(chosen, columns[:2])
baseline = controls.pick_baseline(labels, columns[2], one_vs_rest=True)
rest = baseline == REST
targets = labels if rest else [label for label in labels if label != baseline]
versus = "every other label" if rest else baseline
# "Hide" rather than "show": a selection that stays right when the baseline changes.
hidden = controls.pick_many(columns[3], "Hide labels", targets, key="hide", what="label")
shown = [label for label in targets if label not in hidden]
options = controls.row(2)
relative = controls.toggle(
    options[0], "Divide by typical activation norm", value=True, key="relative",
    help="Activation scale grows with depth; dividing by the layer's mean sample norm "
    "lets layers compare.",
)  # fmt: skip
by_depth = controls.toggle(
    options[1], "Normalised depth axis", value=len(run_ids) > 1, key="depth",
    help="Layer / (layers - 1), so models of different depth line up.",
)  # fmt: skip
if not shown:
    st.info("Every label is hidden: show at least one.")
    links.stop()

try:
    result = directions_of(view, tuple(run_ids), hook, position, baseline)
except (Unsuitable, StoreError) as exc:
    controls.show_problem(exc)
    links.stop()
controls.show_failures(result.failed)  # a damaged run is named; the others are drawn
if result.per_label.empty:
    links.stop()
controls.baseline_note(baseline)
readable = [r for r in run_ids if r not in dict(result.failed)]

# The shared frame itself when nothing is hidden: a chart of it is keyed by identity (ui.charts).
per_label = result.per_label
if hidden:
    per_label = per_label[per_label["label"].isin(shown)]
x, x_title = ("depth", "normalised depth") if by_depth else ("layer", "layer")
# One line style per run; the model name is shorter and says the same when models differ.
series = "model" if chosen["model"].is_unique else "run"
style = {"colours": charts.label_colours(labels), "dash": None if len(run_ids) == 1 else series,
         "dashes": charts.series_dashes(runs, series)}  # fmt: skip
norm = " ÷ typical norm" if relative else ""
left, right = controls.row(2)
for column, name in ((left, "l2"), (right, "l1")):
    field, label = (f"{name}_rel" if relative else name), name.upper()
    charts.draw(
        column, charts.lines,
        per_label, x, field, "label", x_title=x_title, y_title=f"{label}{norm}",
        title=f"{label} norm of each direction (vs {versus}){norm}", **style,
    )  # fmt: skip

left, right = controls.row(2)
charts.draw(
    left, charts.lines,
    per_label, x, "stability", "label", x_title=x_title, y_title="cosine",
    title="Split-half stability: cosine of directions from disjoint halves",
    tooltip=("stability_std", "n_target", "n_baseline"), y_domain=(-0.1, 1.0), **style,
)  # fmt: skip
charts.draw(
    right, charts.lines,
    per_label, x, "auc", "label", x_title=x_title, y_title="AUC",
    title=f"Held-out separability from {versus}: AUC of the projection",
    tooltip=("accuracy", "n_target", "n_baseline"), y_domain=(0.0, 1.0), **style,
)  # fmt: skip
sizes = result.label_sizes
st.caption(
    "Stability (20 random half splits) and AUC (fit on one half, score the other) use each "
    f"run's fixed subsample ({result.subsample_text}): "
    + plain(
        "; ".join(f"{label} {n}" for label, n in sizes.items() if label in shown)
        + ("" if rest else f"; {baseline} {result.baseline_size}")
    )
    + ". Norms and directions use every sample."
)

cosines = result.cosines
if hidden:
    cosines = cosines[cosines["pair"].map(lambda p: all(part in shown for part in p.split(" · ")))]
if cosines.empty:
    st.caption("Cosines between label directions need at least two labels besides the baseline.")
else:
    charts.draw(
        st, charts.lines,
        cosines, x, "cosine", "pair", x_title=x_title, y_title="cosine",
        title="Cosine between label directions, across layers", y_domain=(-1.0, 1.0),
        **(style | {"colours": charts.pair_colours(labels)}),
    )  # fmt: skip

st.subheader("One layer in detail")
columns = controls.row(4)
detail = readable[0]
if len(readable) > 1:
    detail = controls.pick_one(columns[0], "Run", readable, key="detail", what="run")
detail_run = controls.run_row(runs, detail)
layer = controls.pick_layer(list(detail_run["layers"]), columns[1], run=run_title(detail_run))
target = controls.pick_one(columns[2], "Project on", targets, key="project", what="label")
three_d = controls.toggle(columns[3], "3-D PCA", value=False, key="pca3d")
try:
    layer_view = layer_detail(view, detail, hook, position, layer, baseline, target)
except (Unsuitable, StoreError) as exc:
    controls.show_problem(exc)
    links.stop()

left, right = controls.row(2)
charts.draw(
    left, charts.heatmap,
    layer_view.cosines, "label_b", "label_a", "cosine", x_title="", y_title="",
    title=f"Cosine between label directions at layer {layer}", domain=(-1.0, 1.0),
    scheme="redblue",
)  # fmt: skip
charts.draw(
    right, charts.histogram,
    layer_view.projections, "projection", "label", colours=style["colours"],
    title=f"Samples projected on the {target} direction, layer {layer}",
    x_title=f"position along it: 0 = mean of {versus}, 1 = mean of {target}",
)  # fmt: skip
st.caption(
    f"Projections are in units of the direction's length: a sample at 0 sits at the mean of "
    f"{plain(versus)}, at 1 at the mean of {plain(target)} (means over every sample)."
    + controls.subsample_text(
        len(layer_view.scores), detail_run["n_samples"], "Histogram and PCA", prefix=" "
    )  # fmt: skip
)
ratio = ", ".join(f"{r:.1%}" for r in layer_view.explained)
title = f"PCA of the samples at layer {layer} (explained variance {ratio})"
if three_d:
    st.plotly_chart(
        charts.scatter_3d(
            layer_view.scores, "label", colours=style["colours"], title=title, hover="text"
        )
    )
else:
    charts.draw(
        st, charts.scatter,
        layer_view.scores, "pc1", "pc2", "label", title=title, x_title="PC 1", y_title="PC 2",
        tooltip=("text", "layer", "n_layers"), colours=style["colours"],
    )  # fmt: skip

downloads.direction_downloads(view, detail, hook, position, layer, baseline)  # this layer's
