"""The app's store, the one view of it every cached read takes, and what a visitor may be shown.

`st.cache_resource` holds only the `Store` (its in-memory DuckDB connection). Cached reads
(`st.cache_data` in ui.compute and ui.pairs_compute) take a `StoreView` first: the store folder
and the runs committed when this rerun started, frozen and hashable, so it is the cache key. A
run committed by another process changes the view on the next rerun and shows up without a
restart; a cached function opens the store from `view.path` (`view.store`).

Read-only mode is `settings.env.read_only()`, the one decision (it fails closed; re-exported here
for the pages, through ui.shared, which reads the secrets files once per script run). It pins the
store to ACTX_STORE, and nothing a visitor sees names a server path: `public_text` and
`public_manifest` cut absolute paths down to their last part (the store's folder name, a model or
dataset file name). `run_page` turns an unexpected exception into one line naming its type, with
the traceback in the server log only; in read-only mode Streamlit's own error display is set to
"none" as well, for anything that escapes it.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.navigation.page import StreamlitPage
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from store import DamagedRun, Store, StoreError, open_store
from store.fs import is_uri, shown_uri
from ui.shared import read_only, setting, shared

__all__ = [
    "CREATE_KEY",
    "StoreView",
    "current_view",
    "damaged_runs",
    "default_store_path",
    "describe_layers",
    "get_store",
    "hide_error_details",
    "manifest_json",
    "may_create",
    "page",
    "plain",
    "public_manifest",
    "public_text",
    "read_only",
    "RUNS_TABLE",
    "run_page",
    "runs_frame",
    "setting",
    "show_store_error",
    "store_at",
    "store_path",
    "use_app_navigation",
]

log = logging.getLogger("activation_explorer.app")

# An absolute (or home-relative) path inside a message: not after a word character, a dot or a
# colon or slash, so "a/b" and "http://x/y" are left alone.
_PATH = re.compile(r"(?<![\w.:~/-])~?/[^\s'\"`,;()\[\]{}<>]+")
# What Markdown (and Streamlit's :emoji:, :color[...] and $math$) reads anywhere in a line, and
# what it reads at the start of one (a list, heading or quote), escaped by `plain`.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>#~$:])")
_LINE_START = re.compile(r"^(\s*\d*)([-+=.)])")
# What GFM turns into a link even when escaped (its autolink pass runs on the unescaped text):
# a zero-width space after the scheme, "www" or "@" breaks the pattern and shows the same.
_AUTOLINK = re.compile(r"(://|(?i:www)(?=\\?\.)|@)")
SHORT = 80  # characters of a URL value echoed in a message


def default_store_path() -> str:
    return setting("ACTX_STORE")


@shared(maxsize=16)
def _store(path: str, create: bool) -> Store:
    # One Store per folder for every session (its DuckDB connection, its catalog cache), as
    # st.cache_resource would keep it, without hashing the arguments on each of the dozen
    # lookups a view makes (bench/bench_load.py).
    return open_store(path, create=create)


CREATE_KEY = "store_create"  # the sidebar's "Create it if missing" checkbox


def may_create(path: str) -> bool:
    """Whether a missing store folder at `path` may be made: never in read-only mode; the
    configured store (ACTX_STORE) always; a path typed in the sidebar only when its "Create it
    if missing" box is ticked, so a typo there shows an error instead of an empty store."""
    if read_only():
        return False
    return path == default_store_path() or bool(st.session_state.get(CREATE_KEY, False))


def store_at(path: str) -> Store:
    """The shared store for `path`, made if missing only where `may_create` allows."""
    return _store(path, may_create(path))


def use_app_navigation() -> None:
    """Make a page opened straight from a link run inside app.py's navigation.

    Streamlit quirk (1.67): while no session of this server process has run app.py yet, a URL
    such as /directions on an app that has a `pages/` folder runs the page through the legacy
    folder navigation: app.py (page config, sidebar, `st.navigation`) is skipped. The flag that
    selects that mode is cleared by the first `st.navigation` call, so clear it and rerun once.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_PAGES: dict[tuple, StreamlitPage] = {}
_PAGES_LOCK = threading.Lock()


def page(script: str, **kwargs) -> StreamlitPage:
    """`st.Page(script, **kwargs)`, made once per process and copied for each rerun.

    app.py declares its pages on every rerun, and each `st.Page` resolves its file on disk
    (path resolution, stats) and reads its icon: about a millisecond of every view
    (bench/bench_load.py). A page holds one flag of its own per rerun (`st.navigation` marks the
    one that may run), so every rerun gets a shallow copy: sessions never share that flag.
    """
    ctx = get_script_run_ctx()
    parent = ctx.pages_manager.main_script_parent if ctx else None  # what `script` is relative to
    key = (parent, script, tuple(sorted(kwargs.items())))
    with _PAGES_LOCK:
        made = _PAGES.get(key)
    if made is None:
        made = st.Page(script, **kwargs)
        with _PAGES_LOCK:
            _PAGES[key] = made
    return copy.copy(made)


def store_path() -> str:
    use_app_navigation()  # every page asks for the store first
    if read_only():  # the sidebar field is gone, and session state must not reopen it
        return default_store_path()
    return st.session_state.get("store_path", default_store_path())


def get_store() -> Store:
    return store_at(store_path())


@dataclass(frozen=True)
class StoreView:
    """The store as one rerun sees it: its folder and the ids of its healthy committed runs
    (sorted). Frozen and hashable: st.cache_data keys every cached read by it."""

    path: str
    run_ids: tuple[str, ...]

    @property
    def store(self) -> Store:
        return store_at(self.path)

    @property
    def name(self) -> str:
        """The folder's name: how messages name the store in read-only mode."""
        return Path(self.path).name or self.path

    @property
    def on_object_storage(self) -> bool:
        """Whether the store is a URI (`s3://...`, see store.fs) rather than a folder."""
        return is_uri(self.path)

    def shown(self) -> str:
        """The store as a message may show it: its path, or only its name when read-only."""
        return self.name if read_only() else self.path


def current_view() -> StoreView:
    """This rerun's view of the store; an error and a stop if the store cannot be opened."""
    path = store_path()
    if not read_only() and not may_create(path) and not _exists(path):
        st.error(
            plain(
                public_text(
                    f"The store folder {path!r} does not exist. Check the path in the sidebar, "
                    'or tick "Create it if missing" there to make a new, empty store.'
                )
            )
        )
        st.stop()
    try:
        run_ids, damaged = store_at(path).listing()  # one listing per view: damaged_runs reuses it
    except (StoreError, OSError) as exc:  # e.g. the sidebar names a file, not a folder
        message = str(exc)
        if read_only() and is_uri(path):  # a visitor gets the store's name, not its bucket
            message = message.replace(shown_uri(path), StoreView(path, ()).name)
        st.error(plain(public_text(f"Cannot open the store: {message}")))
        st.stop()
    view = StoreView(path, tuple(run_ids))
    with _LISTED_LOCK:
        _LISTED[view] = tuple(damaged)
        _LISTED.move_to_end(view)
        while len(_LISTED) > 16:
            _LISTED.popitem(last=False)
    return view


# The damaged runs of each view's latest listing (current_view), so a page that names them does
# not list the store a second time.
_LISTED: OrderedDict[StoreView, tuple[DamagedRun, ...]] = OrderedDict()
_LISTED_LOCK = threading.Lock()


def _exists(path: str) -> bool:
    if is_uri(path):
        return True  # open_store asks the server, and names what is wrong
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError):  # e.g. a NUL byte: open_store names the path
        return True


def damaged_runs(view: StoreView) -> list[DamagedRun]:
    """Run folders the store cannot read, each with its reason (`Store.damaged_runs`), as the
    listing that made `view` found them (a view made elsewhere lists the store again)."""
    with _LISTED_LOCK:
        listed = _LISTED.get(view)
    return list(listed) if listed is not None else view.store.damaged_runs()


@shared(maxsize=16)
def runs_frame(view: StoreView) -> pd.DataFrame:
    """One row per healthy committed run, for the Runs page table (see `RUNS_TABLE`). Shared
    by every session (ui.shared): filter it, never assign into it."""
    store = view.store
    rows = []
    for m in store.runs():
        rows.append(
            {
                "run_id": m.run_id,
                "name": m.name,
                "model": m.model,
                "dataset": m.dataset_name,
                "samples": m.n_samples,
                "layers": describe_layers(m.layers, m.n_layers),
                "hooks": ", ".join(m.hooks),
                "positions": ", ".join(m.positions),
                "size_mb": round(store.run_size_bytes(m.run_id) / 1e6, 2),
                "created_at": m.created_at,
                "n_layers": m.n_layers,
                "d_model": m.d_model,
                "backend": m.backend,
                "dtype": m.dtype,
                "samples_per_s": m.timings.get("samples_per_s"),
            }
        )
    return pd.DataFrame(rows)


def describe_layers(layers, n_layers: int) -> str:
    """Which blocks a run captured, of how many: "all 30", "2 of 30: 0-1", "3 of 30: 0, 4, 8"."""
    layers = sorted(layers)
    if layers == list(range(n_layers)):
        return f"all {n_layers}"
    spans, start = [], 0
    for i in range(1, len(layers) + 1):
        if i == len(layers) or layers[i] != layers[i - 1] + 1:
            first, last = layers[start], layers[i - 1]
            spans.append(str(first) if first == last else f"{first}-{last}")
            start = i
    return f"{len(layers)} of {n_layers}: {', '.join(spans)}"


_C = st.column_config
# The Runs table: clear names, the key columns first (they fit a laptop screen), then the rest.
RUNS_TABLE = {
    "name": _C.TextColumn("Name", pinned=True),
    "model": _C.TextColumn("Model"),
    "dataset": _C.TextColumn("Dataset"),
    "samples": _C.NumberColumn("Samples", format="%d"),
    "layers": _C.TextColumn("Layers captured", help="Decoder blocks captured, of the model's"),
    "hooks": _C.TextColumn("Hooks"),
    "positions": _C.TextColumn("Positions", help="last, mean (pooled) and all (every token)"),
    "size_mb": _C.NumberColumn("Size (MB)", format="%.1f"),
    "created_at": _C.TextColumn("Created"),
    "run_id": _C.TextColumn("Run id"),
    "n_layers": _C.NumberColumn("Model layers", format="%d"),
    "d_model": _C.NumberColumn("Width (d_model)", format="%d"),
    "backend": _C.TextColumn("Backend"),
    "dtype": _C.TextColumn("Stored as"),
    "samples_per_s": _C.NumberColumn("Capture speed (samples/s)", format="%.1f"),
}


# -- what a visitor is shown -----------------------------------------------------------------
def plain(text: object) -> str:
    """`text` for a Markdown message, shown as written on one line: no link, emphasis, heading,
    :icon: or $math$ can come from a URL value, a label or a file name."""
    escaped = _MARKDOWN.sub(r"\\\1", " ".join(str(text).splitlines()))
    escaped = _LINE_START.sub(r"\1\\\2", escaped)
    return _AUTOLINK.sub(lambda m: m.group(0) + "\u200b", escaped)


def short(value: object, limit: int = SHORT) -> str:
    """A value cut to `limit` characters (a URL value may be 100 KB), quoted, for `plain`."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def public_text(text: object) -> str:
    """`text` with every absolute server path cut to its last part, in read-only mode."""
    text = str(text)
    if not read_only():
        return text
    return _PATH.sub(lambda m: Path(m.group(0).rstrip("/.")).name or "/", text)


def public_manifest(manifest: dict) -> dict:
    """A manifest as a visitor may see it: in read-only mode no string names a server path;
    `model_source` that is a path becomes the model's (public) name."""
    if not read_only():
        return manifest

    def scrub(value):
        if isinstance(value, str):
            return public_text(value)
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    out = scrub(manifest)
    source = str(manifest.get("model_source", ""))
    if _PATH.fullmatch(source):
        out["model_source"] = public_text(manifest.get("model", "")) or out["model_source"]
    return out


def manifest_json(manifest_text: str) -> dict:
    """`RunManifest.to_json()` text as the dict a visitor may see (`public_manifest`)."""
    return public_manifest(json.loads(manifest_text))


def show_store_error(exc: Exception) -> None:
    st.error(plain(public_text(exc)))


# -- unexpected failures -----------------------------------------------------------------------
def hide_error_details() -> None:
    """Read-only: Streamlit shows an uncaught exception as a generic message, no type, no trace.

    `client.showErrorDetails` is one of the few options a script may set (it is global to the
    server process, as read-only mode is). It is only ever tightened here, never loosened.
    """
    if read_only():
        st.set_option("client.showErrorDetails", "none")


def run_page(run: Callable[[], None]) -> None:
    """Run a page; an exception it does not handle becomes one line naming its type.

    The traceback goes to the server log. Outside read-only mode the details follow in a closed
    expander, for whoever runs the app locally; st.stop and st.rerun pass through (they are not
    Exceptions).
    """
    try:
        run()
    except Exception as exc:
        log.exception("a page failed")
        st.error(f"This view failed: {type(exc).__name__}. The details are in the server log.")
        if not read_only():
            with st.expander("Details"):
                st.exception(exc)
