"""The Query page's engine: a visitor's SQL over the store's views, through `Store.query`.

Every query runs confined as for a hosted visitor, in writable mode too (`public=True`, see
store.sql): one SELECT over the views `runs`, `samples`, `label_means`, `site_norms` and
`vectors` only, no table or file functions, no function that reveals the server. The run picked
on the page is bound as the parameter `$run` (never pasted into the text); rows are capped at
the page's choice, values at MAX_VALUES (a vector cell counts its length, so `vectors` cannot
return millions of floats), and a query still running after QUERY_TIMEOUT_S is stopped. Results
are cached per store view, text, run and cap, like every other page result.
"""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from store.sql import PUBLIC_VIEWS, QueryResult
from ui.context import StoreView

QUERY_TIMEOUT_S = 10.0
MAX_SQL_CHARS = 10_000
ROW_CAPS = [100, 1_000, 10_000]
MAX_VALUES = 500_000  # values in one result; a 576-wide vector counts 576
RUN_PARAMETER = re.compile(r"\$run\b")
DEFAULT_SQL = """SELECT label, count(*) AS samples
FROM samples
WHERE run_id = $run
GROUP BY label
ORDER BY label"""
EXAMPLES = {
    "Samples per label of the run": DEFAULT_SQL,
    "Typical activation norm per layer": "SELECT hook, position, layer, typical_norm\n"
    "FROM site_norms WHERE run_id = $run ORDER BY hook, position, layer",
    "Runs by model": "SELECT model, count(*) AS runs, sum(n_samples) AS samples\n"
    "FROM runs GROUP BY model ORDER BY model",
}


@st.cache_data(show_spinner="Running the query...", max_entries=64)
def run_query(view: StoreView, sql: str, run_id: str | None, max_rows: int) -> QueryResult:
    """The query's capped rows; `$run` is bound to `run_id`. Raises StoreError (refused, failed,
    too slow) with a message fit for a visitor."""
    params = {"run": run_id} if RUN_PARAMETER.search(sql) else None
    return view.store.query(sql, params, max_rows=max_rows, timeout_s=QUERY_TIMEOUT_S,
                            public=True, max_values=MAX_VALUES)  # fmt: skip


@st.cache_data(show_spinner=False, max_entries=16)
def view_columns(view: StoreView) -> pd.DataFrame:
    """One row per view: its name and columns, for the page's reference."""
    rows = []
    for name in PUBLIC_VIEWS:
        result = view.store.query(f"SELECT * FROM {name} LIMIT 0", public=True)
        rows.append({"view": name, "columns": ", ".join(result.frame.columns)})
    return pd.DataFrame(rows)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")
