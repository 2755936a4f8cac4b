"""Runs page: every committed run in the store, filterable, with its full provenance and links
that open it in the analysis pages, and the damaged runs with the reason each cannot be read (the
other pages leave those out)."""

import pandas as pd
import streamlit as st

from store import StoreError
from ui import controls, links
from ui.compute import runs_table
from ui.context import RUNS_TABLE, current_view, public_text, show_store_error
from ui.runs_compute import damaged_in, provenance, runs_listing, runs_shown

st.title("Runs")
view = current_view()
try:
    listing = runs_listing(view)  # shared by every session: read-only
    frame, _ = runs_table(view)
except StoreError as exc:
    show_store_error(exc)
    links.stop()
runs, damaged = listing.runs, damaged_in(view, listing)


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

left, middle, right = controls.row(3)
models = controls.pick_many(left, "Model", list(listing.models), key="model", what="model")
datasets = controls.pick_many(middle, "Dataset", list(listing.datasets), key="dataset",
                              what="dataset")  # fmt: skip
hooks = controls.pick_many(right, "Hook", list(listing.hooks), key="hook", what="hook")

table = runs_shown(view, tuple(models), tuple(datasets), tuple(hooks))
shown = table.runs
st.caption(f"{len(shown)} of {len(runs)} runs · {shown['size_mb'].sum():.1f} MB")
order = [*list(RUNS_TABLE)[:7], *table.column_config, *list(RUNS_TABLE)[7:]]
controls.show_table(st, table.table, width="stretch", column_order=order,
                    column_config=RUNS_TABLE | table.column_config)  # fmt: skip

if not shown.empty:
    run_id = controls.pick_one(st, "Provenance of run", list(shown["run_id"]), key="run",
                               what="run")  # fmt: skip
    if run_id in frame.index:
        links.page_links(links.open_in(frame, run_id))
    try:
        st.json(provenance(view, run_id), expanded=1)
    except StoreError as exc:
        show_store_error(exc)
show_damaged()
