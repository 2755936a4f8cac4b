"""Widgets and messages shared by the analysis pages.

Every view-defining widget has a `key` and `bind="query-params"`, so the address bar holds the
view and a copied link reopens it. Two rules keep links working:

* Options are raw values (run ids, pair ids), never `format_func` labels: a bound widget writes
  its option's label into the URL, so labels would make links long and fragile.
* Keys differ from the Runs page's filter keys (model, dataset, hook, run): a key reused by a
  widget of another type on another page carries a stale value over on a page switch (the hook
  picker is therefore `site`).

Streamlit drops a URL value a widget cannot show (a label or layer the run lacks) without a
word; `warn_url_value` reads the URL first and says so. Functions ending in `_or_stop` show a
message and stop the page when nothing can be drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from store import StoreError
from ui.compute import Unsuitable, run_summaries, run_title
from ui.context import read_only

BIND = "query-params"


def stop_empty_store(path: str) -> None:
    """Say the store has no runs (and, where runs can be made, how to make them); stop."""
    if read_only():
        st.info("This read-only store has no committed runs.")
    else:
        st.info(
            f"No committed runs in `{path}` yet. Fill it with "
            f"`python -m extraction defaults --store {path}` or start one on the New run page."
        )
    st.stop()


def runs_or_stop(path: str, key: tuple[str, ...]) -> pd.DataFrame:
    """Summaries of the committed runs, indexed by run_id; a message and stop if none."""
    try:
        runs = run_summaries(path, key)
    except StoreError as exc:
        st.error(str(exc))
        st.stop()
    if runs.empty:
        stop_empty_store(path)
    return runs.set_index("run_id")


def show_problem(exc: Exception) -> None:
    """Unsuitable selections are warnings; store failures are errors. Never a traceback."""
    if isinstance(exc, Unsuitable):
        st.warning(str(exc))
    else:
        st.error(str(exc))


def warn_url_value(key: str, options: Sequence, what: str) -> None:
    """Warn about URL values for `key` that are not among `options` (the widget drops them)."""
    allowed = {str(o) for o in options}
    bad = [v for v in st.query_params.get_all(key) if v and v not in allowed]
    if bad:
        shown = ", ".join(str(o) for o in options[:12]) + (" ..." if len(options) > 12 else "")
        st.warning(
            f"The link asks for {what} {', '.join(repr(b) for b in bad)}, which this selection "
            f"does not have (it has: {shown}). Showing the default instead."
        )


def pick_runs(runs: pd.DataFrame, default: list[str], *, help: str) -> list[str]:
    options = list(runs.index)
    warn_url_value("runs", options, "run")
    return st.multiselect(
        "Runs", options, default=[r for r in default if r in options], key="runs", bind=BIND,
        help=help,
    )  # fmt: skip


def one_dataset_or_stop(chosen: pd.DataFrame) -> None:
    """Directions and comparisons only make sense over the same samples."""
    if chosen["dataset_sha256"].nunique() > 1:
        names = ", ".join(f"{run_title(r)}: {r['dataset']}" for _, r in chosen.iterrows())
        st.warning(
            "The selected runs use different datasets (or versions of one), so their samples "
            f"and labels do not match ({names}). Pick runs of one dataset."
        )
        st.stop()


def pick_site(chosen: pd.DataFrame, columns) -> tuple[str, str]:
    """Hook and pooled position common to all chosen runs (`all` is per token, not pooled)."""
    hooks = [h for h in chosen["hooks"].iloc[0] if all(h in hs for hs in chosen["hooks"])]
    positions = [p for p in ("last", "mean") if all(p in ps for ps in chosen["positions"])]
    if not hooks or not positions:
        st.warning("The selected runs share no hook and pooled position (last or mean).")
        st.stop()
    warn_url_value("site", hooks, "hook")
    warn_url_value("position", positions, "position")
    hook = columns[0].selectbox(
        "Hook", hooks, index=hooks.index("resid_post") if "resid_post" in hooks else 0,
        key="site", bind=BIND, help="Where in each block the activations were captured.",
    )  # fmt: skip
    position = columns[1].selectbox(
        "Position", positions, key="position", bind=BIND,
        help="last: the last token; mean: the mean over tokens (first token left out).",
    )  # fmt: skip
    return hook, position


def pick_baseline(labels: list[str], column, preferred: str = "neutral") -> str:
    if preferred not in labels:
        st.info(
            f"No `{preferred}` label in this selection; the baseline defaults to `{labels[0]}`."
        )
    warn_url_value("baseline", labels, "baseline label")
    index = labels.index(preferred) if preferred in labels else 0
    return column.selectbox(
        "Baseline label", labels, index=index, key="baseline", bind=BIND,
        help="Each direction is mean(label) - mean(baseline).",
    )  # fmt: skip


def pick_layer(layers: list[int], column, *, key: str = "layer", run: str = "") -> int:
    where = f"run {run}" if run else "this run"
    warn_url_value(key, layers, f"a layer of {where}:")
    return column.select_slider(
        "Layer", layers, value=layers[len(layers) // 2], key=key, bind=BIND,
        help="Block index, 0-based (see the run's layer convention on the Runs page).",
    )  # fmt: skip


def default_runs_by_labels(runs: pd.DataFrame, models: int | None = None) -> list[str]:
    """Newest run per model of the non-pair dataset with the most labels (at most `models`)."""
    labelled = runs[~runs["has_pairs"] & (runs["labels"].map(len) >= 2)]
    if labelled.empty:
        return list(runs.index[:1])
    # Runs come newest first; a stable sort keeps the newest first among equal label counts.
    best = labelled.assign(k=labelled["labels"].map(len))
    best = best.sort_values("k", ascending=False, kind="stable")
    chosen = labelled[labelled["dataset_sha256"] == best["dataset_sha256"].iloc[0]]
    return list(chosen.drop_duplicates("model").index[:models])
