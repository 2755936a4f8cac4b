"""The artifact store: immutable runs of Parquet files, read through DuckDB.

Only this package knows the file layout and speaks SQL. Read API:

    from store import open_store
    st = open_store("store_data")
    st.runs()                                   # healthy committed runs, newest first
    st.damaged_runs()                           # DamagedRun(folder, reason) for unreadable ones
    X, samples = st.vectors(run_id, "resid_post", layer=12, position="last")  # [n, d], DataFrame
    st.query("SELECT label, count(*) FROM samples WHERE run_id = ? GROUP BY 1", [run_id])
    sums = st.label_sums(run_id, "resid_post", "last")  # per-label counts, sums: [L, k, d]
    X, sub, layers = st.subsample(run_id, "resid_post", "last")  # fixed subsample [L, m, d]
    st.vector_sets(); st.vector_set(set_id)      # control vectors (store.vectorsets)
    st.readout(weights_sha256); st.iter_unembedding(weights_sha256)   # store.readouts

`st.query(sql, params)` runs one SELECT confined to the store's files (safe for user SQL).
`st.close()` or `with open_store(...) as st:` drops the DuckDB connection (done at exit anyway).

Write API (used by extraction): `RunWriter.create(...)`, `.add(...)`, `.commit(manifest)`.

Summaries (per-label sums, a fixed subsample) are written at commit; `python -m store summarize`
adds them to runs committed before. `st.summary_status(run_id)` says whether a run has them.

Modules: `layout` (paths), `manifest` (RunManifest), `catalog` (which run folders are healthy or
damaged), `files` (a run's Parquet files checked against its manifest), `sql` (the confined DuckDB
connection and its views), `summaries` (reading summaries), `summarize` (writing them), `reader`
(`Store`, composing those, and the reads), `writer`, `snapshot`, `atomic`, `errors`, `vectorsets`
(control vector sets), `readouts` (a model's final norm and unembedding, for reading directions
as tokens), `control_files` (.pt and GGUF bytes).
"""

from store.errors import StoreError
from store.manifest import RunManifest
from store.reader import (
    DamagedRun,
    LabelSums,
    QueryResult,
    RunSummary,
    Store,
    SummaryUnavailable,
    open_store,
)
from store.writer import RunWriter

__all__ = [
    "DamagedRun",
    "LabelSums",
    "QueryResult",
    "RunManifest",
    "RunSummary",
    "RunWriter",
    "Store",
    "StoreError",
    "SummaryUnavailable",
    "open_store",
]
