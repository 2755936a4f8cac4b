"""The one read-only store connection of the app, and cached reads over it.

`st.cache_resource` holds only the `Store` (its in-memory DuckDB connection); results go through
`st.cache_data` keyed by the store path, the arguments and the list of committed runs, so a run
committed by another process shows up on the next rerun without restarting the app.

Settings (`setting`) come from the environment first, then `.streamlit/secrets.toml`. Read-only
mode (ACTX_READ_ONLY=1 or `read_only = true` in secrets) pins the store to ACTX_STORE: a visitor
cannot point the app at another folder, and every write (launch, cancel, upload) refuses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from store import Store, StoreError, open_store
from store.jobs import READ_ONLY_ENV

STORE_ENV = "ACTX_STORE"
DEFAULT_STORE = "store_data"


def default_store_path() -> str:
    return os.environ.get(STORE_ENV, DEFAULT_STORE)


def setting(key: str, env: str, default: str) -> str:
    """The environment variable `env`, else secrets.toml's `env` or `key`, else `default`."""
    if env in os.environ:
        return os.environ[env]
    try:
        if st.secrets.load_if_toml_exists():
            for name in (env, key):
                if name in st.secrets:
                    return str(st.secrets[name])
    except Exception:  # a broken secrets file must not take the app down
        pass
    return default


def read_only() -> bool:
    """True in hosted mode: no runs, uploads, cancels or deletes, and a fixed store path."""
    return setting("read_only", READ_ONLY_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    return open_store(path, create=True)


def store_at(path: str) -> Store:
    """The shared store for `path` (cached functions get the path, not the Store, as input)."""
    return _store(path)


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


def store_path() -> str:
    use_app_navigation()  # every page asks for the store first
    if read_only():  # the sidebar field is gone, and session state must not reopen it
        return default_store_path()
    return st.session_state.get("store_path", default_store_path())


def get_store() -> Store:
    return _store(store_path())


def runs_key(store: Store) -> tuple[str, ...]:
    """Changes whenever a run is committed or removed: part of every cache key."""
    return tuple(store.run_ids())


@st.cache_data(show_spinner=False, max_entries=32)
def runs_frame(path: str, key: tuple[str, ...]) -> pd.DataFrame:  # noqa: ARG001 - cache key
    store = _store(path)
    rows = []
    for m in store.runs():
        rows.append(
            {
                "run_id": m.run_id,
                "name": m.name,
                "model": m.model,
                "dataset": m.dataset_name,
                "samples": m.n_samples,
                "layers": len(m.layers),
                "n_layers": m.n_layers,
                "d_model": m.d_model,
                "hooks": ", ".join(m.hooks),
                "positions": ", ".join(m.positions),
                "backend": m.backend,
                "dtype": m.dtype,
                "size_mb": round(store.run_size_bytes(m.run_id) / 1e6, 2),
                "samples_per_s": m.timings.get("samples_per_s"),
                "created_at": m.created_at,
            }
        )
    return pd.DataFrame(rows)


def show_store_error(exc: StoreError) -> None:
    st.error(str(exc))


def store_root() -> Path:
    return get_store().root
