"""Links that pin what they show, and links that open a run in a page.

A link copied from a page must reopen the same view after new runs are committed, so the address
bar names every value that defines the view, defaults included. How a page follows this:

* **Pin every view-defining widget** with `pinned` (or `pinned_toggle`); the `pick_*` helpers in
  ui.controls already do. Give it a key, a fixed list of options and the page's *resolved*
  default (e.g. `controls.default_runs_by_labels(runs)`, the middle layer of the chosen run). Its
  value is, in this order: what the visitor has just chosen in that widget; the URL's value, if
  it names an option; else `default`, with one plain warning (escaped, cut to 80 characters)
  naming the URL value it dropped. A run id the store does not have is said to be gone.
* **Stop with `links.stop()`**, never `st.stop()` (a test checks the pages): app.py runs every
  page through `run_pinned`, which calls `begin()` before it and `finish()` after it, and
  `stop()` calls `finish()` first (after st.stop() no Streamlit call gets through). `finish`
  makes the URL exactly the values this run pinned, in one update (one browser history entry),
  and offers that link in the sidebar's "Copy link" popover (filled once it is opened). A page
  that pins nothing (New run, whose form widgets use Streamlit's `bind`) keeps its URL as it is.
* **Open a run elsewhere** with `open_in(runs, run_id)`: the pages it can be opened in and the
  query that opens it there; `page_links` draws them as buttons, `relative_url` makes one for a
  table's `LinkColumn`. A page that takes new query keys adds its target in `open_in`.

Why not `bind="query-params"`: Streamlit leaves a bound widget's default out of the URL (and
removes it again when a visitor picks the default), so a link made at the defaults named no runs
and opened whatever run was newest when it was followed.

Rules: a key means the same on every page that uses it (`runs`, `site`, `layer`, ...) and must
differ from the keys of widgets that still use `bind` (New run's). Options are matched as text
(`str(option)`; toggles as true/false in any case), so a hostile URL value can only pick an
option or be dropped; nothing from the URL reaches a widget unchecked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from settings.run import ANSWER_POSITION
from settings.vectors import VECTOR_HOOKS
from ui.compute import complete_first, runs_table
from ui.context import StoreView, plain, short
from ui.shared import derived, shared

MAX_ECHOED = 3  # bad URL values named in one warning
MAX_LISTED = 12  # options listed in one warning
_PINS = "_links_pins"  # key -> URL value(s) this run pinned
_TOUCHED = "_links_touched"  # keys of widgets the visitor changed just before this run
_WRITTEN = "_links_written"  # the query this session last wrote, {key: [values]}
LINK_OPEN = "_links_copy_open"  # whether the sidebar's Copy link popover is open


# -- pinning ---------------------------------------------------------------------------------
def run_pinned(run: Callable[[], None]) -> None:
    """Run a page between `begin` and `finish`, so its pins reach the URL when it ends.

    A page that stops early must call `stop()`, not `st.stop()`: after st.stop() every Streamlit
    call stops again, so nothing could be written. A run interrupted by a rerun (the visitor
    changed a widget meanwhile) writes nothing; the rerun does.
    """
    begin()
    try:
        run()
        finish()
    finally:  # however the run ended, the visitor's changes are spent (no Streamlit call here)
        st.session_state.pop(_TOUCHED, None)


def stop() -> NoReturn:
    """`st.stop()` for a page that pins: writes what this run pinned, then stops."""
    finish()
    st.stop()


def begin() -> None:
    """Start a page run: nothing pinned yet. The visitor's changes (`_TOUCHED`, filled by the
    widgets' callbacks before the run) are always there, if empty: a missing session-state key
    costs Streamlit an exception on every lookup, and each pinned widget looks."""
    st.session_state[_PINS] = {}
    if _TOUCHED not in st.session_state:
        st.session_state[_TOUCHED] = set()


def finish() -> None:
    """End a page run: write what it pinned into the URL (one update) and offer the link."""
    pins = st.session_state.pop(_PINS, None)
    st.session_state.pop(_TOUCHED, None)
    if not pins:
        return
    query = {key: value if value else "" for key, value in pins.items()}  # [] -> "key="
    wanted = {key: _as_list(value) for key, value in query.items()}
    if {key: st.query_params.get_all(key) for key in st.query_params} != wanted:
        st.query_params.from_dict(query)
    st.session_state[_WRITTEN] = wanted
    # Filled only once opened (its state is LINK_OPEN): two elements fewer on every view, each a
    # message to each visitor (bench/bench_load.py); opening it reruns the page.
    box = st.sidebar.popover("Copy link", icon=":material/link:", width="stretch", key=LINK_OPEN,
                             on_change="rerun")  # fmt: skip
    if box.open:
        box.caption(
            "This link reopens this view as it is now: the runs and every setting are in it, "
            "so runs committed later do not change what it shows."
        )
        box.code(view_link(query), language=None, wrap_lines=True)


def view_link(query: dict) -> str:
    """The current page's address with `query`: absolute when the browser told us its URL."""
    return f"{st.context.url or ''}?{urlencode(query, doseq=True)}"


def _as_list(value) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


def _text(option) -> str:
    if isinstance(option, bool):
        return "true" if option else "false"
    return str(option)


def _touch(key: str) -> None:
    """on_change of a pinned widget: the visitor's choice wins over the URL on this rerun."""
    st.session_state.setdefault(_TOUCHED, set()).add(key)


def _pin(key: str, value, many: bool) -> None:
    pins = st.session_state.setdefault(_PINS, {})
    pins[key] = [_text(v) for v in value] if many else _text(value)


def _from_url(key: str, options: list, *, many: bool, fold_case: bool):
    """(the URL's value, or None when it has none usable; the URL values naming no option).

    `?key=` (empty) is an explicit empty selection for a multiselect and nothing for the rest.
    """
    raw = st.query_params.get_all(key)
    if not raw:
        return None, []

    def fold(text: str) -> str:
        return text.lower() if fold_case else text

    by_text = {fold(_text(o)): o for o in options}
    if many:
        given = [v for v in raw if v != ""]
        picked = list(dict.fromkeys(by_text[fold(v)] for v in given if fold(v) in by_text))
        bad = [v for v in given if fold(v) not in by_text]
        return (None if given and not picked else picked), bad
    value = raw[-1]
    if fold(value) in by_text:
        return by_text[fold(value)], []
    return None, [value] if value else []


def _resolve(key: str, options: list, default, *, what: str, many: bool, fold_case: bool):
    touched = st.session_state.get(_TOUCHED, set())
    if key in touched and key in st.session_state:
        touched.discard(key)
        chosen = st.session_state[key]
        if many:
            return [v for v in chosen if v in options]
        if chosen in options:
            return chosen
    value, bad = _from_url(key, options, many=many, fold_case=fold_case)
    # A value this session wrote itself and a later choice made invalid (e.g. a layer the newly
    # picked run lacks) is replaced quietly; one from a link is named.
    if bad and st.query_params.get_all(key) != st.session_state.get(_WRITTEN, {}).get(key):
        _warn(bad, options, what, kept=bool(value))
    return default if value is None else value


def _warn(bad: list[str], options: list, what: str, *, kept: bool) -> None:
    named = ", ".join(short(b) for b in bad[:MAX_ECHOED])
    if len(bad) > MAX_ECHOED:
        named += f" and {len(bad) - MAX_ECHOED} more"
    if what == "run":
        instead = "Showing the others." if kept else "Showing the default instead."
        st.warning(
            plain(
                f"The link names run {named}, which this store does not have (deleted, or the "
                f"link was made on another store). {instead}"
            )
        )
        return
    listed = ", ".join(short(o, 40) for o in options[:MAX_LISTED])
    listed += " ..." if len(options) > MAX_LISTED else ""
    st.warning(
        plain(
            f"The link asks for {what} {named}, which this selection does not have "
            f"(it has: {listed}). Showing the default instead."
        )
    )


def pinned(widget: Callable, label: str, options: Sequence, *, key: str, default, what: str,
           many: bool = False, **kwargs):  # fmt: skip
    """A view-defining widget whose value is pinned in the URL; returns its value.

    widget: an option widget of Streamlit (`st.selectbox`, `column.multiselect`,
    `column.select_slider`, ...), called as widget(label, options, key=..., **kwargs); many: it
    holds a list (multiselect). default: the page's resolved default (an option, or a list of
    options). what: how a warning names a value ("hook", "baseline label"; "run" for run ids).
    """
    options = list(options)
    st.session_state[key] = _resolve(key, options, default, what=what, many=many,
                                     fold_case=False)  # fmt: skip
    value = widget(label, options, key=key, on_change=_touch, args=(key,), **kwargs)
    _pin(key, value, many)
    return value


def choose(key: str, value) -> None:
    """Set pinned widget `key` to `value` from elsewhere on the page (e.g. a clicked table row),
    as if the visitor had picked it there: call it before the widget is drawn in this run."""
    st.session_state[key] = value
    _touch(key)


def pinned_toggle(column, label: str, *, key: str, default: bool, help: str | None = None) -> bool:
    """A toggle pinned in the URL as true / false (read in any case)."""
    st.session_state[key] = _resolve(key, [True, False], default, what=f"{label!r} =",
                                     many=False, fold_case=True)  # fmt: skip
    value = column.toggle(label, key=key, on_change=_touch, args=(key,), help=help)
    _pin(key, value, False)
    return value


def pinned_text(widget: Callable, label: str, *, key: str, default: str, max_chars: int,
                what: str, **kwargs) -> str:  # fmt: skip
    """A free-text widget (`st.text_area`, `st.text_input`) pinned in the URL; returns its text.

    The text is whatever the visitor typed, else the URL's, else `default`. A URL value longer
    than `max_chars` is dropped with one warning (its length, never its text); anything shorter
    reaches the widget as text, so the page must treat it as untrusted input.
    """
    touched = st.session_state.get(_TOUCHED, set())
    if key in touched and key in st.session_state:
        touched.discard(key)
        value = str(st.session_state[key])
    else:
        raw = st.query_params.get_all(key)
        value = raw[-1] if raw else default
        if len(value) > max_chars:
            st.warning(f"The link's {what} is {len(value):,} characters long, over the "
                       f"{max_chars:,} this page reads. Showing the default instead.")  # fmt: skip
            value = default
    st.session_state[key] = value
    value = widget(label, key=key, max_chars=max_chars, on_change=_touch, args=(key,), **kwargs)
    _pin(key, value, False)
    return value


# -- open a run in a page ----------------------------------------------------------------------
@dataclass(frozen=True)
class OpenIn:
    """A page a run can be opened in: its script, its title, the query that opens the run."""

    page: str
    title: str
    query: dict[str, str | list[str]] = field(hash=False)
    analysis: bool = True  # an analysis of the run (False: Query, which every run opens in)

    @property
    def url_path(self) -> str:
        return Path(self.page).stem  # st.Page's default url path

    def relative_url(self) -> str:
        """For a `LinkColumn`: resolved against the page it is shown on, so a base path works."""
        return f"{self.url_path}?{urlencode(self.query, doseq=True)}"


def has_answers(run: pd.Series) -> bool:
    """Whether a run (a row of `ui.compute.run_summaries`) holds answers to paired prompts: the
    Propositions page shows it."""
    return bool(run["has_pairs"]) and ANSWER_POSITION in run["positions"]


def makes_vectors(run: pd.Series) -> bool:
    """Whether control vectors can be made from a run (a row of `ui.compute.run_summaries`):
    pairs, the last token, a residual hook. The Vectors page opens it (`vec_run`)."""
    hooks = run.get("hooks", ())
    return (
        bool(run["has_pairs"])
        and "last" in run["positions"]
        and any(h in VECTOR_HOOKS for h in hooks)
    )


def open_in(runs: pd.DataFrame, run_id: str) -> tuple[OpenIn, ...]:
    """Where run `run_id` can be opened: Directions (two labels or more), Pairs (minimal pairs),
    Cross-model (beside the newest complete run of the same dataset on another model),
    Propositions (answers to paired prompts: a `--generate N` run of pairs), Vectors (its
    newest vector set, or the form to compute one: `makes_vectors`) and Query (any run).

    runs: run summaries indexed by run_id (`ui.controls.runs_or_stop`), newest first. Worked out
    once per run while the shared frame lives (`ui.shared.derived`).
    """
    return derived(runs, ("open in", run_id), lambda: tuple(_open_in(runs, run_id)))


def _open_in(runs: pd.DataFrame, run_id: str) -> list[OpenIn]:
    run = runs.loc[run_id]
    targets = []
    if len(run["labels"]) >= 2:
        targets.append(OpenIn("pages/directions.py", "Directions", {"runs": [run_id]}))
    if run["has_pairs"]:
        targets.append(OpenIn("pages/pairs.py", "Pairs", {"pairs_run": run_id}))
    same = runs[(runs["dataset_sha256"] == run["dataset_sha256"]) & (runs.index != run_id)]
    others = complete_first(same[same["model"] != run["model"]])
    if len(run["labels"]) >= 2 and not others.empty:
        partner = others.index[0]
        query = {"runs": [run_id, partner], "a": run_id, "b": partner}
        targets.append(OpenIn("pages/cross_model.py", "Cross-model", query))
    if has_answers(run):
        targets.append(OpenIn("pages/propositions.py", "Propositions", {"prop_run": run_id}))
    if makes_vectors(run):
        targets.append(OpenIn("pages/vectors.py", "Vectors", {"vec_run": run_id}))
    # Every run: its samples per label, the Query page's default query, with the run as $run.
    targets.append(OpenIn("pages/query.py", "Query", {"run": run_id}, analysis=False))
    return targets


def page_links(targets: Sequence[OpenIn]) -> None:
    """One button per target, side by side (one horizontal container: one layout block, where
    columns sent one per button and one more)."""
    if not targets:
        return
    row = st.container(horizontal=True, gap="small")
    for target in targets:
        row.page_link(target.page, label=f"Open in {target.title}", width="content",
                      icon=":material/open_in_new:", query_params=target.query)  # fmt: skip


OPEN_TITLES = ("Directions", "Pairs", "Cross-model", "Propositions", "Vectors", "Query")


@shared(maxsize=16)
def run_link_columns(view: StoreView, run_ids: tuple[str, ...]) -> tuple[pd.DataFrame, dict]:
    """`link_columns` over the view's run summaries (`runs_table`), made once per view and
    selection for every session (the Runs page's table; read-only)."""
    runs, _ = runs_table(view)
    return link_columns(runs, run_ids)


def link_columns(runs: pd.DataFrame, run_ids: Sequence[str]) -> tuple[pd.DataFrame, dict]:
    """For a table with one row per run id: an "open in" link column per page (empty where the
    run cannot be opened there; `relative_url`) and the `column_config` that shows them."""
    rows = []
    for run_id in run_ids:
        targets = open_in(runs, run_id) if run_id in runs.index else []
        urls = {target.title: target.relative_url() for target in targets}
        rows.append({f"open {title}": urls.get(title) for title in OPEN_TITLES})
    config = {
        f"open {title}": st.column_config.LinkColumn(
            f"Open in {title}",
            display_text="open",
            width="small",
            help=f"Opens the run in {title} (a new tab)",
        )  # fmt: skip
        for title in OPEN_TITLES
    }
    return pd.DataFrame(rows, columns=list(config)), config
