"""Write one run into the store: stream vectors to Parquet part files, then commit.

The writer never holds more than `flush_bytes` of vectors in memory, whatever the run's size: rows
are buffered per batch and written as a part file once the buffer is full. A part is written to a
temporary name and renamed, and only whole batches go into a part, so after a SIGKILL every part on
disk holds complete samples. `resume` reads which samples those are and the caller skips them.

Summaries (`store.summarize`): once `write_samples` has named the samples, every flushed part is
also fed to a `Summarizer` (per-label sums and the subsample's rows) in the same pass; a resumed
run feeds the parts its earlier attempt left. `summaries=False` writes a run without them (what
the benchmark compares against); so does a caller that adds vectors before `write_samples`.

Commit order: remaining part, summaries/ (summary.json last), manifest.json, then the `_COMMITTED`
marker, each fsynced. Readers ignore any run without the marker, so a killed run is never
half-visible.

The store may be a folder or a URI (`s3://...`): on object storage the writer stages the run in a
local folder and pushes each whole file, the marker last (store.fs says what is weaker there).

Parts written by other processes (workers of one run): each writes whole part files into the
run's folder with `store.fs.put_run_file(root, run_id, "vectors/part-NNNNN.parquet", bytes)`
(tokens and answers parts under the same name, before their vectors part), names unique across
workers; the driver then opens the run with `RunWriter.resume` (which reads every part, finds the
done samples and feeds the parts to the summaries), calls `write_samples` and `commit`.

Several writers of one run are fenced, because a killed driver's workers can outlive it (a Ray
cluster stops a dead job's actors only after a while) and could write parts into the run while
a resumed attempt works on it: samples twice, or a part overwritten. `reserve_parts` writes
parts_fence.json (a fresh token and a range of part numbers past any earlier reservation's), a
parts-only writer made with that token checks it before each part and refuses once it changed
or went, and the driver commits through `resume(keep_parts=...)`, which drops any part it did not
know of (the parts found when it started and those its own workers reported).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import secrets
import shutil
import tempfile
import time
import weakref
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from settings.run import STORAGE_DTYPES, check_choice
from store import layout
from store.atomic import atomic_write_bytes, atomic_write_text, fsync_dir, read_regular
from store.errors import StoreError
from store.fs import Pusher, RemoteStore, is_uri, put_run_file
from store.manifest import RunManifest
from store.summarize import Summarizer, remove_leftovers

DEFAULT_FLUSH_BYTES = 64 * 1024 * 1024
# Vectors are wide (a row is 1-2 KiB), so row groups are sized by bytes: a few MiB keeps DuckDB's
# per-group overhead low while letting it skip groups by (hook, position, layer) statistics.
DEFAULT_ROW_GROUP_BYTES = 8 * 1024 * 1024


def vector_schema(d_model: int, dtype: str) -> pa.Schema:
    value_type = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema(
        [
            ("hook", pa.string()),
            ("position", pa.string()),
            ("layer", pa.int16()),
            ("sample_idx", pa.int32()),
            ("token_idx", pa.int32()),
            ("vector", pa.list_(value_type, d_model)),
        ]
    )


TOKEN_SCHEMA = pa.schema(
    [
        ("sample_idx", pa.int32()),
        ("token_idx", pa.int32()),
        ("token_id", pa.int32()),
        ("token", pa.string()),
    ]
)


@dataclass
class _Buffer:
    # key (hook, position, layer) -> list of (sample_idx [m], token_idx [m], vectors [m, d])
    chunks: dict[tuple[str, str, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(
        default_factory=dict
    )
    tokens: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]] = field(default_factory=list)
    answers: list[pa.Table] = field(default_factory=list)
    nbytes: int = 0
    rows: int = 0

    def clear(self) -> None:
        self.chunks.clear()
        self.tokens.clear()
        self.answers.clear()
        self.nbytes = 0
        self.rows = 0


class RunWriter:
    """Streams the rows of one run into `STORE/runs/<run_id>/`. Use `create` or `resume`."""

    def __init__(
        self,
        run_path: Path,
        d_model: int,
        dtype: str,
        next_part: int = 0,
        done: set[int] | None = None,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        summaries: bool = True,
    ) -> None:
        check_choice("dtype", dtype, STORAGE_DTYPES)
        self.run_path = run_path
        self.run_id = run_path.name
        self.d_model = d_model
        self.dtype = dtype
        self.np_dtype = np.float16 if dtype == "float16" else np.float32
        self.schema = vector_schema(d_model, dtype)
        self.flush_bytes = flush_bytes
        self.rows_per_group = max(1024, row_group_bytes // (d_model * self.np_dtype().itemsize))
        self._next_part = next_part
        self._done: set[int] = set(done or ())
        self._buffer = _Buffer()
        self._buffered_samples: list[int] = []
        self._lock_handle: Any = None
        self.rows_written = 0
        self.overflow_values = 0
        self.write_seconds = 0.0
        self._summaries = summaries
        self._summarizer: Summarizer | None = None
        self._unsummarized_rows = False  # rows flushed before the samples were known
        self._earlier_parts: list[Path] = []  # parts a resumed run's earlier attempt left
        self._summaries_written = False
        self._answers_merged = False
        self._pusher: Pusher | None = None  # set when the store is on object storage (store.fs)
        self._put_root: str | None = None  # a parts-only writer's object store (parts_only)
        self._fence: str | None = None  # a parts-only writer's token (reserve_parts)
        self.dropped_parts: list[int] = []  # unknown parts `resume(keep_parts=...)` dropped

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls, root: Path | str, run_id: str, config: dict[str, Any], **kwargs: Any
    ) -> RunWriter:
        """A new run in the store at `root`: a folder, or a URI (`s3://...`, see store.fs)."""
        remote = RemoteStore(root) if is_uri(root) else None
        if remote is not None:
            if remote.run_files(run_id):
                raise StoreError(f"run {run_id!r} already exists in {remote.shown}")
            run_path = remote.stage(run_id, fresh=True)
        else:
            run_path = layout.run_dir(Path(root), run_id)
        if run_path.exists():
            raise StoreError(f"run {run_id!r} already exists in {root}")
        try:
            layout.vectors_dir(run_path).mkdir(parents=True)
            layout.tokens_dir(run_path).mkdir()
        except OSError as exc:  # a store that is a file, read-only or full: one message
            reason = exc.strerror or type(exc).__name__
            raise StoreError(
                f"cannot write run {run_id!r} into store {str(root)!r}: {reason}"
            ) from None
        writer = cls(run_path, **kwargs)
        writer._acquire_lock()
        atomic_write_text(
            layout.config_path(run_path), json.dumps(config, indent=2, sort_keys=True)
        )
        if remote is not None:
            writer._pusher = Pusher.open(remote, run_path)
            writer._pusher.push([layout.config_path(run_path)])
        return writer

    @classmethod
    def resume(
        cls, root: Path, run_id: str, keep_parts: Collection[int] | None = None, **kwargs: Any
    ) -> RunWriter:
        """Reopen an uncommitted run: drop half-written files, keep whole parts, find done ones.
        With `keep_parts`, vectors parts of other numbers are dropped too (`dropped_parts`): what
        a fenced-off worker wrote (see the module doc)."""
        remote = RemoteStore(root) if is_uri(root) else None
        if remote is not None:
            run_path = _pull_for_resume(remote, run_id)
        else:
            run_path = layout.run_dir(Path(root), run_id)
        if layout.is_committed(run_path):
            raise StoreError(f"run {run_id!r} is already committed; nothing to resume")
        if not layout.config_path(run_path).is_file():
            raise StoreError(f"run {run_id!r} has no config.json in {root}; cannot resume it")
        writer = cls(run_path, **kwargs)
        writer._acquire_lock()
        vec_dir, tok_dir = layout.vectors_dir(run_path), layout.tokens_dir(run_path)
        ans_dir = layout.answers_dir(run_path)
        for stale in list(vec_dir.glob(".*")) + list(tok_dir.glob(".*")) + list(ans_dir.glob(".*")):
            stale.unlink()
        remove_leftovers(run_path)
        vector_parts = sorted(vec_dir.glob(layout.PART_GLOB))
        if keep_parts is not None:
            wanted = {layout.part_name(n) for n in keep_parts}
            for part in [p for p in vector_parts if p.name not in wanted]:
                writer.dropped_parts.append(_part_number(part))
                part.unlink()
            vector_parts = [p for p in vector_parts if p.name in wanted]
        # Tokens and answers parts are written before their vectors part; without the vectors
        # part they are orphaned.
        kept = {p.name for p in vector_parts}
        for orphan in list(tok_dir.glob(layout.PART_GLOB)) + list(ans_dir.glob(layout.PART_GLOB)):
            if orphan.name not in kept:
                orphan.unlink()
        done: set[int] = set()
        for part in vector_parts:
            column = pq.read_table(part, columns=["sample_idx"]).column("sample_idx")
            done.update(np.unique(column.to_numpy()).tolist())
            writer.rows_written += len(column)
        writer._done = done
        writer._earlier_parts = vector_parts
        writer._next_part = (_part_number(vector_parts[-1]) + 1) if vector_parts else 0
        if remote is not None:  # the remote copy loses what the cleanup above dropped
            writer._pusher = Pusher.open(remote, run_path)
            writer._pusher.push()
            writer._pusher.drop_extra()
        return writer

    @classmethod
    def parts_only(
        cls, root: Path, run_id: str, fence: str | None = None, **kwargs: Any
    ) -> RunWriter:
        """A writer of part files only, for one of several processes writing one run (a Ray
        run's workers): no lock, no config, no sample table, no summaries, no size flushes (the
        caller sizes its parts). Each `flush(part=N)` writes part N, which must be unique in the
        run. Once every such writer is done, the process that created the run closes its writer
        and commits through `resume`, which takes every part in (rows, done samples, summaries).
        With `fence` (the token of `reserve_parts`), each flush first checks that the run's
        reservation still holds that token and raises StoreError, writing nothing, if not."""
        kwargs = {**kwargs, "flush_bytes": 2**62, "summaries": False}
        if is_uri(root):  # parts are written in a private folder and put whole, then dropped
            files = RemoteStore(str(root)).run_files(run_id)
            if layout.COMMIT_MARKER in files or "config.json" not in files:
                raise StoreError(f"run {run_id!r} is not an uncommitted run in {root}")
            staging = Path(tempfile.mkdtemp(prefix="actx-parts-"))
            run_path = layout.run_dir(staging, run_id)
            layout.vectors_dir(run_path).mkdir(parents=True)
            layout.tokens_dir(run_path).mkdir()
            writer = cls(run_path, **kwargs)
            writer._put_root, writer._fence = str(root), fence
            weakref.finalize(writer, shutil.rmtree, staging, True)
            return writer
        run_path = layout.run_dir(Path(root), run_id)
        if layout.is_committed(run_path) or not layout.config_path(run_path).is_file():
            raise StoreError(f"run {run_id!r} is not an uncommitted run in {root}")
        writer = cls(run_path, **kwargs)
        writer._fence = fence
        return writer

    # -- several writers of one run (see the module doc) --------------------------------------
    def reserve_parts(self, count: int) -> PartsFence:
        """Reserve `count` part numbers for parts-only writers under a fresh token, past this
        writer's parts and any earlier reservation's (whose writers are fenced off from here
        on); this writer's own next part comes after them."""
        earlier = self._held_fence()
        start = max(self._next_part, earlier.end if earlier is not None else 0)
        fence = PartsFence(secrets.token_hex(16), start, start + count)
        if fence.end > MAX_PART:
            raise StoreError(f"run {self.run_id!r} has no part numbers left past {start}")
        path = layout.fence_path(self.run_path)
        atomic_write_text(path, json.dumps(dataclasses.asdict(fence)))
        if self._pusher is not None:
            self._pusher.push([path])
        self._next_part = fence.end
        return fence

    def drop_fence(self) -> None:
        """Remove the reservation (before a commit): any parts-only writer left stops too."""
        layout.fence_path(self.run_path).unlink(missing_ok=True)
        if self._pusher is not None:
            self._pusher.remote.delete([f"{self._pusher.prefix}/{layout.FENCE_FILE}"])

    @property
    def earlier_parts(self) -> list[int]:
        """The numbers of the parts a resumed run's earlier attempt left (kept by `resume`)."""
        return [_part_number(p) for p in self._earlier_parts]

    def _held_fence(self) -> PartsFence | None:
        """The run's reservation as it stands (on the object store for a parts-only writer
        there); None when there is none or it is not one of ours (`_read_fence`)."""
        try:
            if self._put_root is not None:
                remote = RemoteStore(self._put_root)
                data = remote.get_bytes(f"runs/{self.run_id}/{layout.FENCE_FILE}", FENCE_MAX_BYTES)
            else:
                data = read_regular(layout.fence_path(self.run_path), FENCE_MAX_BYTES)
        except (StoreError, OSError, ValueError):
            return None
        return _read_fence(data)

    def _check_fence(self) -> None:
        if self._fence is None:
            return
        held = self._held_fence()
        if held is None or held.token != self._fence:
            raise StoreError(
                f"run {self.run_id!r} was taken over by a newer attempt (its "
                f"{layout.FENCE_FILE} changed); this writer stops without writing"
            )

    @property
    def next_part(self) -> int:
        """The number this writer's next part gets; every part on disk has a lower one."""
        return self._next_part

    def _acquire_lock(self) -> None:
        handle = open(self.run_path / ".lock", "a+")  # noqa: SIM115 - held for the writer's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise StoreError(f"run {self.run_id!r} is being written by another process") from exc
        self._lock_handle = handle

    def close(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    # -- writing ---------------------------------------------------------------------------
    @property
    def done_samples(self) -> frozenset[int]:
        return frozenset(self._done)

    def write_samples(self, table: pa.Table) -> None:
        """Write the sample table (one row per sample, `sample_idx` first). Idempotent on resume.

        From here on, flushed rows are summarized too (see the module doc)."""
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression="zstd")
        atomic_write_bytes(layout.samples_path(self.run_path), buffer.getvalue().to_pybytes())
        if self._pusher is not None:
            self._pusher.push([layout.samples_path(self.run_path)])
        if self._summaries and self._summarizer is None and not self._unsummarized_rows:
            wanted = [c for c in ("sample_idx", "id", "label", "pair_id", "side", "category")
                      if c in table.column_names]  # fmt: skip
            self._summarizer = Summarizer(
                self.run_path, self.d_model, self.dtype, table.select(wanted).to_pandas()
            )
            self._summarizer.add_parts(self._earlier_parts)

    def add(
        self,
        hook: str,
        position: str,
        layer: int,
        sample_idx: np.ndarray,
        token_idx: np.ndarray,
        vectors: np.ndarray,
    ) -> None:
        """Buffer rows. vectors: [m, d_model]; sample_idx, token_idx: [m] (-1 token = pooled)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.d_model:
            raise ValueError(f"vectors shape {vectors.shape} != [m, {self.d_model}]")
        stored = vectors.astype(self.np_dtype, copy=False)
        if self.np_dtype == np.float16:
            self.overflow_values += int(np.count_nonzero(~np.isfinite(stored))) - int(
                np.count_nonzero(~np.isfinite(vectors))
            )
        chunk = (sample_idx.astype(np.int32), token_idx.astype(np.int32), stored)
        self._buffer.chunks.setdefault((hook, position, int(layer)), []).append(chunk)
        self._buffer.nbytes += stored.nbytes
        self._buffer.rows += len(stored)

    def add_tokens(
        self,
        sample_idx: np.ndarray,
        token_idx: np.ndarray,
        token_ids: np.ndarray,
        tokens: list[str],
    ) -> None:
        self._buffer.tokens.append((sample_idx, token_idx, token_ids, tokens))

    def add_answers(self, table: pa.Table) -> None:
        """Buffer generated answers: a row per sample, `sample_idx` first (see merge_answers)."""
        if "sample_idx" not in table.column_names:
            raise ValueError("an answers table needs a sample_idx column")
        self._buffer.answers.append(table)

    def end_batch(self, sample_indices: list[int]) -> None:
        """Mark a batch whole; flush if the buffer is full. Only whole batches reach a part."""
        self._buffered_samples.extend(sample_indices)
        if self._buffer.nbytes >= self.flush_bytes:
            self.flush()

    def flush(self, part: int | None = None) -> None:
        """Write the buffered batches as the next part (or as part number `part`)."""
        if part is not None:
            self._next_part = part
        if not self._buffer.rows:
            return
        self._check_fence()
        started, summarizing = time.perf_counter(), self.summary_seconds
        name = layout.part_name(self._next_part)
        written = []
        if self._buffer.tokens:
            written.append(layout.tokens_dir(self.run_path) / name)
            self._write_part(written[-1], self._token_table())
        if self._buffer.answers:
            layout.answers_dir(self.run_path).mkdir(exist_ok=True)
            answers = pa.concat_tables(self._buffer.answers)
            written.append(layout.answers_dir(self.run_path) / name)
            self._write_part(written[-1], answers)
        table = self._vector_table()
        written.append(layout.vectors_dir(self.run_path) / name)
        self._write_part(written[-1], table)
        if self._pusher is not None:  # in the same order: the vectors part last
            self._pusher.push(written)
        if self._put_root is not None:  # a parts-only writer of a run on object storage
            for path in written:
                rel = path.relative_to(self.run_path).as_posix()
                put_run_file(self._put_root, self.run_id, rel, path.read_bytes())
                path.unlink()
        self.rows_written += table.num_rows
        self._done.update(self._buffered_samples)
        self._buffered_samples.clear()
        self._buffer.clear()
        self._next_part += 1
        # Summaries are timed on their own (summary_seconds), so write_s stays the writing.
        self.write_seconds += time.perf_counter() - started - (self.summary_seconds - summarizing)

    def _vector_table(self) -> pa.Table:
        columns: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        # Sorted by (hook, position, layer) so row-group statistics let readers skip groups.
        for (hook, position, layer), chunks in sorted(self._buffer.chunks.items()):
            sample_idx = np.concatenate([c[0] for c in chunks])
            order = np.argsort(sample_idx, kind="stable")
            count = len(sample_idx)
            columns["hook"].append(pa.array([hook] * count, pa.string()))
            columns["position"].append(pa.array([position] * count, pa.string()))
            columns["layer"].append(pa.array(np.full(count, layer, np.int16)))
            columns["sample_idx"].append(pa.array(sample_idx[order]))
            columns["token_idx"].append(pa.array(np.concatenate([c[1] for c in chunks])[order]))
            stored = np.concatenate([c[2] for c in chunks])[order]
            if self._summarizer is not None:
                self._summarizer.add(hook, position, layer, sample_idx[order], stored)
            else:
                self._unsummarized_rows = True
            flat = stored.reshape(-1)
            columns["vector"].append(
                pa.FixedSizeListArray.from_arrays(pa.array(flat), self.d_model)
            )
        arrays = [pa.chunked_array(columns[f.name], f.type) for f in self.schema]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _token_table(self) -> pa.Table:
        parts = self._buffer.tokens
        return pa.table(
            {
                "sample_idx": pa.array(np.concatenate([p[0] for p in parts]).astype(np.int32)),
                "token_idx": pa.array(np.concatenate([p[1] for p in parts]).astype(np.int32)),
                "token_id": pa.array(np.concatenate([p[2] for p in parts]).astype(np.int32)),
                "token": pa.array([t for p in parts for t in p[3]], pa.string()),
            },
            schema=TOKEN_SCHEMA,
        )

    def _write_part(self, path: Path, table: pa.Table) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            row_group_size=self.rows_per_group,
            use_dictionary=["hook", "position"],
            write_statistics=True,
        )
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def merge_answers(self) -> None:
        """Join the answers parts (if any) onto samples.parquet by sample_idx, so readers find
        each sample's answer in the sample table. Run before the commit marker; idempotent."""
        parts = layout.part_files(layout.answers_dir(self.run_path))
        if not parts or self._answers_merged:
            return
        answers = pa.concat_tables([pq.read_table(part) for part in parts])
        samples = pq.read_table(layout.samples_path(self.run_path))
        samples = samples.drop_columns(
            [c for c in answers.column_names if c != "sample_idx" and c in samples.column_names]
        )
        order = np.argsort(answers.column("sample_idx").to_numpy(), kind="stable")
        answers = answers.take(pa.array(order))
        index = answers.column("sample_idx").to_numpy()
        wanted = samples.column("sample_idx").to_numpy()
        if not np.array_equal(np.unique(index), index) or not np.array_equal(index, wanted):
            raise StoreError(
                f"run {self.run_id!r}: the answers do not match the samples one for one"
            )
        for name in answers.column_names[1:]:
            samples = samples.append_column(answers.schema.field(name), answers.column(name))
        self.write_samples(samples)
        self._answers_merged = True

    def write_progress(self, done: int, total: int, **extra: Any) -> None:
        write_progress_file(self.run_path, done, total, **extra)

    @property
    def summary_seconds(self) -> float:
        """Time spent on summaries so far (accumulating while flushing, and writing them)."""
        return self._summarizer.seconds if self._summarizer is not None else 0.0

    def write_summaries(self) -> bool:
        """Flush what is left and write the run's summaries (`commit` does it if not done).
        Returns whether there were any to write (see the module doc for when there are not)."""
        self.flush()
        # Answers join samples.parquet first: the summaries stamp the files they were made from,
        # and a sample table rewritten after them would read as out of date.
        self.merge_answers()
        if self._summarizer is None or self._unsummarized_rows:
            return False
        self._summarizer.finish()
        self._summaries_written = True
        return True

    def commit(self, manifest: RunManifest) -> None:
        """Flush what is left, write the summaries and the manifest, then the marker: the run
        becomes visible with all three."""
        if manifest.run_id != self.run_id:
            raise ValueError(f"manifest run id {manifest.run_id!r} != writer's {self.run_id!r}")
        if not self._summaries_written:
            self.write_summaries()
        self.flush()
        self.merge_answers()
        marker = manifest.created_at or "committed"
        atomic_write_text(layout.manifest_path(self.run_path), manifest.to_json())
        if self._pusher is not None:  # object storage: every file, then the marker, last
            self.close()
            self._pusher.commit(marker)
            return
        atomic_write_text(layout.marker_path(self.run_path), marker)
        fsync_dir(self.run_path)
        self.close()


def _pull_for_resume(remote: RemoteStore, run_id: str) -> Path:
    """A fresh staging folder holding what an interrupted run left on the object store."""
    if remote.is_committed(run_id):
        raise StoreError(f"run {run_id!r} is already committed; nothing to resume")
    run_path = remote.stage(run_id, fresh=True)
    layout.vectors_dir(run_path).mkdir(parents=True)
    layout.tokens_dir(run_path).mkdir()
    remote.pull(run_id, run_path)
    return run_path


def write_progress_file(folder: Path, done: int, total: int, **extra: Any) -> None:
    """progress.json of an uncommitted run, SAE or feature run: live progress for the app."""
    payload = {"done": done, "total": total, "updated": time.time(), **extra}
    atomic_write_text(layout.progress_path(folder), json.dumps(payload))


def list_uncommitted(root: Path | str, folder: str = "runs") -> list[Path]:
    """Uncommitted entries of one store folder: `runs` (default), `saes` or `features`.

    On an object store: local folders holding each uncommitted run's config.json (what
    --resume compares), pulled into the store's cache."""
    if is_uri(root):
        return RemoteStore(root).pending(folder)
    runs = Path(root) / folder
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.iterdir() if p.is_dir() and not layout.is_committed(p))


def is_locked(run_path: Path) -> bool:
    """True while a writer process holds the run (so `clean` must not delete it)."""
    lock = run_path / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def remove_uncommitted(root: Path, folder: str = "runs") -> list[str]:
    """Delete runs (or SAEs, feature runs: `folder`) that never committed and that no live
    writer holds. Returns their ids."""
    if is_uri(root):
        raise StoreError(
            "clean cannot tell a live writer from a dead one on an object store (no locks); "
            "delete an abandoned run's prefix with the storage's own tools"
        )
    removed = []
    for run_path in list_uncommitted(root, folder):
        if not is_locked(run_path):
            shutil.rmtree(run_path)
            removed.append(run_path.name)
    return removed


def is_committed_run(root: Path, run_id: str, folder: str = "runs") -> bool:
    """Whether a run (or an SAE, a feature run: `folder` saes, features) is committed."""
    if is_uri(root):
        return RemoteStore(root).is_committed(run_id, folder)
    return layout.is_committed(layout.entry_dir(Path(root), folder, run_id))


def remove_partial_run(root: Path, run_id: str, wait: float = 5.0, folder: str = "runs") -> bool:
    """Delete an uncommitted run folder once its writer lock is gone (waits up to `wait` s).

    A committed run, a symlink or anything that is not a folder is left alone. Returns whether
    the folder was removed.
    """
    if is_uri(root):
        return False  # no lock to tell a dead writer (see store.fs)
    run = layout.entry_dir(Path(root), folder, run_id)
    if run.is_symlink() or not run.is_dir() or layout.is_committed(run):
        return False
    deadline = time.monotonic() + wait
    while is_locked(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_locked(run):
        return False
    shutil.rmtree(run, ignore_errors=True)
    return True


def read_progress(root: Path, run_id: str, folder: str = "runs") -> tuple[int | None, int | None]:
    """(samples done, total) from a run's progress.json (or an SAE's steps, a feature run's
    records: `folder`); (None, None) when absent or odd."""
    if is_uri(root):
        return None, None  # progress stays in the writer's staging folder
    try:
        raw = read_regular(layout.progress_path(layout.entry_dir(Path(root), folder, run_id)), 4096)
        payload = json.loads(raw)
        done, total = payload["done"], payload["total"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None, None
    if type(done) is not int or type(total) is not int or not 0 <= done <= total <= 10**12:
        return None, None
    return done, total


MAX_PART = 10**9  # part names have at most 9 digits (layout.PART_NAME)
FENCE_MAX_BYTES = 4096  # parts_fence.json is under 100 bytes; a longer one is not ours


@dataclass(frozen=True)
class PartsFence:
    """A reservation of part numbers [start, end) for the parts-only writers holding `token`."""

    token: str
    start: int
    end: int


def _read_fence(data: bytes | None) -> PartsFence | None:
    """parts_fence.json as written by `reserve_parts`, or None when absent or not one (a damaged
    or planted file fences every writer off and reserves nothing)."""
    try:
        found = json.loads(data) if data is not None and len(data) <= FENCE_MAX_BYTES else None
        fence = PartsFence(found["token"], found["start"], found["end"])
    except (ValueError, TypeError, KeyError):
        return None
    ok = isinstance(fence.token, str) and len(fence.token) == 32
    ints = all(type(v) is int for v in (fence.start, fence.end))
    return fence if ok and ints and 0 <= fence.start <= fence.end <= MAX_PART else None


def _part_number(path: Path) -> int:
    return int(path.stem.split("-")[1])
