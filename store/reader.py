"""Read committed runs: manifests, sample tables, vectors, and a DuckDB query layer.

Reads never block a writer and a writer never blocks reads: the store is Parquet files plus an
in-memory DuckDB connection with views over the committed runs' files (a DuckDB database file
would lock readers out while a run writes). Committed files are immutable, so views only need
rebuilding when the set of committed runs changes; `refresh()` checks that cheaply.

Thread safety: one `Store` may be shared by threads (Streamlit sessions); every query runs on its
own `cursor()` of the shared connection, as DuckDB requires.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from store import layout
from store.errors import StoreError
from store.manifest import RunManifest

DEFAULT_MAX_ROWS = 10_000


@dataclass(frozen=True)
class QueryResult:
    """Rows of a capped query. `truncated` is True when more than `max_rows` rows matched."""

    frame: pd.DataFrame
    truncated: bool
    max_rows: int


def _vectors_to_numpy(column: pa.ChunkedArray | pa.Array, d_model: int) -> np.ndarray:
    """list<float> column -> float32 array [n, d_model]."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros((0, d_model), np.float32)
    return array.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d_model)


class Store:
    """A store directory. Cheap to construct (no I/O); methods read on demand."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._view_key: tuple[str, ...] | None = None
        self._manifests: dict[str, tuple[float, RunManifest]] = {}

    # -- runs ------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        runs = layout.runs_dir(self.root)
        if not runs.is_dir():
            return []
        return sorted(p.name for p in runs.iterdir() if layout.is_committed(p))

    def manifest(self, run_id: str) -> RunManifest:
        try:
            path = layout.manifest_path(layout.run_dir(self.root, run_id))
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        if not layout.is_committed(path.parent):
            raise StoreError(f"no committed run {run_id!r} in {self.root}")
        mtime = path.stat().st_mtime
        cached = self._manifests.get(run_id)
        if cached is None or cached[0] != mtime:
            try:
                cached = (mtime, RunManifest.from_json(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                raise StoreError(f"run {run_id!r}: unreadable manifest ({exc})") from exc
            self._manifests[run_id] = cached
        return cached[1]

    def resolve_run_id(self, name: str) -> str:
        """A committed run id, or an unambiguous prefix of one (`default-emotions-smollm2-135m`)."""
        ids = self.run_ids()
        if name in ids:
            return name
        matches = [run_id for run_id in ids if name and run_id.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise StoreError(f"run {name!r} is ambiguous: it starts {', '.join(matches)}")
        self.manifest(name)  # raises the usual error for unknown or malformed ids
        raise StoreError(f"no committed run {name!r} in {self.root}")

    def runs(self) -> list[RunManifest]:
        """Committed runs, newest first."""
        manifests = [self.manifest(run_id) for run_id in self.run_ids()]
        return sorted(manifests, key=lambda m: (m.created_at, m.run_id), reverse=True)

    def run_size_bytes(self, run_id: str) -> int:
        run = layout.run_dir(self.root, run_id)
        return sum(p.stat().st_size for p in run.rglob("*") if p.is_file())

    # -- connection and views --------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._con is None:
                self._con = duckdb.connect(":memory:")
            return self._con.cursor()

    def refresh(self) -> None:
        """(Re)build the `runs`, `samples` and `vectors` views if committed runs changed."""
        run_ids = tuple(self.run_ids())
        with self._lock:
            if self._view_key == run_ids and self._con is not None:
                return
        cursor = self._cursor()
        manifests = [self.manifest(r) for r in run_ids]
        runs_table = pd.DataFrame(
            [
                {
                    "run_id": m.run_id,
                    "name": m.name,
                    "model": m.model,
                    "architecture": m.architecture,
                    "backend": m.backend,
                    "dataset": m.dataset_name,
                    "n_samples": m.n_samples,
                    "n_layers": m.n_layers,
                    "d_model": m.d_model,
                    "dtype": m.dtype,
                    "created_at": m.created_at,
                }
                for m in manifests
            ],
            columns=[
                "run_id", "name", "model", "architecture", "backend", "dataset", "n_samples",
                "n_layers", "d_model", "dtype", "created_at",
            ],
        )  # fmt: skip
        with self._lock:
            # A table, not a registered frame: registrations are private to one cursor.
            cursor.execute("DROP TABLE IF EXISTS runs")
            cursor.from_df(runs_table).create("runs")
            samples = [str(layout.samples_path(layout.run_dir(self.root, r))) for r in run_ids]
            vectors = [str(p) for r in run_ids for p in self._parts(r, "vectors")]
            # Views over relations, not SQL text: the file list never gets pasted into a query.
            if samples:
                cursor.read_parquet(samples, union_by_name=True).create_view("samples")
            else:
                cursor.execute(
                    "CREATE OR REPLACE VIEW samples AS SELECT NULL::VARCHAR AS run_id, "
                    "NULL::INTEGER AS sample_idx, NULL::VARCHAR AS label LIMIT 0"
                )
            if vectors:
                parts = cursor.read_parquet(vectors, filename=True, union_by_name=True)
                # The run id is the directory two levels above each part file.
                parts.project(
                    "string_split(filename, '/')[-3] AS run_id, * EXCLUDE (filename)"
                ).create_view("vectors")
            else:
                cursor.execute(
                    "CREATE OR REPLACE VIEW vectors AS SELECT NULL::VARCHAR AS run_id, "
                    "NULL::VARCHAR AS hook, NULL::VARCHAR AS position, NULL::SMALLINT AS layer, "
                    "NULL::INTEGER AS sample_idx, NULL::INTEGER AS token_idx, "
                    "NULL::FLOAT[] AS vector LIMIT 0"
                )
            self._view_key = run_ids

    def _parts(self, run_id: str, kind: str) -> list[Path]:
        run = layout.run_dir(self.root, run_id)
        folder = layout.vectors_dir(run) if kind == "vectors" else layout.tokens_dir(run)
        return sorted(folder.glob(layout.PART_GLOB))

    def query(
        self, sql: str, params: Sequence[Any] | None = None, max_rows: int = DEFAULT_MAX_ROWS
    ) -> QueryResult:
        """Run one SQL statement over the views `runs`, `samples`, `vectors`, with parameters.

        At most `max_rows` rows come back; `truncated` says whether there were more.
        """
        self.refresh()
        try:
            relation = self._cursor().execute(sql, list(params or []))
            frame = relation.fetchmany(max_rows + 1)
            columns = [c[0] for c in relation.description or []]
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {exc}") from exc
        truncated = len(frame) > max_rows
        return QueryResult(pd.DataFrame(frame[:max_rows], columns=columns), truncated, max_rows)

    # -- samples and vectors ---------------------------------------------------------------
    def samples(self, run_id: str) -> pd.DataFrame:
        """The run's sample table, ordered by `sample_idx` (the row order of vectors)."""
        self.manifest(run_id)
        path = layout.samples_path(layout.run_dir(self.root, run_id))
        try:
            table = self._cursor().sql(
                "SELECT * FROM read_parquet($path) ORDER BY sample_idx", params={"path": str(path)}
            )
            return table.df()
        except duckdb.Error as exc:
            raise StoreError(f"run {run_id!r}: cannot read samples ({exc})") from exc

    def _check_site(self, manifest: RunManifest, hook: str, layer: int | None, position: str):
        if hook not in manifest.hooks:
            raise StoreError(
                f"run {manifest.run_id!r} has no hook {hook!r}; it has {', '.join(manifest.hooks)}"
            )
        if position not in manifest.positions:
            raise StoreError(
                f"run {manifest.run_id!r} has no position {position!r}; it has "
                f"{', '.join(manifest.positions)}"
            )
        if layer is not None and layer not in manifest.layers:
            raise StoreError(
                f"run {manifest.run_id!r} has no layer {layer}; it has layers "
                f"{manifest.layers[0]}..{manifest.layers[-1]}"
            )

    def _select(self, run_id: str, where: str, params: dict[str, Any], columns: str):
        files = [str(p) for p in self._parts(run_id, "vectors")]
        if not files:
            raise StoreError(f"run {run_id!r} has no vector files")
        sql = f"SELECT {columns} FROM read_parquet($files) WHERE {where}"
        try:
            return self._cursor().sql(sql, params={"files": files, **params})
        except duckdb.Error as exc:
            raise StoreError(f"run {run_id!r}: cannot read vectors ({exc})") from exc

    def vectors(
        self, run_id: str, hook: str, layer: int, position: str = "last"
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Pooled vectors of one site: (X [n, d_model] float32, samples aligned row by row)."""
        manifest = self.manifest(run_id)
        if position == "all":
            raise StoreError("position 'all' has one row per token: use token_vectors()")
        self._check_site(manifest, hook, layer, position)
        relation = self._select(
            run_id,
            "hook = $hook AND position = $position AND layer = $layer ORDER BY sample_idx",
            {"hook": hook, "position": position, "layer": layer},
            "sample_idx, vector",
        )
        table = relation.to_arrow_table()
        samples = self.samples(run_id)
        index = table.column("sample_idx").to_numpy()
        aligned = samples.set_index("sample_idx").loc[index].reset_index()
        return _vectors_to_numpy(table.column("vector"), manifest.d_model), aligned

    def layer_vectors(
        self, run_id: str, hook: str, position: str = "last", layers: Sequence[int] | None = None
    ) -> tuple[np.ndarray, pd.DataFrame, list[int]]:
        """Pooled vectors of every (or the given) layer: (X [L, n, d], samples, layers)."""
        manifest = self.manifest(run_id)
        layers = list(manifest.layers if layers is None else layers)
        for layer in layers:
            self._check_site(manifest, hook, layer, position)
        relation = self._select(
            run_id,
            "hook = $hook AND position = $position AND list_contains($layers, layer) "
            "ORDER BY layer, sample_idx",
            {"hook": hook, "position": position, "layers": layers},
            "layer, sample_idx, vector",
        )
        table = relation.to_arrow_table()
        samples = self.samples(run_id)
        X = _vectors_to_numpy(table.column("vector"), manifest.d_model)
        n = len(samples)
        if len(X) != n * len(layers):
            raise StoreError(
                f"run {run_id!r}: expected {n * len(layers)} rows for {hook}/{position}, "
                f"found {len(X)}"
            )
        return X.reshape(len(layers), n, manifest.d_model), samples, layers

    def iter_vectors(
        self, run_id: str, hook: str, layer: int, position: str = "last", batch_rows: int = 8192
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream one site in chunks: yields (sample_idx [m], X [m, d]) without loading it all."""
        manifest = self.manifest(run_id)
        self._check_site(manifest, hook, layer, position)
        relation = self._select(
            run_id,
            "hook = $hook AND position = $position AND layer = $layer",
            {"hook": hook, "position": position, "layer": layer},
            "sample_idx, vector",
        )
        reader = relation.to_arrow_reader(batch_rows)
        for batch in reader:
            yield (
                batch.column(0).to_numpy(),
                _vectors_to_numpy(batch.column(1), manifest.d_model),
            )

    def token_vectors(
        self, run_id: str, hook: str, sample_idx: int, layers: Sequence[int] | None = None
    ) -> tuple[np.ndarray, pd.DataFrame, list[int]]:
        """Every token of one sample: (X [L, t, d], tokens table [t], layers). Needs `all`."""
        manifest = self.manifest(run_id)
        layers = list(manifest.layers if layers is None else layers)
        for layer in layers:
            self._check_site(manifest, hook, layer, "all")
        relation = self._select(
            run_id,
            "hook = $hook AND position = 'all' AND sample_idx = $sample "
            "AND list_contains($layers, layer) ORDER BY layer, token_idx",
            {"hook": hook, "sample": sample_idx, "layers": layers},
            "layer, token_idx, vector",
        )
        X = _vectors_to_numpy(relation.to_arrow_table().column("vector"), manifest.d_model)
        token_files = [str(p) for p in self._parts(run_id, "tokens")]
        tokens = (
            self._cursor()
            .sql(
                "SELECT token_idx, token_id, token FROM read_parquet($files) "
                "WHERE sample_idx = $sample ORDER BY token_idx",
                params={"files": token_files, "sample": sample_idx},
            )
            .df()
        )
        if len(tokens) == 0 or len(X) != len(tokens) * len(layers):
            raise StoreError(f"run {run_id!r} has no token rows for sample {sample_idx}")
        return X.reshape(len(layers), len(tokens), manifest.d_model), tokens, layers


def open_store(path: str | Path, create: bool = False) -> Store:
    """Open a store directory. With `create`, make it if missing; else it must exist."""
    root = Path(path).expanduser()
    if create:
        layout.runs_dir(root).mkdir(parents=True, exist_ok=True)
    elif not root.is_dir():
        raise StoreError(f"store {str(root)!r} does not exist")
    return Store(root)
