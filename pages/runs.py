"""Runs page: every committed run in the store, filterable, with its full provenance and links
that open it in the analysis pages, and the damaged runs with the reason each cannot be read (the
other pages leave those out)."""

import pandas as pd
import streamlit as st

from store import StoreError
from ui import controls, links
from ui.compute import runs_table
from ui.context import (
    RUNS_TABLE,
    current_view,
    damaged_runs,
    manifest_json,
    public_text,
    runs_frame,
    show_store_error,
)

st.title("Runs")
view = current_view()
try:
    runs = runs_frame(view)  # shared by every session, as runs_table: filter, never assign into
    frame, summaries = runs_table(view)
    unreadable = dict(summaries.unreadable)  # manifest fine, files not
    damaged = [(d.folder, d.reason) for d in damaged_runs(view)]
except StoreError as exc:
    show_store_error(exc)
    links.stop()
damaged += [(f"runs/{run_id}", reason) for run_id, reason in unreadable.items()]
runs = runs[~runs["run_id"].isin(list(unreadable))] if unreadable else runs


def show_damaged() -> None:
    if damaged:
        st.subheader("Damaged runs")
        st.caption("Left out of every page until repaired or removed; the others are unaffected.")
        rows = [{"folder": public_text(f), "reason": public_text(r)} for f, r in damaged]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


if damaged:  # the list itself is at the bottom, below the provenance
    st.warning(f"{len(damaged)} damaged run(s) cannot be read and are left out: see Damaged runs.")
if runs.empty:
    show_damaged()
    controls.stop_empty_store(view)

runs = runs.assign(model=runs["model"].map(public_text))  # a model may be a server folder
hooks_available = sorted({h.strip() for hooks in runs["hooks"] for h in hooks.split(",")})
left, middle, right = controls.row(3)
models = controls.pick_many(left, "Model", sorted(runs["model"].unique()), key="model",
                            what="model")  # fmt: skip
datasets = controls.pick_many(middle, "Dataset", sorted(runs["dataset"].unique()), key="dataset",
                              what="dataset")  # fmt: skip
hooks = controls.pick_many(right, "Hook", hooks_available, key="hook", what="hook")

shown = runs
if models:
    shown = shown[shown["model"].isin(models)]
if datasets:
    shown = shown[shown["dataset"].isin(datasets)]
if hooks:
    shown = shown[shown["hooks"].apply(lambda value: any(h in value.split(", ") for h in hooks))]

st.caption(f"{len(shown)} of {len(runs)} runs · {shown['size_mb'].sum():.1f} MB")
opens, open_config = links.run_link_columns(view, tuple(shown["run_id"]))
order = [*list(RUNS_TABLE)[:7], *open_config, *list(RUNS_TABLE)[7:]]
st.dataframe(
    pd.concat([shown.reset_index(drop=True), opens], axis=1), hide_index=True, width="stretch",
    column_config=RUNS_TABLE | open_config, column_order=order,
)  # fmt: skip

if not shown.empty:
    run_id = controls.pick_one(st, "Provenance of run", list(shown["run_id"]), key="run",
                               what="run")  # fmt: skip
    if run_id in frame.index:
        links.page_links(links.open_in(frame, run_id))
    try:
        st.json(manifest_json(view.store.manifest(run_id).to_json()), expanded=1)
    except StoreError as exc:
        show_store_error(exc)
show_damaged()
