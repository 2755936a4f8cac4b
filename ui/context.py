"""The one read-only store connection of the app, and cached reads over it.

`st.cache_resource` holds only the `Store` (its in-memory DuckDB connection); results go through
`st.cache_data` keyed by the store path, the arguments and the list of committed runs, so a run
committed by another process shows up on the next rerun without restarting the app.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from store import Store, StoreError, open_store

STORE_ENV = "ACTX_STORE"
DEFAULT_STORE = "store_data"


def default_store_path() -> str:
    return os.environ.get(STORE_ENV, DEFAULT_STORE)


@st.cache_resource(show_spinner=False)
def _store(path: str) -> Store:
    return open_store(path, create=True)


def store_path() -> str:
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
