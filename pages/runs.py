"""Runs page: every committed run in the store, filterable, with its full provenance."""

import streamlit as st

from store import StoreError
from ui.context import get_store, runs_frame, runs_key, store_path
from ui.controls import stop_empty_store

st.title("Runs")
store = get_store()
try:
    runs = runs_frame(store_path(), runs_key(store))
except StoreError as exc:
    st.error(str(exc))
    st.stop()

if runs.empty:
    stop_empty_store(store_path())

hooks_available = sorted({h.strip() for hooks in runs["hooks"] for h in hooks.split(",")})
left, middle, right = st.columns(3)
models = left.multiselect("Model", sorted(runs["model"].unique()), key="model", bind="query-params")
datasets = middle.multiselect(
    "Dataset", sorted(runs["dataset"].unique()), key="dataset", bind="query-params"
)
hooks = right.multiselect("Hook", hooks_available, key="hook", bind="query-params")

shown = runs
if models:
    shown = shown[shown["model"].isin(models)]
if datasets:
    shown = shown[shown["dataset"].isin(datasets)]
if hooks:
    shown = shown[shown["hooks"].apply(lambda value: any(h in value.split(", ") for h in hooks))]

st.caption(f"{len(shown)} of {len(runs)} runs · {shown['size_mb'].sum():.1f} MB")
st.dataframe(shown, hide_index=True, width="stretch")

if not shown.empty:
    run_id = st.selectbox("Provenance of run", shown["run_id"], key="run", bind="query-params")
    try:
        st.json(store.manifest(run_id).to_json(), expanded=1)
    except StoreError as exc:
        st.error(str(exc))
