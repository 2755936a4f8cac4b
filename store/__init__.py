"""The artifact store: immutable runs of Parquet files, read through DuckDB.

Only this package knows the file layout and speaks SQL. Read API:

    from store import open_store
    st = open_store("store_data")
    st.runs()                                   # committed runs' manifests, newest first
    X, samples = st.vectors(run_id, "resid_post", layer=12, position="last")  # [n, d], DataFrame
    st.query("SELECT label, count(*) FROM samples WHERE run_id = ? GROUP BY 1", [run_id])

Write API (used by extraction): `RunWriter.create(...)`, `.add(...)`, `.commit(manifest)`.
"""

from store.errors import StoreError
from store.manifest import RunManifest
from store.reader import QueryResult, Store, open_store
from store.writer import RunWriter

__all__ = ["QueryResult", "RunManifest", "RunWriter", "Store", "StoreError", "open_store"]
