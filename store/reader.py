"""Read committed runs: the `Store` of manifests, sample tables, vectors and confined queries.

`Store` is the read API of a store directory and composes three parts: `store.catalog` scans
`runs/` into healthy manifests and `DamagedRun` records, `store.files` checks each run's Parquet
files against its manifest, and `store.sql` holds the confined DuckDB connection and its views.
The reads of samples and vectors live here.

Reads never block a writer and a writer never blocks reads: the store is Parquet files plus an
in-memory DuckDB connection with views over the committed runs' files. Committed files are
immutable, so views only need rebuilding when the set of committed runs changes; `refresh()`
checks that cheaply.

Each run is read on its own. Stores are copied, synced and shared, so any run folder may be
damaged or planted: a committed-looking folder whose manifest cannot be read, does not validate,
or names another run id is listed by `damaged_runs()` with a one-line reason and is invisible to
everything else; damage found later, in a run's Parquet files (not Parquet, cut short, a width
other than the manifest's `d_model`, layers the files lack), raises `StoreError` naming the run
and the file relative to the run. No bare pyarrow, DuckDB or numpy exception and no absolute
path leaves this module from a read; the healthy runs of the same `Store` keep working.

`query()` runs one read-only statement for a caller that may pass user SQL (see `store.sql`: a
single SELECT, reading nothing outside the store's `runs/`, capped, with an optional timeout).

Thread safety: one `Store` may be shared by threads (Streamlit sessions); every query runs on its
own cursor of the shared connection, and each cache has its own lock. `close()` (or `with
open_store(...)`) drops the connection; every open one is also closed at interpreter exit.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from settings.run import describe_layers
from store import layout
from store.catalog import DamagedRun, RunCatalog
from store.errors import MAX_REASON_CHARS, StoreError, one_line
from store.feature_reads import FeatureShelf
from store.files import RunFiles, vectors_to_numpy
from store.fs import RemoteStore, is_uri
from store.manifest import RunManifest
from store.readouts import ReadoutManifest, Readouts
from store.saes import SaeShelf
from store.sql import (
    DEFAULT_MAX_ROWS,
    MAX_QUERY_ROWS,
    ConfinedConnection,
    QueryResult,
    check_query,
    clean_message,
)
from store.summaries import (
    LabelSums,
    RunSummary,
    SummaryFiles,
    SummaryUnavailable,
    choose_subsample,
    count_complete_pairs,
)
from store.vectorsets import VectorSet, VectorSetManifest, VectorSets

__all__ = [
    "DEFAULT_MAX_ROWS",
    "MAX_QUERY_ROWS",
    "MAX_REASON_CHARS",
    "DamagedRun",
    "LabelSums",
    "QueryResult",
    "RunSummary",
    "Store",
    "SummaryUnavailable",
    "open_store",
]

_READ_ERRORS = (duckdb.Error, pa.ArrowException, OSError, ValueError, KeyError)


class Store:
    """A store directory. Cheap to construct (no I/O); methods read on demand."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)  # what the user named: the folder, or a store URI
        self._catalog = RunCatalog(self.root)
        self._files = RunFiles(self.root)
        self._sql = ConfinedConnection(self.root)
        self.saes = SaeShelf(self.root)  # STORE/saes/: SAEs this tool trained (store.saes)
        self.features = FeatureShelf(self.root)  # STORE/features/: SAE feature runs

        self._summaries = SummaryFiles(self.root)
        self._vector_sets = VectorSets(self.root)
        self._readouts = Readouts(self.root)

    @property
    def name(self) -> str:
        """The store's last path component (`store_data`, or `prefix` of `s3://bucket/prefix`):
        how a published copy names where it came from, without the server's path."""
        if is_uri(self.location):
            return self.location.rstrip("/").rsplit("/", 1)[-1]
        return self.root.resolve().name

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the DuckDB connection. The store stays usable: the next read opens a new one."""
        self._sql.close()
        self.features.close()

    # -- runs ------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Bring local copies up to date before a listing (a store on object storage)."""

    def _scan(self, check_files: bool) -> tuple[list[RunManifest], list[DamagedRun], tuple]:
        self._sync()
        return self._catalog.scan(self._files.damage if check_files else None)

    def runs(self, check_files: bool = False) -> list[RunManifest]:
        """Healthy committed runs, newest first (damaged ones are in `damaged_runs()`).

        `check_files` also opens each run's Parquet footers (cached per file version; a stat
        per file on each call) and leaves out runs whose files are damaged.
        """
        return self._scan(check_files)[0]

    def damaged_runs(self, check_files: bool = False) -> list[DamagedRun]:
        """Committed-looking run folders that cannot be read, each with a one-line reason.

        By default the manifests decide (cheap, for every page); `check_files` adds runs whose
        Parquet files do not open or do not match the manifest's width (for a Runs page).
        """
        return self._scan(check_files)[1]

    def run_ids(self) -> list[str]:
        """Ids of the healthy committed runs, sorted."""
        return sorted(m.run_id for m in self.runs())

    def listing(self) -> tuple[list[str], list[DamagedRun]]:
        """(`run_ids()`, `damaged_runs()`) from one listing of the store: a page view asks for
        both, and each listing costs a few stats per run folder (and a sync on object storage)."""
        healthy, damaged, _ = self._scan(False)
        return sorted(m.run_id for m in healthy), damaged

    def manifest(self, run_id: str) -> RunManifest:
        self._sync()
        return self._catalog.get(run_id)

    def resolve_run_id(self, name: str) -> str:
        """A healthy run id, or an unambiguous prefix of one (`default-emotions-smollm2-135m`)."""
        self._sync()
        return self._catalog.resolve(name)

    def run_size_bytes(self, run_id: str) -> int:
        try:
            run = layout.run_dir(self.root, run_id)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        total = 0
        for folder, _, files in os.walk(run):  # does not follow symlinks
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    continue
        return total

    def check_run(self, run_id: str) -> RunManifest:
        """The run's manifest, after checking that its Parquet files open (footers, schemas,
        vector width): a StoreError naming the file otherwise. Cheap: cached per file version.
        """
        manifest = self.manifest(run_id)
        self._files.check(manifest)
        return manifest

    # -- queries ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """(Re)build the `runs`, `samples` and `vectors` views if the healthy runs changed.

        A run whose samples or vector files cannot be read is left out of the views (and
        reported in `QueryResult.skipped_runs`), so one damaged file does not break every query.
        """
        manifests, _, key = self._scan(False)
        summarized = [m.run_id for m in manifests if self._summaries.status(m) is None]
        key = (key, tuple(summarized))
        if self._sql.has_views(key):
            return
        usable, skipped, samples, vectors, sums = [], [], [], [], []
        for m in sorted(manifests, key=lambda m: m.run_id):
            problem = self._files.damage(m)
            if problem is not None:
                skipped.append(problem)
                continue
            usable.append(m)
            samples.append(self._files.samples_file(m))
            vectors.extend(self._files.vector_files(m))
            if m.run_id in summarized:
                sums.append(str(layout.label_sums_path(layout.run_dir(self.root, m.run_id))))
        self._sql.build_views(key, usable, samples, vectors, skipped, sums)

    def query(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout_s: float | None = None,
        *,
        public: bool = False,
        max_values: int | None = None,
    ) -> QueryResult:
        """Run one SELECT over the views `runs`, `samples`, `vectors`, `label_means` and
        `site_norms` (from the runs' summaries), with parameters.

        Safe for user SQL: a single SELECT only, reading nothing outside the store's runs. At
        most `max_rows` rows come back; `truncated` says whether there were more. With
        `timeout_s`, a query still running after that many seconds is stopped (StoreError).
        `public` (SQL from a hosted page's visitor) allows only the views and no function that
        reveals the server; `max_values` also cuts the rows at that many values, a list cell
        counting its length (see `store.sql`).
        """
        check_query(sql, max_rows, timeout_s, max_values)
        self.refresh()
        return self._sql.select(sql, params, max_rows, timeout_s, public, max_values)

    # -- reading one run's files -----------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._sql.cursor()

    def _read(self, run_id: str, what: str, sql: str, params: dict[str, Any], fetch):
        """Run an internal query over one run's files; any failure is the run's StoreError."""
        cursor = self._cursor()
        try:
            return fetch(cursor.sql(sql, params=params))
        except _READ_ERRORS as exc:
            message = clean_message(exc, self.root)
            raise StoreError(f"run {run_id!r}: cannot read {what} ({message})") from None
        finally:
            cursor.close()

    def _numpy(self, run_id: str, column, d_model: int) -> np.ndarray:
        try:
            return vectors_to_numpy(column, d_model)
        except (ValueError, pa.ArrowException) as exc:
            raise StoreError(f"run {run_id!r}: cannot read vectors ({one_line(exc)})") from None

    # -- samples and vectors ---------------------------------------------------------------
    def samples(self, run_id: str, sample_idx: Sequence[int] | None = None) -> pd.DataFrame:
        """The run's sample table, ordered by `sample_idx` (the row order of vectors); with
        `sample_idx`, only those samples (each must be there), read without the others."""
        manifest = self.manifest(run_id)
        path = self._files.samples_file(manifest)
        if sample_idx is None:
            sql, params = "SELECT * FROM read_parquet($path) ORDER BY sample_idx", {"path": path}
        else:
            wanted = sorted({int(i) for i in sample_idx})
            sql = ("SELECT * FROM read_parquet($path) WHERE sample_idx IN "
                   "(SELECT unnest($idx)) ORDER BY sample_idx")  # fmt: skip
            params = {"path": path, "idx": wanted}
        frame = self._read(run_id, "samples", sql, params, lambda relation: relation.df())
        expected = manifest.n_samples if sample_idx is None else len(wanted)
        if len(frame) != expected:
            what = "the manifest says" if sample_idx is None else "asked for"
            raise StoreError(
                f"run {run_id!r}: samples.parquet has {len(frame)} rows; {what} {expected} samples"
            )
        if not frame["sample_idx"].is_unique:
            raise StoreError(f"run {run_id!r}: samples.parquet names a sample_idx twice")
        if "run_id" in frame.columns:  # the folder's id, not what a copied file says
            frame["run_id"] = run_id
        return frame

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
                f"{describe_layers(manifest.layers)}"
            )

    def _vector_rows(
        self, manifest: RunManifest, where: str, params: dict[str, Any], columns: str
    ) -> pa.Table:
        files = self._files.vector_files(manifest)
        sql = f"SELECT {columns} FROM read_parquet($files) WHERE {where}"
        return self._read(
            manifest.run_id, "vectors", sql, {"files": files, **params},
            lambda relation: relation.to_arrow_table(),
        )  # fmt: skip

    def vectors(
        self, run_id: str, hook: str, layer: int, position: str = "last"
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """Pooled vectors of one site: (X [n, d_model] float32, samples aligned row by row)."""
        manifest = self.manifest(run_id)
        if position == "all":
            raise StoreError("position 'all' has one row per token: use token_vectors()")
        self._check_site(manifest, hook, layer, position)
        table = self._vector_rows(
            manifest,
            "hook = $hook AND position = $position AND layer = $layer ORDER BY sample_idx",
            {"hook": hook, "position": position, "layer": int(layer)},
            "sample_idx, vector",
        )
        samples = self.samples(run_id)
        index = table.column("sample_idx").to_numpy()
        if not np.array_equal(index, samples["sample_idx"].to_numpy()):
            raise StoreError(
                f"run {run_id!r}: {hook}/{position} layer {layer} has {len(index)} vector rows "
                f"that do not match its {len(samples)} samples"
            )
        X = self._numpy(run_id, table.column("vector"), manifest.d_model)
        return X, samples.reset_index(drop=True)

    def layer_vectors(
        self, run_id: str, hook: str, position: str = "last", layers: Sequence[int] | None = None
    ) -> tuple[np.ndarray, pd.DataFrame, list[int]]:
        """Pooled vectors of every (or the given) layer: (X [L, n, d], samples, layers).

        Layers come back sorted (X[i] is layer `layers[i]`).
        """
        manifest = self.manifest(run_id)
        layers = sorted({int(x) for x in (manifest.layers if layers is None else layers)})
        for layer in layers:
            self._check_site(manifest, hook, layer, position)
        table = self._vector_rows(
            manifest,
            "hook = $hook AND position = $position AND list_contains($layers, layer) "
            "ORDER BY layer, sample_idx",
            {"hook": hook, "position": position, "layers": layers},
            "layer, sample_idx, vector",
        )
        samples = self.samples(run_id)
        n = len(samples)
        if table.num_rows != n * len(layers):
            found = set(table.column("layer").to_pylist())
            missing = [layer for layer in layers if layer not in found]
            if missing:
                raise StoreError(
                    f"run {run_id!r}: the manifest lists layers {describe_layers(missing)} of "
                    f"{hook}/{position} that its vector files do not have"
                )
            raise StoreError(
                f"run {run_id!r}: expected {n * len(layers)} rows for {hook}/{position}, "
                f"found {table.num_rows}"
            )
        X = self._numpy(run_id, table.column("vector"), manifest.d_model)
        return X.reshape(len(layers), n, manifest.d_model), samples, layers

    def iter_vectors(
        self, run_id: str, hook: str, layer: int, position: str = "last", batch_rows: int = 8192
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream one site in chunks: yields (sample_idx [m], X [m, d]) without loading it all."""
        manifest = self.manifest(run_id)
        self._check_site(manifest, hook, layer, position)
        for batch in self._stream(manifest, hook, layer, position, "sample_idx", batch_rows):
            yield batch.column(0).to_numpy(), self._numpy(run_id, batch.column(1), manifest.d_model)

    def _stream(
        self,
        manifest: RunManifest,
        hook: str,
        layer: int,
        position: str,
        columns: str,
        batch_rows: int,
    ) -> Iterator[pa.RecordBatch]:
        """Arrow batches of `columns, vector` of one site, in file order; errors name the run."""
        files = self._files.vector_files(manifest)
        cursor = self._cursor()
        try:
            reader = cursor.sql(
                f"SELECT {columns}, vector FROM read_parquet($files) "
                "WHERE hook = $hook AND position = $position AND layer = $layer",
                params={"files": files, "hook": hook, "position": position, "layer": int(layer)},
            ).to_arrow_reader(batch_rows)
            yield from reader
        except _READ_ERRORS as exc:
            message = clean_message(exc, self.root)
            raise StoreError(f"run {manifest.run_id!r}: cannot read vectors ({message})") from None
        finally:
            cursor.close()

    def iter_token_vectors(
        self, run_id: str, hook: str, layer: int, batch_rows: int = 8192
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Stream every token of one site of an `all` run: yields (sample_idx [m],
        token_idx [m], X [m, d] float32), in file order, `batch_rows` rows at a time, so memory
        stays flat however many tokens the run holds (what SAE training reads)."""
        manifest = self.manifest(run_id)
        self._check_site(manifest, hook, layer, "all")
        columns = "sample_idx, token_idx"
        for batch in self._stream(manifest, hook, layer, "all", columns, batch_rows):
            yield (
                batch.column(0).to_numpy(),
                batch.column(1).to_numpy(),
                self._numpy(run_id, batch.column(2), manifest.d_model),
            )

    # -- summaries ---------------------------------------------------------------------------
    def summary(self, run_id: str) -> RunSummary:
        """The run's summary (subsample indices, labels, sites, seed). Raises
        SummaryUnavailable (a StoreError with `.kind` and `.command`) when the run has none,
        they are damaged or out of date: nothing falls back to scanning the vectors."""
        return self._summaries.summary(self.manifest(run_id))

    def summary_status(self, run_id: str) -> SummaryUnavailable | None:
        """None when the run's summaries are usable, else why not (with the command to fix it)."""
        return self._summaries.status(self.manifest(run_id))

    def label_sums(
        self, run_id: str, hook: str, position: str, layers: Sequence[int] | None = None
    ) -> LabelSums:
        """Per-label count, sum, sum of squared norms and sum of norms at every (or the given)
        layer of one site, from the summaries: a few KB per layer, whatever the run's size."""
        manifest = self.manifest(run_id)
        self._check_site(manifest, hook, None, position)
        for layer in manifest.layers if layers is None else layers:
            self._check_site(manifest, hook, int(layer), position)
        return self._summaries.label_sums(manifest, hook, position, layers)

    def subsample_samples(
        self, run_id: str, size: int | None = None, sample_idx: Sequence[int] | None = None
    ) -> pd.DataFrame:
        """The samples of the summaries' fixed subsample, ordered by sample_idx (read without
        the others). `size` takes at most that many, chosen the same stratified way with the
        same seed (a page that needs fewer gets the same ones on every call); `sample_idx`
        takes those of them (one the subsample lacks is an error)."""
        summary = self.summary(run_id)
        samples = self.samples(run_id, summary.subsample)
        rows = None
        if sample_idx is not None:
            rows = np.unique(np.asarray(sample_idx, np.int64))
            outside = np.setdiff1d(rows, samples["sample_idx"].to_numpy())
            if len(outside):
                raise StoreError(
                    f"run {run_id!r}: sample {int(outside[0])} is not in its subsample"
                )
        elif size is not None and size < len(samples):
            rows = choose_subsample(samples, max(int(size), 0), summary.seed)
        if rows is not None:
            samples = samples[samples["sample_idx"].isin(rows)]
        return samples.reset_index(drop=True)

    def complete_pairs(self, run_id: str) -> int:
        """How many complete minimal pairs the run has (`count_complete_pairs`): recorded in
        its summary, or, for summaries made before that was, counted from the two columns of
        its samples it needs (never the text)."""
        summary = self.summary(run_id)
        if summary.n_pairs is not None:
            return summary.n_pairs
        if not summary.has_pairs:
            return 0
        return count_complete_pairs(self.sample_columns(run_id, ["pair_id", "side"]))

    def sample_columns(self, run_id: str, columns: Sequence[str]) -> pd.DataFrame:
        """Some columns of every sample, ordered by sample_idx: `sample_idx` and those of
        `columns` the run's samples have (the others are left out, not an error). Reads only
        those columns: at 100,000 samples a fraction of the whole table with its text."""
        manifest = self.manifest(run_id)
        path = self._files.samples_file(manifest)
        try:
            names = pq.read_schema(path).names
            wanted = ["sample_idx"] + [c for c in dict.fromkeys(columns) if c in names and
                                       c != "sample_idx"]  # fmt: skip
            frame = pq.read_table(path, columns=wanted).to_pandas()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise StoreError(
                f"run {run_id!r}: cannot read samples ({one_line(exc, MAX_REASON_CHARS)})"
            ) from None
        if len(frame) != manifest.n_samples:
            raise StoreError(
                f"run {run_id!r}: samples.parquet has {len(frame)} rows; the manifest says "
                f"{manifest.n_samples} samples"
            )
        return frame.sort_values("sample_idx", kind="stable").reset_index(drop=True)

    def subsample_vectors(
        self, run_id: str, hook: str, position: str, sample_idx: Sequence[int],
        layers: Sequence[int] | None = None, dtype=np.float32,
    ) -> tuple[np.ndarray, list[int]]:  # fmt: skip
        """Vectors of some of the subsample's samples (sorted sample_idx, as
        `subsample_samples` gives them) at one site: (X [L, m, d] of `dtype`, layers). Reads
        the subsample's own file, only those layers' row groups, never the run's vectors."""
        manifest = self.manifest(run_id)
        self._check_site(manifest, hook, None, position)
        for layer in manifest.layers if layers is None else layers:
            self._check_site(manifest, hook, int(layer), position)
        rows = np.asarray(sample_idx, np.int64)
        if len(rows) and (np.diff(rows) <= 0).any():
            raise StoreError("sample_idx must be sorted and without repeats")
        idx, X, layers = self._summaries.subsample(manifest, hook, position, layers, rows, dtype)
        if not np.array_equal(idx, rows):
            raise StoreError(f"run {run_id!r}: its subsample does not have those samples")
        return X, layers

    def subsample(
        self, run_id: str, hook: str, position: str, layers: Sequence[int] | None = None,
        size: int | None = None, sample_idx: Sequence[int] | None = None, dtype=np.float32,
    ) -> tuple[np.ndarray, pd.DataFrame, list[int]]:  # fmt: skip
        """The summaries' fixed subsample at one site: (X [L, m, d] float32, its m samples
        ordered by sample_idx, layers): `subsample_samples` and `subsample_vectors` in one."""
        samples = self.subsample_samples(run_id, size, sample_idx)
        rows = samples["sample_idx"].to_numpy()
        X, layers = self.subsample_vectors(run_id, hook, position, rows, layers, dtype)
        return X, samples, layers

    def token_vectors(
        self, run_id: str, hook: str, sample_idx: int, layers: Sequence[int] | None = None
    ) -> tuple[np.ndarray, pd.DataFrame, list[int]]:
        """Every token of one sample: (X [L, t, d], tokens table [t], layers). Needs `all`."""
        manifest = self.manifest(run_id)
        layers = sorted({int(x) for x in (manifest.layers if layers is None else layers)})
        for layer in layers:
            self._check_site(manifest, hook, layer, "all")
        table = self._vector_rows(
            manifest,
            "hook = $hook AND position = 'all' AND sample_idx = $sample "
            "AND list_contains($layers, layer) ORDER BY layer, token_idx",
            {"hook": hook, "sample": int(sample_idx), "layers": layers},
            "layer, token_idx, vector",
        )
        X = self._numpy(run_id, table.column("vector"), manifest.d_model)
        tokens = self._read(
            run_id, "tokens",
            "SELECT token_idx, token_id, token FROM read_parquet($files) "
            "WHERE sample_idx = $sample ORDER BY token_idx",
            {"files": self._files.token_files(manifest), "sample": int(sample_idx)},
            lambda relation: relation.df(),
        )  # fmt: skip
        if len(tokens) == 0 or len(X) != len(tokens) * len(layers):
            raise StoreError(f"run {run_id!r} has no token rows for sample {sample_idx}")
        return X.reshape(len(layers), len(tokens), manifest.d_model), tokens, layers

    # -- vector sets (store.vectorsets) ------------------------------------------------------
    def vector_sets(self, check_files: bool = False) -> list[VectorSetManifest]:
        """Healthy committed vector sets, newest first. `check_files` also reads each set's
        (small) Parquet file and leaves out sets whose file fails its checks."""
        self._sync()  # a store on object storage mirrors its vector sets too
        return self._vector_sets.scan(check_files)[0]

    def damaged_vector_sets(self, check_files: bool = False) -> list[DamagedRun]:
        """Vector set folders that cannot be read, each with a one-line reason."""
        self._sync()
        return self._vector_sets.scan(check_files)[1]

    def vector_set(self, set_id: str) -> VectorSet:
        """One set's vectors [L, d] and per-layer figures, checked (StoreError if damaged)."""
        self._sync()
        return self._vector_sets.read(set_id)

    def resolve_vector_set(self, name: str) -> str:
        """A healthy vector set id, or an unambiguous prefix of one."""
        self._sync()
        return self._vector_sets.resolve(name)

    # -- model readouts (store.readouts) -----------------------------------------------------
    def readouts(self) -> list[ReadoutManifest]:
        """The readouts (final norm and unembedding) of the models this store has, newest first."""
        return self._readouts.scan()[0]

    def damaged_readouts(self) -> list[DamagedRun]:
        return self._readouts.scan()[1]

    def readout(self, weights_sha256: str) -> ReadoutManifest:
        """The readout of the model with these weights (a run's `weights_sha256`), or StoreError."""
        return self._readouts.manifest(weights_sha256)

    def iter_unembedding(
        self, weights_sha256: str, batch_rows: int = 16384
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The unembedding in chunks: (token_ids [m], W [m, d] float32), in token order."""
        return self._readouts.iter_unembedding(weights_sha256, batch_rows)

    def token_texts(self, weights_sha256: str, token_ids: Sequence[int]) -> list[str]:
        """What each token id of that model decodes to, in the order given."""
        return self._readouts.token_texts(weights_sha256, token_ids)


class MirroredStore(Store):
    """A store on object storage (`s3://...`), read through its local mirror (see store.fs):
    every listing first brings the mirror up to date (at most every few seconds), and every
    read then runs on local copies of committed runs, with the checks of a local store."""

    def __init__(self, remote: RemoteStore) -> None:
        super().__init__(remote.mirror_root)
        self.remote = remote
        self.location = remote.uri

    def _sync(self) -> None:
        self.remote.mirror()


def open_store(path: str | Path, create: bool = False, writable: bool = False) -> Store:
    """Open a store directory. With `create`, make it if missing; else it must exist.

    A URI (`s3://bucket/prefix`, see store.fs) opens a store on object storage: its bucket must
    exist (`create` makes the prefix, which needs no folder), and `writable` proves a write.

    With `writable`, also prove that a run can be written (a file is created in `runs/` and
    removed): a runner calls this before loading a model, not after. Every failure is a
    StoreError naming the path as given, never a NotADirectoryError or PermissionError.
    """
    if is_uri(path):
        remote = RemoteStore(str(path))
        remote.check(create=writable)
        return MirroredStore(remote)
    root = Path(path).expanduser()
    shown = str(root)
    try:
        exists = root.exists()
        if exists and not root.is_dir():
            raise StoreError(f"store {shown!r} is not a directory")
        runs = layout.runs_dir(root)
        if runs.exists() and not runs.is_dir():
            raise StoreError(f"store {shown!r} is not a store: its 'runs' is not a folder")
        if create:
            runs.mkdir(parents=True, exist_ok=True)
        elif not exists:
            raise StoreError(f"store {shown!r} does not exist")
        if writable:
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=runs)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        verb = "write to" if writable and root.is_dir() else "create"
        raise StoreError(f"cannot {verb} store {shown!r}: {reason}") from None
    except ValueError as exc:  # e.g. an embedded NUL byte
        raise StoreError(f"store {shown[:80]!r} is not a usable path: {exc}") from None
    return Store(root)
