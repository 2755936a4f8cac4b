"""Features page: what an SAE's features pick out in a dataset (issue 12).

A feature run (`python -m extraction sae`) keeps the top-K SAE features of every record. This
page shows the top features of each label (mean activation or firing frequency over a scope of
positions), then one feature: its label distribution, the tokens its decoder direction promotes
(saved with the SAE when this tool trained it) and the records where it fires most, firing
tokens shaded; then one record's top features per position; a JSON download of the whole
feature run; and, where the store is writable, a form that trains another SAE as a job.
Run, layer, scope, labels, feature and record are pinned in the URL (ui.links).
Reads: ui.features_compute.
"""

import streamlit as st

from store import StoreError
from ui import charts, controls, links
from ui import features_compute as fc
from ui.context import current_view, plain, read_only

st.title("Features")
view = current_view()
try:
    listing = fc.feature_runs(view)
except StoreError as exc:
    controls.show_problem(exc)
    links.stop()
if listing.damaged:
    with st.expander(f"{len(listing.damaged)} damaged feature run(s) left out"):
        st.text("\n".join(listing.damaged))
runs = listing.frame
if runs.empty:
    st.info(
        "No feature runs in this store yet. Make one with `python -m extraction defaults` (an "
        "SAE on SmolLM2 and its features), or `python -m extraction sae --model M --dataset F "
        f"--sae SAE --store {view.shown()}`."
    )
    links.stop()

columns = st.columns([1, 3, 2, 2, 1])
layers = sorted(set(runs["layer"]))
layer = controls.pick_one(columns[0], "Layer", layers, key="layer", what="layer",
                          index=layers.index(fc.default_layer(runs)))  # fmt: skip
at_layer = runs[runs["layer"] == layer].set_index("feature_run_id")
run_id = controls.pick_one(columns[1], "Feature run", list(at_layer.index), key="feature_run",
                           what="run")  # fmt: skip
run = at_layer.loc[run_id]
scopes = fc.scopes_for(run["positions"])
scope = links.pinned(columns[2].selectbox, "Positions", scopes, key="scope", what="scope",
                     default=scopes[0], format_func=fc.SCOPE_TITLES.get)  # fmt: skip
order = links.pinned(columns[3].selectbox, "Rank by", list(fc.ORDER_TITLES), key="order",
                     what="order", default="mean_activation",
                     format_func=fc.ORDER_TITLES.get)  # fmt: skip
top = controls.pick_count(columns[4], "Top", [5, 10, 20, 50], value=10, key="top")
st.caption(
    plain(
        f"{run['model']} · SAE {run['sae']} ({run['hook']}, layer {layer} of {run['n_layers']}, "
        f"{run['d_sae']} features, top {run['top_k']} kept) · dataset {run['dataset']}: "
        f"{run['ok']} of {run['records']} records read"
    )
)
stamp = run["created_at"]
try:
    summary = fc.label_features(view.path, run_id, stamp, scope, top, order)
    records = fc.samples(view.path, run_id, stamp)
except StoreError as exc:
    controls.show_problem(exc)
    links.stop()

all_labels = sorted(summary["label"].astype(str).unique())
labels = controls.pick_many(st, "Labels", all_labels, key="labels", what="label",
                            default=all_labels)  # fmt: skip
colours = charts.label_colours(all_labels)
shown = summary[summary["label"].isin(labels)]
for column, (label, group) in zip(st.columns(max(1, min(4, len(labels)))),
                                  shown.groupby("label", sort=True), strict=False):  # fmt: skip
    charts.draw(column, charts.bars, group, order, "feature", "label", colours=colours,
                title=str(label), x_title=fc.ORDER_TITLES[order], y_title="feature",
                tooltip=("mean_activation", "frequency", "mean_elsewhere"))  # fmt: skip

st.subheader("One feature")
options = fc.feature_options(int(run["d_sae"]), summary)
first = int(shown["feature"].iloc[0]) if len(shown) else options[0]
feature = controls.pick_one(st, "Feature", options, key="feature", what="feature",
                            index=options.index(first) if first in options else 0)  # fmt: skip
try:
    by_label = fc.feature_labels(view.path, run_id, stamp, feature, scope)
    best, tokens = fc.feature_samples(view.path, run_id, stamp, feature, scope, 8)
except StoreError as exc:
    controls.show_problem(exc)
    links.stop()
left, right = st.columns(2)
charts.draw(left, charts.bars, by_label, "frequency", "label", "label", colours=colours,
            title=f"Feature {feature}: how often it fires, per label",
            x_title=f"share of {fc.SCOPE_TITLES[scope]}", y_title="label",
            tooltip=("mean_activation", "fired", "positions"))  # fmt: skip
with right:
    st.markdown("**Tokens its decoder direction promotes** (through the unembedding)")
    try:
        right.dataframe(fc.promoted_tokens(view.path, run["sae_source"], run["sae_id"], feature),
                        hide_index=True, height=250)  # fmt: skip
    except StoreError as exc:
        st.info(plain(exc))
if best.empty:
    st.info(f"Feature {feature} never fires on the {fc.SCOPE_TITLES[scope]} of this run.")
for sample in best.itertuples(index=False):
    st.markdown(f"**{plain(sample.label)}** · {plain(sample.id)} · peak {sample.peak:.2f}, "
                f"fires at {sample.firing} position(s)")  # fmt: skip
    one = tokens[tokens["sample_idx"] == sample.sample_idx]
    st.markdown(fc.highlighted(one, float(sample.peak), int(sample.answer_start)),
                unsafe_allow_html=True)  # fmt: skip

st.subheader("One record, position by position")
ok = records[records["status"] == "ok"]
sample_ids = [int(i) for i in ok["sample_idx"]] or [0]
default_sample = int(best["sample_idx"].iloc[0]) if len(best) else sample_ids[0]
sample_idx = controls.pick_one(st, "Record", sample_ids, key="sample", what="record",
                               index=sample_ids.index(default_sample))  # fmt: skip
record = records.set_index("sample_idx").loc[sample_idx]
st.markdown(f"**{plain(record['label'])}** · {plain(record['id'])} · {plain(record['location'])}")
try:
    st.dataframe(fc.sample_positions(view.path, run_id, stamp, sample_idx), hide_index=True)
    st.download_button("Download the feature run as JSON", fc.export_json(view.path, run_id, stamp),
                       file_name=f"{run_id}.json", mime="application/json")  # fmt: skip
except StoreError as exc:
    controls.show_problem(exc)

if not read_only():  # hosted: no form, and the job layer refuses as well
    st.subheader("Train another SAE")
    trainable = fc.trainable_runs(view)
    if not trainable:
        st.info("Training needs a run captured with position `all` (New run page).")
        links.stop()
    columns = st.columns([3, 1, 1, 1, 1])
    train_run = columns[0].selectbox("Run (position all)", list(trainable), key="train_run")
    hooks, train_layers = trainable[train_run]
    train_hook = columns[1].selectbox("Hook", hooks, key="train_hook")
    train_layer = columns[2].selectbox("Layer", train_layers, key="train_layer")
    d_sae = columns[3].selectbox("Features", [512, 1024, 2048, 4096, 8192], index=2, key="d_sae")
    k = columns[4].selectbox("Active (k)", [8, 16, 32, 64], index=2, key="train_k")
    settings = dict(run=train_run, layer=train_layer, hook=train_hook, d_sae=d_sae, k=k)
    st.button("Train", type="primary", key="train", on_click=fc.launch_training,
              args=(view.path, settings))  # fmt: skip
    if outcome := st.session_state.get(fc.TRAINING_MESSAGE):
        kind, text = outcome
        (st.success if kind == "success" else st.error)(text)
        if kind == "success":
            st.page_link("pages/new_run.py", label="Watch it on the New run page")
