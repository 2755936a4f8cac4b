"""Widgets and messages shared by the analysis pages.

Every view-defining widget is pinned in the URL through ui.links (read its notes): the `pick_*`
helpers and `toggle` here take the page's resolved default, check the URL's value against a fixed
list of options, and leave the writing of the URL to app.py. So a copied link names the runs,
hook, position, baseline and layer it shows and reopens that view after new runs are committed.

* Options are raw values (run ids, pair ids): the URL holds them as text.
* Every pinned widget picks from a fixed list (selectbox, multiselect, select_slider, toggle),
  never a free number or text, so a hostile URL value can only pick an option or be dropped
  with a warning (`?top=inf` once ended in an OverflowError when Streamlit converted it).
* Defaults never fall on a run that covers only some layers while a complete one exists
  (`ui.compute.complete_first`).

Functions ending in `_or_stop` show a message and stop the page when nothing can be drawn.
`BIND` is for the New run page's form, which still binds its widgets the Streamlit way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pandas as pd
import streamlit as st
from streamlit import dataframe_util

from store import StoreError
from ui import links
from ui.compute import REST, Unsuitable, complete_first, run_title, runs_table
from ui.context import StoreView, damaged_runs, plain, public_text, read_only, short
from ui.shared import derived, shared
from ui.summaries import show_unavailable

BIND = "query-params"


def stop_empty_store(view: StoreView) -> None:
    """Say the store has no runs (and, where runs can be made, how to make them); stop."""
    if read_only():
        st.info(f"The read-only store {plain(view.name)} has no committed runs.")
    else:
        st.info(
            f"No committed runs in `{view.path}` yet. Fill it with "
            f"`python -m extraction defaults --store {view.path}` or start one on the New run page."
        )
    links.stop()


def show_problem(exc: Exception) -> None:
    """Unsuitable selections are warnings; store failures are errors. Never a traceback."""
    text = plain(public_text(exc))
    if isinstance(exc, Unsuitable):
        st.warning(text)
    else:
        st.error(text)


def show_failures(failed: Sequence[tuple[str, str]]) -> None:
    """One error per run the store could not read, (run id, reason); the page goes on."""
    for run_id, reason in failed:
        text = reason if run_id in reason else f"run {run_id!r}: {reason}"
        st.error(plain(public_text(f"Left out {text}")))


def runs_or_stop(view: StoreView) -> pd.DataFrame:
    """Summaries of the readable committed runs, indexed by run_id; a message and stop if none.

    Runs the store lists as damaged, or whose samples cannot be read, are left out with a note:
    the Runs page lists them with their reasons. Runs without usable summaries stay, named in
    one warning with the command (and, writable, a button) that makes them (ui.summaries).
    """
    try:
        runs, summaries = runs_table(view)  # shared by every session: treat it as read-only
    except StoreError as exc:
        show_problem(exc)
        links.stop()
    left_out = len(summaries.unreadable) + len(_damaged(view))
    if left_out:
        st.caption(f"{left_out} damaged run(s) left out; the Runs page lists them and why.")
    show_unavailable(view, summaries.unsummarized)  # named once, with the command; never scanned
    if summaries.frame.empty:
        stop_empty_store(view)
    return runs


def _damaged(view: StoreView) -> list:
    try:
        return damaged_runs(view)
    except StoreError:
        return []


def row(places: int = 2, vertical_alignment: str = "top") -> list:
    """`places` spots side by side for widgets or charts, to fill left to right: one horizontal
    container (it wraps on a narrow screen), handed out `places` times. `st.columns(n)` sends
    n + 1 layout blocks, each a message to every visitor (bench/bench_load.py); this sends one.
    Each element takes an equal share of the row unless it has a width of its own."""
    box = st.container(horizontal=True, gap="small", vertical_alignment=vertical_alignment)
    return [box] * places


def toggle(column, label: str, *, value: bool, key: str, help: str | None = None) -> bool:
    return links.pinned_toggle(column, label, key=key, default=value, help=help)


def pick_runs(runs: pd.DataFrame, default: list[str], *, help: str) -> list[str]:
    options = list(runs.index)
    return links.pinned(
        st.multiselect, "Runs", options, key="runs", what="run", many=True, help=help,
        default=[r for r in default if r in options],
    )  # fmt: skip


def pick_many(column, label: str, options: list, *, key: str, what: str, default=None) -> list:
    """A pinned multiselect (default: nothing selected)."""
    return links.pinned(column.multiselect, label, options, key=key, what=what, many=True,
                        default=list(default or []))  # fmt: skip


def pick_one(column, label: str, options: list, *, key: str, what: str, index: int = 0):
    """A pinned selectbox whose default is `options[index]`."""
    return links.pinned(column.selectbox, label, options, key=key, what=what,
                        default=options[index])  # fmt: skip


def show_table(container, frame: pd.DataFrame, **kwargs):
    """`container.dataframe(frame, hide_index=True, **kwargs)`, the frame converted to Arrow
    once while it lives (`ui.shared.derived`): Streamlit converts a pandas frame again on every
    view, most of a table's cost to a served view (bench/bench_load.py). The frame must not
    change in place afterwards (shared results never do)."""
    data = derived(frame, ("arrow",), lambda: dataframe_util.convert_pandas_df_to_arrow_table(
        frame, preserve_index=False))  # fmt: skip
    return container.dataframe(data, hide_index=True, **kwargs)


def pick_in_table(table: pd.DataFrame, id_column: str, label: str, options: list, *, key: str,
                  what: str, format_func=str, default=None, height: int = 250):  # fmt: skip
    """A table whose clicked row picks its `id_column` value, then the pinned selectbox `key`
    over `options` that holds the choice (a click sets it; the URL pins it). A table of other
    rows (a new search) starts unselected, so an old click never picks a row it no longer shows.
    """
    ids, digest = derived(table, ("ids", id_column), lambda: _row_ids(table, id_column))
    table_key = f"{key}_rows_{digest}"
    event = show_table(st, table, key=table_key, on_select="rerun", selection_mode="single-row",
                       height=height)  # fmt: skip
    rows = list(event.selection.rows) if event is not None else []
    seen = f"{table_key}_seen"
    fresh = rows and rows != st.session_state.get(seen) and 0 <= rows[0] < len(ids)
    if fresh and ids[rows[0]] in options:
        links.choose(key, ids[rows[0]])
    st.session_state[seen] = rows
    return links.pinned(st.selectbox, label, options, key=key, what=what, format_func=format_func,
                        default=options[0] if default is None else default)  # fmt: skip


def chosen_runs(runs: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """`runs.loc[run_ids]` of the shared runs table (`runs_or_stop`), made once per selection
    (a label lookup on that table was a tenth of a served view); shared: read-only."""
    return derived(runs, ("chosen", tuple(run_ids)), lambda: runs.loc[list(run_ids)])


def run_row(runs: pd.DataFrame, run_id: str) -> pd.Series:
    """`runs.loc[run_id]` of the shared runs table, made once per run; shared: read-only."""
    return derived(runs, ("row", run_id), lambda: runs.loc[run_id])


def pair_runs(runs: pd.DataFrame) -> tuple[list[str], int]:
    """(the runs of the shared runs table that hold minimal pairs, the index among them of the
    default: the newest run of the built-in minimal_pairs dataset, else the newest)."""

    def make() -> tuple[list[str], int]:
        with_pairs = runs[runs["has_pairs"]]
        ids = list(with_pairs.index)
        minimal = list(with_pairs.index[with_pairs["dataset"] == "minimal_pairs"])
        return ids, ids.index(minimal[0]) if minimal else 0

    return derived(runs, ("pair runs",), make)


def _row_ids(table: pd.DataFrame, id_column: str) -> tuple[list[str], str]:
    ids = table[id_column].astype(str).tolist()
    return ids, hashlib.sha1("\n".join(ids).encode()).hexdigest()[:10]


def one_dataset_or_stop(chosen: pd.DataFrame) -> None:
    """Directions and comparisons only make sense over the same samples."""
    if derived(chosen, ("datasets",), lambda: chosen["dataset_sha256"].nunique()) > 1:
        names = ", ".join(f"{run_title(r)}: {r['dataset']}" for _, r in chosen.iterrows())
        st.warning(
            "The selected runs use different datasets (or versions of one), so their samples "
            f"and labels do not match ({plain(names)}). Pick runs of one dataset."
        )
        links.stop()


def pick_site(chosen: pd.DataFrame, columns) -> tuple[str, str]:
    """Hook and pooled position common to all chosen runs (`all` is per token, not pooled)."""
    hooks, positions = derived(chosen, ("site",), lambda: _common_site(chosen))
    if not hooks or not positions:
        st.warning("The selected runs share no hook and pooled position (last or mean).")
        links.stop()
    hook = links.pinned(
        columns[0].selectbox, "Hook", hooks, key="site", what="hook",
        default="resid_post" if "resid_post" in hooks else hooks[0],
        help="Where in each block the activations were captured.",
    )  # fmt: skip
    position = links.pinned(
        columns[1].selectbox, "Position", positions, key="position", what="position",
        default=positions[0],
        help="last: the last token; mean: the mean over tokens (first token left out).",
    )  # fmt: skip
    return hook, position


def _common_site(chosen: pd.DataFrame) -> tuple[list[str], list[str]]:
    hooks = [h for h in chosen["hooks"].iloc[0] if all(h in hs for hs in chosen["hooks"])]
    positions = [p for p in ("last", "mean") if all(p in ps for ps in chosen["positions"])]
    return hooks, positions


def rows_where(frame: pd.DataFrame, column: str, value) -> pd.DataFrame:
    """`frame[frame[column] == value]`, made once while the (shared) frame lives; read-only."""
    return derived(frame, ("where", column, value), lambda: frame[frame[column] == value])


def pick_baseline(labels: list[str], column, preferred: str = "neutral", *,
                  one_vs_rest: bool = False) -> str:  # fmt: skip
    """A pinned baseline label; with one_vs_rest, `ui.compute.REST` ("every other label") is
    offered after the labels."""
    if preferred not in labels:
        st.info(
            f"No `{preferred}` label in this selection; the baseline defaults to "
            f"{plain(short(labels[0]))}."
        )
    options = [*labels, REST] if one_vs_rest and REST not in labels else list(labels)
    return links.pinned(
        column.selectbox, "Baseline label", options, key="baseline", what="baseline label",
        default=preferred if preferred in labels else labels[0],
        help="Each direction is mean(label) - mean(baseline)"
        + (f"; {REST}: mean(label) - the mean of every sample of the other labels." if
           REST in options else "."),
    )  # fmt: skip


def baseline_note(baseline: str) -> None:
    """Say which baseline the directions are taken against, and what that implies."""
    if baseline == REST:
        st.caption(
            "Baseline: every other label (one vs rest). Each label's direction is its mean minus "
            "the mean of every sample of the other labels, so no two share one baseline's mean."
        )
        return
    st.caption(
        f"Baseline: {plain(baseline)}. Each direction is mean(label) - mean({plain(baseline)}); "
        "all of them share this baseline's mean, which pulls their cosines up. Pick "
        f"{REST} to take each label against the rest."
    )


def pick_layer(layers: list[int], column, *, key: str = "layer", run: str = "") -> int:
    where = f"run {run}" if run else "this run"
    return links.pinned(
        column.select_slider, "Layer", layers, key=key, what=f"a layer of {where}:",
        default=layers[len(layers) // 2],
        help="Block index, 0-based (see the run's layer convention on the Runs page).",
    )  # fmt: skip


def pick_count(column, label: str, options: list[int], *, value: int, key: str) -> int:
    """A pinned count from fixed steps (a slider, not a free number: see the module notes)."""
    return links.pinned(column.select_slider, label, options, key=key, default=value,
                        what=f"{label.lower()!r} =")  # fmt: skip


def default_runs(view: StoreView, models: int | None = None) -> list[str]:
    """`default_runs_by_labels` of the view's runs (`runs_or_stop`), worked out once per view
    for every session."""
    return list(_default_runs(view, models))


@shared(maxsize=16)
def _default_runs(view: StoreView, models: int | None) -> tuple[str, ...]:
    return tuple(default_runs_by_labels(runs_table(view)[0], models))


def default_runs_by_labels(runs: pd.DataFrame, models: int | None = None) -> list[str]:
    """Newest complete run per model (a partial one only where a model has no complete run) of
    the non-pair dataset with the most labels (at most `models`)."""
    labelled = complete_first(runs[~runs["has_pairs"] & (runs["labels"].map(len) >= 2)])
    if labelled.empty:
        return list(complete_first(runs).index[:1])
    # Runs come newest first; a stable sort keeps the newest first among equal label counts.
    best = labelled.assign(k=labelled["labels"].map(len))
    best = best.sort_values("k", ascending=False, kind="stable")
    chosen = labelled[labelled["dataset_sha256"] == best["dataset_sha256"].iloc[0]]
    return list(chosen.drop_duplicates("model").index[:models])


def subsample_note(shown: int, total: int, what: str, unit: str = "samples") -> None:
    """A caption saying `what` shows a subsample of `shown` of `total` (nothing if all)."""
    if shown < total:
        st.caption(subsample_text(shown, total, what, unit))


def subsample_text(shown: int, total: int, what: str, unit: str = "samples", *,
                   prefix: str = "") -> str:  # fmt: skip
    """`subsample_note`'s sentence after `prefix`, to end another caption with ("" if all)."""
    if shown >= total:
        return ""
    return (
        f"{prefix}{what} come from the run's fixed random subsample: {shown:,} of its {total:,} "
        f"{unit} (stratified, the same on every visit)."
    )
