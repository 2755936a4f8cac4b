"""What the Runs page shows, worked out once per store view and filter for every session.

The page's table (every healthy run, its "open in" links) and its filter options are the same
for every visitor of one store view; building them again on each view (a pandas concat, the
public model names, the links of every run, the table's Arrow form) was most of a served Runs
view (bench/bench_load.py). Results are shared (`ui.shared.shared`): read-only. The damaged run
folders are not part of them: the store's listing finds those on every view (a planted or
repaired folder leaves the healthy runs, and so the view, as they were; `damaged_in`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ui.compute import runs_table
from ui.context import StoreView, damaged_runs, manifest_json, public_text, runs_frame
from ui.links import run_link_columns
from ui.shared import shared


@dataclass(frozen=True)
class RunsListing:
    """The Runs page's runs: the readable ones (`runs_frame`, models as a visitor may see them),
    those whose files cannot be read as (folder, reason), and the filters' options."""

    runs: pd.DataFrame
    unreadable: tuple[tuple[str, str], ...]
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class RunsShown:
    """The runs a filter keeps, the table that shows them with their links, its column config."""

    runs: pd.DataFrame
    table: pd.DataFrame
    column_config: dict


def damaged_in(view: StoreView, listing: RunsListing) -> list[tuple[str, str]]:
    """(folder, reason) of every run the Runs page lists as damaged: those this view's store
    listing found (`damaged_runs`) and those whose files cannot be read."""
    return [(d.folder, d.reason) for d in damaged_runs(view)] + list(listing.unreadable)


@shared(maxsize=16)
def runs_listing(view: StoreView) -> RunsListing:
    """The view's runs for the Runs page; StoreError if the store cannot be read."""
    runs = runs_frame(view)  # shared by every session, as runs_table: filter, never assign into
    _, summaries = runs_table(view)
    unreadable = dict(summaries.unreadable)  # manifest fine, files not
    if unreadable:
        runs = runs[~runs["run_id"].isin(list(unreadable))]
    runs = runs.assign(model=runs["model"].map(public_text)) if len(runs) else runs
    hooks = sorted({h.strip() for value in runs.get("hooks", ()) for h in value.split(",")})
    models = tuple(sorted(runs["model"].unique())) if len(runs) else ()
    datasets = tuple(sorted(runs["dataset"].unique())) if len(runs) else ()
    folders = tuple((f"runs/{run_id}", reason) for run_id, reason in unreadable.items())
    return RunsListing(runs, folders, models, datasets, tuple(hooks))


@shared(maxsize=64)
def provenance(view: StoreView, run_id: str) -> dict:
    """Run `run_id`'s manifest as a visitor may see it (`manifest_json`); StoreError if it cannot
    be read (not kept: the next view tries again)."""
    return manifest_json(view.store.manifest(run_id).to_json())


@shared(maxsize=64)
def runs_shown(view: StoreView, models: tuple, datasets: tuple, hooks: tuple) -> RunsShown:
    """The runs of `runs_listing` that match every non-empty filter, and their table."""
    listing = runs_listing(view)
    shown = listing.runs
    if models:
        shown = shown[shown["model"].isin(models)]
    if datasets:
        shown = shown[shown["dataset"].isin(datasets)]
    if hooks:
        has = shown["hooks"].apply(lambda value: any(h in value.split(", ") for h in hooks))
        shown = shown[has]
    opens, config = run_link_columns(view, tuple(shown["run_id"]))
    table = pd.concat([shown.reset_index(drop=True), opens], axis=1)
    return RunsShown(shown, table, config)
