"""Writing run summaries: sufficient statistics and a fixed subsample, made as vectors stream.

A `Summarizer` is fed the same rows the run's part files get, site by site (a site is one
(hook, position, layer)), and keeps per site and label: the row count, the float64 sum of the
vectors, the sum of their squared L2 norms and the sum of their L2 norms; plus the rows of a
stratified random subsample of samples (`choose_subsample`). `finish` writes them into the run's
`summaries/` folder (see `store.summaries` for the files and how they are read). Nothing is read
twice: the writer feeds each flushed part as it writes it, a resumed run feeds the parts an earlier
attempt left, and `summarize_run` (`python -m store summarize`) feeds every part of a run that was
committed before summaries existed, in one pass.

Per-token positions (`settings.run.TOKEN_POSITIONS`, e.g. `all`) have no per-sample row and are
skipped, as is anything that never reaches `add` (sparse feature files have no dense vectors).

The subsample's vectors are copied whatever the run's size (a run of at most SUBSAMPLE_SIZE
samples is copied whole): one file, one row group per site, each vector as raw little-endian bytes,
uncompressed, which reads several times faster than the run's own list columns.

Memory: the sums are sites x labels x d float64 (at most MAX_SUMMARY_LABELS labels; a run with more
keeps one all-samples row per site); subsample rows are buffered up to `spill_bytes` and then
spilled to Arrow files in the temporary folder, and merged one site at a time at the end.

Caveats: sums are of the stored values (float16 rounding included), so means equal those of the
vectors read back, up to float64 summation order. The subsample is chosen from the sample table
alone (ids, labels, pairs, categories, and the seed), so two runs of one dataset on different
models keep the same samples and line up for cross-model comparisons.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from settings.run import TOKEN_POSITIONS
from store import layout
from store.atomic import fsync_dir
from store.errors import StoreError, one_line
from store.files import vectors_to_numpy
from store.summaries import (
    FORMAT,
    MAX_SUMMARY_LABELS,
    SUBSAMPLE_SEED,
    SUBSAMPLE_SIZE,
    _column,
    choose_subsample,
    count_complete_pairs,
    label_schema,
    rows_to_binary,
    source_sizes,
    subsample_schema,
)

SPILL_BYTES = 64 * 1024 * 1024
Site = tuple[str, str, int]


# -- accumulating ------------------------------------------------------------------------------
@dataclass
class _Sums:
    counts: np.ndarray  # [k] int64
    sums: np.ndarray  # [k, d] float64
    sum_sq: np.ndarray  # [k] float64
    sum_norm: np.ndarray  # [k] float64


class Summarizer:
    """Accumulates one run's summaries from its vector rows; `finish` writes them."""

    def __init__(
        self, run_path: Path, d_model: int, dtype: str, samples: pd.DataFrame, *,
        made_by: str = "commit", size: int | None = None, seed: int = SUBSAMPLE_SEED,
        spill_bytes: int | None = None,
    ) -> None:  # fmt: skip
        self.run_path = Path(run_path)
        self.run_id = self.run_path.name
        self.d_model, self.dtype, self.made_by = d_model, dtype, made_by
        self.np_dtype = np.float16 if dtype == "float16" else np.float32
        self.size, self.seed = (SUBSAMPLE_SIZE if size is None else size), seed
        self.spill_bytes = SPILL_BYTES if spill_bytes is None else spill_bytes
        idx = samples["sample_idx"].to_numpy()
        if len(idx) and (idx.min() < 0 or not pd.Index(idx).is_unique):
            raise StoreError(f"run {self.run_id!r}: sample indices must be unique and >= 0")
        self.n_samples = len(idx)
        labels = _column(samples, "label")
        names = sorted({v for v in labels if v is not None}, key=str)
        names = [str(v) for v in names] + ([None] if labels.isna().any() else [])
        self.per_label = len(names) <= MAX_SUMMARY_LABELS
        self.labels: list[str | None] = names if self.per_label else [None]
        width = int(idx.max()) + 1 if len(idx) else 0
        self._codes = np.full(width, -1, np.int64)
        if self.per_label:
            code_of = {name: i for i, name in enumerate(self.labels)}
            self._codes[idx] = [code_of[None if v is None else str(v)] for v in labels]
        else:
            self._codes[idx] = 0
        self.has_pairs = bool(_column(samples, "pair_id").notna().any())
        self.n_pairs = count_complete_pairs(samples)
        self.subsample = choose_subsample(samples, self.size, seed)
        self._in_sub = np.zeros(width, bool)
        self._in_sub[self.subsample] = True
        self._sites: dict[Site, _Sums] = {}
        self._buffer: dict[Site, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._buffered = 0
        self._spills: list[tuple[Path, dict[Site, tuple[int, int]]]] = []
        self._tmp: Path | None = None
        self.seconds = 0.0

    @property
    def n_sites(self) -> int:
        return len(self._sites)

    # -- rows in -----------------------------------------------------------------------------
    def add(self, hook: str, position: str, layer: int, sample_idx: np.ndarray,
            vectors: np.ndarray) -> None:  # fmt: skip
        """Rows of one site: sample_idx [m], vectors [m, d] (as stored). Per-token positions
        are skipped."""
        if position in TOKEN_POSITIONS or len(sample_idx) == 0:
            return
        started = time.perf_counter()
        sample_idx = np.asarray(sample_idx, dtype=np.int64)
        if sample_idx.min() < 0 or sample_idx.max() >= len(self._codes):
            bad = sample_idx[(sample_idx < 0) | (sample_idx >= len(self._codes))][0]
            raise StoreError(f"run {self.run_id!r}: vectors name sample {bad}, not in its samples")
        codes = self._codes[sample_idx]
        if (codes < 0).any():
            bad = sample_idx[codes < 0][0]
            raise StoreError(f"run {self.run_id!r}: vectors name sample {bad}, not in its samples")
        site = (hook, position, int(layer))
        sums = self._sites.get(site)
        k = len(self.labels)
        if sums is None:
            sums = _Sums(np.zeros(k, np.int64), np.zeros((k, self.d_model)), np.zeros(k),
                         np.zeros(k))  # fmt: skip
            self._sites[site] = sums
        X = vectors.astype(np.float64)
        sq = np.einsum("ij,ij->i", X, X)
        if k == 1:
            sums.sums[0] += X.sum(axis=0)
        else:
            onehot = np.zeros((k, len(X)))
            onehot[codes, np.arange(len(X))] = 1.0
            with _one_blas_thread():
                sums.sums += onehot @ X
        sums.counts += np.bincount(codes, minlength=k)
        sums.sum_sq += np.bincount(codes, weights=sq, minlength=k)
        sums.sum_norm += np.bincount(codes, weights=np.sqrt(sq), minlength=k)
        keep = self._in_sub[sample_idx]
        if keep.any():
            rows = vectors[keep].astype(self.np_dtype)
            self._buffer.setdefault(site, []).append((sample_idx[keep].astype(np.int32), rows))
            self._buffered += rows.nbytes
            if self._buffered >= self.spill_bytes:
                self._spill()
        self.seconds += time.perf_counter() - started

    def add_parts(self, parts: list[Path], progress: Callable[[int, int], None] | None = None,
                  batch_rows: int = 8192) -> None:  # fmt: skip
        """Feed vector part files already on disk (a resumed run's, or a committed run's)."""

        def rows_of(part: Path) -> int:
            try:
                return pq.ParquetFile(part).metadata.num_rows
            except (pa.ArrowException, OSError, ValueError):
                return 0

        total, done = sum(rows_of(p) for p in parts), 0
        columns = ["hook", "position", "layer", "sample_idx", "vector"]
        for part in parts:
            rel = part.relative_to(self.run_path).as_posix()
            try:
                for batch in pq.ParquetFile(part).iter_batches(batch_rows, columns=columns):
                    self._add_batch(batch)
                    done += batch.num_rows
                    if progress is not None:
                        progress(done, total)
            except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
                raise StoreError(
                    f"run {self.run_id!r}: cannot read vectors (file {rel}: {one_line(exc, 160)})"
                ) from None

    def _add_batch(self, batch: pa.RecordBatch) -> None:
        self.add_rows(*(batch.column(i).to_numpy(zero_copy_only=False) for i in range(4)),
                      vectors_to_numpy(batch.column(4), self.d_model, float32=False))  # fmt: skip

    def add_rows(self, hooks: np.ndarray, positions: np.ndarray, layers: np.ndarray,
                 sample_idx: np.ndarray, vectors: np.ndarray) -> None:  # fmt: skip
        """Rows of any sites, as a part file holds them: each of the first four is [m]."""
        if len(sample_idx) == 0:
            return
        change = (hooks[1:] != hooks[:-1]) | (positions[1:] != positions[:-1])
        change |= layers[1:] != layers[:-1]
        bounds = [0, *(np.flatnonzero(change) + 1).tolist(), len(sample_idx)]
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            self.add(str(hooks[start]), str(positions[start]), int(layers[start]),
                     sample_idx[start:stop], vectors[start:stop])  # fmt: skip

    # -- subsample rows: buffered, spilled, merged -------------------------------------------
    def _folder(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=".summaries-tmp-", dir=self.run_path))
        return self._tmp

    def _site_rows(self, chunks) -> tuple[np.ndarray, np.ndarray]:
        if not chunks:
            return np.zeros(0, np.int32), np.zeros((0, self.d_model), self.np_dtype)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def _spill(self) -> None:
        index, tables, offset = {}, [], 0
        for site in sorted(self._buffer):
            idx, rows = self._site_rows(self._buffer[site])
            index[site] = (offset, len(idx))
            offset += len(idx)
            tables.append(_vector_rows_table(idx, rows))
        path = self._folder() / f".spill-{len(self._spills):05d}.arrow"
        table = pa.concat_tables(tables)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
            out.write_table(table)
        self._spills.append((path, index))
        self._buffer.clear()
        self._buffered = 0

    def _merged_rows(self, site: Site, spilled: list[pa.Table]) -> tuple[np.ndarray, pa.Array]:
        parts = []
        for (_, index), table in zip(self._spills, spilled, strict=True):
            if site in index:
                start, length = index[site]
                parts.append(table.slice(start, length))
        idx, rows = self._site_rows(self._buffer.get(site, []))
        parts.append(_vector_rows_table(idx, rows))
        merged = pa.concat_tables(parts)
        order = np.argsort(merged.column(0).to_numpy(), kind="stable")
        merged = merged.take(pa.array(order))
        return merged.column(0).to_numpy(), merged.column(1)

    # -- writing -----------------------------------------------------------------------------
    def finish(self) -> None:
        """Write labels.parquet, subsample.parquet and, last, summary.json, then put the folder
        in place of the run's `summaries/` (replacing an older one)."""
        started = time.perf_counter()
        folder = self._folder()
        try:
            self._check_complete()
            self._write_labels(folder / "labels.parquet")
            self._write_subsample(folder / "subsample.parquet")
            for spill, _ in self._spills:
                spill.unlink()
            self._write_summary(folder)
            fsync_dir(folder)
            _install(folder, layout.summaries_dir(self.run_path))
        except BaseException:
            self.discard()
            raise
        self._tmp = None
        self.seconds += time.perf_counter() - started

    def discard(self) -> None:
        """Drop the temporary folder (spills, half-written files)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _check_complete(self) -> None:
        for (hook, position, layer), sums in sorted(self._sites.items()):
            found = int(sums.counts.sum())
            if found != self.n_samples:
                raise StoreError(
                    f"run {self.run_id!r}: {hook}/{position} layer {layer} has {found} vector rows "
                    f"for {self.n_samples} samples; cannot summarize it"
                )

    def _write_labels(self, path: Path) -> None:
        """One row per (site, label); one row group per (hook, position), which readers ask for
        whole."""
        k = len(self.labels)
        tmp = path.with_name(f".{path.name}.tmp")
        schema = label_schema(self.d_model)
        groups: dict[tuple[str, str], list[Site]] = {}
        for site in sorted(self._sites):
            groups.setdefault(site[:2], []).append(site)
        with pq.ParquetWriter(tmp, schema, compression="zstd",
                              use_dictionary=["hook", "position", "label"]) as out:  # fmt: skip
            for (hook, position), sites in groups.items():
                n = len(sites) * k
                sums = [self._sites[s] for s in sites]
                table = pa.Table.from_arrays(
                    [
                        pa.array([hook] * n, pa.string()), pa.array([position] * n, pa.string()),
                        pa.array(np.repeat([s[2] for s in sites], k).astype(np.int16)),
                        pa.array(self.labels * len(sites), pa.string()),
                        pa.array(np.concatenate([s.counts for s in sums])),
                        pa.FixedSizeListArray.from_arrays(
                            pa.array(np.concatenate([s.sums.ravel() for s in sums])), self.d_model
                        ),
                        pa.array(np.concatenate([s.sum_sq for s in sums])),
                        pa.array(np.concatenate([s.sum_norm for s in sums])),
                    ],
                    schema=schema,
                )  # fmt: skip
                out.write_table(table, row_group_size=n)
        _fsync(tmp)
        os.replace(tmp, path)

    def _write_subsample(self, path: Path) -> None:
        schema = subsample_schema(self.d_model, self.dtype)
        spilled = [pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p, _ in self._spills]
        tmp = path.with_name(f".{path.name}.tmp")
        with pq.ParquetWriter(tmp, schema, compression="none", use_dictionary=["hook", "position"],
                              write_statistics=["hook", "position", "layer",
                                                "sample_idx"]) as out:  # fmt: skip
            for site in sorted(self._sites):
                idx, vectors = self._merged_rows(site, spilled)
                if not np.array_equal(idx, self.subsample):
                    raise StoreError(
                        f"run {self.run_id!r}: {site[0]}/{site[1]} layer {site[2]} has "
                        f"{len(idx)} subsample rows for {len(self.subsample)} samples"
                    )
                n = len(idx)
                table = pa.Table.from_arrays(
                    [pa.array([site[0]] * n, pa.string()), pa.array([site[1]] * n, pa.string()),
                     pa.array(np.full(n, site[2], np.int16)), pa.array(idx.astype(np.int32)),
                     vectors],
                    schema=schema,
                )  # fmt: skip
                out.write_table(table, row_group_size=max(n, 1))
        del spilled
        _fsync(tmp)
        os.replace(tmp, path)

    def _write_summary(self, folder: Path) -> None:
        files = {name: (folder / name).stat().st_size
                 for name in ("labels.parquet", "subsample.parquet")}  # fmt: skip
        payload = {
            "format": FORMAT,
            "run_id": self.run_id,
            "made_by": self.made_by,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "n_samples": self.n_samples,
            "d_model": self.d_model,
            "dtype": self.dtype,
            "labels": self.labels,
            "per_label": self.per_label,
            "has_pairs": self.has_pairs,
            "n_pairs": self.n_pairs,
            "sites": [list(site) for site in sorted(self._sites)],
            "seed": self.seed,
            "subsample_size": self.size,
            "subsample": self.subsample.tolist(),
            "files": files,
            "source": source_sizes(self.run_path),
        }
        path = folder / "summary.json"
        path.write_text(json.dumps(payload, separators=(",", ":")), "utf-8")
        _fsync(path)


# -- helpers -----------------------------------------------------------------------------------
_BLAS: list = []  # threadpoolctl's controller, made on first use


def _one_blas_thread():
    """A context running BLAS on one thread: the label sums are small matrix products, for which
    OpenBLAS's threads cost far more than they give on a busy machine (measured: 20x the CPU
    time on two cores). threadpoolctl is optional; without it nothing changes."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS.append(ThreadpoolController())
        except ImportError:
            _BLAS.append(None)
    return (
        contextlib.nullcontext() if _BLAS[0] is None else _BLAS[0].limit(limits=1, user_api="blas")
    )


def _vector_rows_table(idx: np.ndarray, rows: np.ndarray) -> pa.Table:
    return pa.table({"sample_idx": pa.array(idx.astype(np.int32)), "vector": rows_to_binary(rows)})


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _install(folder: Path, target: Path) -> None:
    """Put `folder` where `target` is; an older `target` is moved aside first, then removed."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".summaries-old-{os.urandom(4).hex()}")
        os.replace(target, old)
    os.replace(folder, target)
    fsync_dir(target.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def remove_leftovers(run_path: Path) -> None:
    """Drop temporary summary folders of an interrupted attempt (and, for an uncommitted run,
    any summaries: they are rebuilt with the run)."""
    for stale in list(run_path.glob(".summaries-tmp-*")) + list(run_path.glob(".summaries-old-*")):
        shutil.rmtree(stale, ignore_errors=True)
    if not layout.is_committed(run_path):
        summaries = layout.summaries_dir(run_path)
        if summaries.is_dir() and not summaries.is_symlink():
            shutil.rmtree(summaries, ignore_errors=True)


# -- a committed run -------------------------------------------------------------------------
@dataclass(frozen=True)
class Summarized:
    """What `summarize_run` did: `written` False when the summaries were already up to date."""

    run_id: str
    written: bool
    seconds: float
    sites: int
    subsample: int


def summarize_run(root: Path | str, run_id: str, *, force: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> Summarized:  # fmt: skip
    """Write (or, with `force`, rewrite) the summaries of a committed run, in one pass over its
    vector files. Up-to-date summaries are left alone. Raises StoreError (unknown or damaged run,
    unreadable files, a store that cannot be written, another process summarizing it)."""
    from store.reader import open_store

    started = time.perf_counter()
    with open_store(root) as store:
        manifest = store.check_run(run_id)
        if not force and store.summary_status(run_id) is None:
            summary = store.summary(run_id)
            return Summarized(run_id, False, 0.0, len(summary.sites), len(summary.subsample))
        samples = store.samples(run_id)
    run_path = layout.run_dir(Path(root).expanduser(), run_id)
    try:
        handle = open(run_path / ".summaries.lock", "a+")  # noqa: SIM115 - held while writing
    except OSError as exc:
        raise StoreError(f"cannot write summaries of run {run_id!r}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"run {run_id!r} is being summarized by another process") from None
        summarizer = Summarizer(run_path, manifest.d_model, manifest.dtype, samples,
                                made_by="summarize")  # fmt: skip
        try:
            summarizer.add_parts(layout.part_files(layout.vectors_dir(run_path)), progress)
            summarizer.finish()
        except OSError as exc:
            summarizer.discard()
            reason = exc.strerror or type(exc).__name__
            raise StoreError(f"cannot write summaries of run {run_id!r}: {reason}") from None
        except BaseException:
            summarizer.discard()
            raise
    finally:
        handle.close()
    return Summarized(run_id, True, time.perf_counter() - started, summarizer.n_sites,
                      len(summarizer.subsample))  # fmt: skip
