"""Widgets and messages shared by the analysis pages.

Every view-defining widget has a `key` and `bind="query-params"`, so the address bar holds the
view and a copied link reopens it. Rules that keep links working, and hostile links harmless:

* Options are raw values (run ids, pair ids), never `format_func` labels: a bound widget writes
  its option's label into the URL, so labels would make links long and fragile.
* Keys differ from the Runs page's filter keys (model, dataset, hook, run): a key reused by a
  widget of another type on another page carries a stale value over on a page switch (the hook
  picker is therefore `site`).
* Every bound widget picks from a fixed list of options (selectbox, multiselect, select_slider,
  toggle), never a free number or text. Streamlit seeds a widget from the URL of the request
  before any page code can change it (deleting `st.query_params[key]` does not stop the seeding),
  and it matches option widgets' URL values against their options, dropping the rest; a free
  number_input instead converts the value first (`?top=inf` raised OverflowError in 1.67).

`warn_url_value` is the one check of a URL value: it reads the URL before the widget and says, in
plain text (escaped, cut to 80 characters), which values the widget will drop. Functions ending
in `_or_stop` show a message and stop the page when nothing can be drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from store import StoreError
from ui.compute import Unsuitable, run_summaries, run_title
from ui.context import StoreView, damaged_runs, plain, public_text, read_only, short

BIND = "query-params"
MAX_ECHOED = 3  # bad URL values named in one warning


def stop_empty_store(view: StoreView) -> None:
    """Say the store has no runs (and, where runs can be made, how to make them); stop."""
    if read_only():
        st.info(f"The read-only store {plain(view.name)} has no committed runs.")
    else:
        st.info(
            f"No committed runs in `{view.path}` yet. Fill it with "
            f"`python -m extraction defaults --store {view.path}` or start one on the New run page."
        )
    st.stop()


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
    the Runs page lists them with their reasons.
    """
    try:
        summaries = run_summaries(view)
    except StoreError as exc:
        show_problem(exc)
        st.stop()
    left_out = len(summaries.unreadable) + len(_damaged(view))
    if left_out:
        st.caption(f"{left_out} damaged run(s) left out; the Runs page lists them and why.")
    if summaries.frame.empty:
        stop_empty_store(view)
    runs = summaries.frame.set_index("run_id")
    return runs.assign(model=runs["model"].map(public_text))  # a model may be a server folder


def _damaged(view: StoreView) -> list:
    try:
        return damaged_runs(view)
    except StoreError:
        return []


def warn_url_value(key: str, options: Sequence, what: str, *, fold_case: bool = False) -> None:
    """Warn about URL values for `key` that are not among `options` (the widget drops them)."""
    allowed = {str(o).lower() if fold_case else str(o) for o in options}
    values = st.query_params.get_all(key)
    bad = [v for v in values if v and (v.lower() if fold_case else v) not in allowed]
    if not bad:
        return
    named = ", ".join(short(b) for b in bad[:MAX_ECHOED])
    if len(bad) > MAX_ECHOED:
        named += f" and {len(bad) - MAX_ECHOED} more"
    shown = ", ".join(short(o, 40) for o in options[:12]) + (" ..." if len(options) > 12 else "")
    st.warning(
        plain(
            f"The link asks for {what} {named}, which this selection does not have "
            f"(it has: {shown}). Showing the default instead."
        )
    )


def toggle(column, label: str, *, value: bool, key: str, help: str | None = None) -> bool:
    warn_url_value(key, ("true", "false"), f"{label!r} =", fold_case=True)
    return column.toggle(label, value=value, key=key, bind=BIND, help=help)


def pick_runs(runs: pd.DataFrame, default: list[str], *, help: str) -> list[str]:
    options = list(runs.index)
    warn_url_value("runs", options, "run")
    return st.multiselect(
        "Runs", options, default=[r for r in default if r in options], key="runs", bind=BIND,
        help=help,
    )  # fmt: skip


def pick_many(column, label: str, options: list, *, key: str, what: str, default=None) -> list:
    """A bound multiselect whose URL values are checked first."""
    warn_url_value(key, options, what)
    return column.multiselect(label, options, default=default, key=key, bind=BIND)


def pick_one(column, label: str, options: list, *, key: str, what: str, index: int = 0):
    """A bound selectbox whose URL value is checked first."""
    warn_url_value(key, options, what)
    return column.selectbox(label, options, index=index, key=key, bind=BIND)


def one_dataset_or_stop(chosen: pd.DataFrame) -> None:
    """Directions and comparisons only make sense over the same samples."""
    if chosen["dataset_sha256"].nunique() > 1:
        names = ", ".join(f"{run_title(r)}: {r['dataset']}" for _, r in chosen.iterrows())
        st.warning(
            "The selected runs use different datasets (or versions of one), so their samples "
            f"and labels do not match ({plain(names)}). Pick runs of one dataset."
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
            f"No `{preferred}` label in this selection; the baseline defaults to "
            f"{plain(short(labels[0]))}."
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


def pick_count(column, label: str, options: list[int], *, value: int, key: str) -> int:
    """A bound count from fixed steps (a slider, not a free number: see the module notes)."""
    warn_url_value(key, options, f"{label.lower()!r} =")
    return column.select_slider(label, options, value=value, key=key, bind=BIND)


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
