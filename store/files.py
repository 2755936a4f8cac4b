"""A run's Parquet files: found through `store.layout`, checked against the manifest, read to numpy.

`RunFiles` names the samples, vector and token files of a healthy run after checking each one's
footer: it is a regular file, it is Parquet, it has the columns readers need, and its vectors are
floating point lists (of the manifest's `d_model` where the width is fixed). A failure is a
`StoreError` naming the run and the file relative to the run (`run 'x': cannot read vectors
(file vectors/part-00000.parquet is not Parquet (or is cut short))`); `as_damaged` turns it into
the run's `DamagedRun` for listings that skip such runs.

Caveats: a footer check is not a data check. The footer of each file version (size, mtime,
inode) is read once and cached, so checks cost one stat per file; the rows themselves are read
later, and damage in them surfaces then, from the reads (`vectors_to_numpy` checks every row's
width). Only part files named exactly `part-NNNNN.parquet` count (see `store.layout`).
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store import layout
from store.catalog import DamagedRun
from store.errors import StoreError, one_line
from store.manifest import RunManifest

_VECTOR_COLUMNS = ("hook", "position", "layer", "sample_idx", "vector")
_TOKEN_COLUMNS = ("sample_idx", "token_idx", "token_id", "token")


def _file_problem(exc: BaseException, rel: str) -> str:
    message = str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"file {rel} is missing"
    if "magic bytes" in message or "smaller than the minimum" in message:
        return f"file {rel} is not Parquet (or is cut short)"
    if "size is 0 bytes" in message:
        return f"file {rel} is empty"
    if isinstance(exc, OSError) and exc.strerror:
        return f"file {rel} cannot be read ({exc.strerror})"
    return f"file {rel} is damaged ({one_line(message.split(chr(10))[0], 160)})"


def _vector_problem(schema: pa.Schema, d_model: int) -> str | None:
    missing = [name for name in _VECTOR_COLUMNS if name not in schema.names]
    if missing:
        return f"has no column {missing[0]!r}"
    kind = schema.field("vector").type
    if not (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)):
        return f"has a vector column of type {kind}, not a list of numbers"
    if not pa.types.is_floating(kind.value_type):
        return f"has vectors of {kind.value_type}, not floating point numbers"
    if pa.types.is_fixed_size_list(kind) and kind.list_size != d_model:
        return f"holds vectors of width {kind.list_size}; the manifest says d_model {d_model}"
    return None


def vectors_to_numpy(
    column: pa.ChunkedArray | pa.Array, d_model: int, float32: bool = True
) -> np.ndarray:
    """list<float> column -> float32 array [n, d_model] (or, `float32=False`, the stored float
    type as it is); ValueError if a row has another width."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros((0, d_model), np.float32)
    if array.null_count:
        raise ValueError(f"{array.null_count} vectors are missing (null)")
    if pa.types.is_fixed_size_list(array.type):
        widths = np.full(1, array.type.list_size)
    else:
        widths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    wrong = widths[widths != d_model]
    if len(wrong):
        raise ValueError(f"vectors of width {int(wrong[0])}; the manifest says d_model {d_model}")
    values = array.flatten().to_numpy(zero_copy_only=False)
    if float32:
        values = values.astype(np.float32, copy=False)
    return values.reshape(-1, d_model)


def as_damaged(run_id: str, error: StoreError) -> DamagedRun:
    """The DamagedRun of a run whose file check raised `error` (its reason, without the run)."""
    reason = str(error).removeprefix(f"run {run_id!r}").removeprefix(": ")
    return DamagedRun(f"runs/{run_id}", one_line(reason))


class RunFiles:
    """The Parquet files of one store's runs, each footer checked once per file version."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        # file path -> (stat signature, its Parquet schema or the problem found reading it)
        self._schemas: dict[str, tuple[tuple, pa.Schema | str]] = {}

    def samples_file(self, manifest: RunManifest) -> str:
        path = layout.samples_path(layout.run_dir(self.root, manifest.run_id))
        if "sample_idx" not in self._schema(manifest.run_id, path, "samples").names:
            raise StoreError(
                f"run {manifest.run_id!r}: cannot read samples "
                "(file samples.parquet has no column 'sample_idx')"
            )
        return str(path)

    def vector_files(self, manifest: RunManifest) -> list[str]:
        run_id = manifest.run_id
        parts = layout.part_files(layout.vectors_dir(layout.run_dir(self.root, run_id)))
        if not parts:
            raise StoreError(f"run {run_id!r} has no vector files")
        for part in parts:
            problem = _vector_problem(self._schema(run_id, part, "vectors"), manifest.d_model)
            if problem:
                rel = self._relative(run_id, part)
                raise StoreError(f"run {run_id!r}: cannot read vectors (file {rel} {problem})")
        return [str(p) for p in parts]

    def token_files(self, manifest: RunManifest) -> list[str]:
        run_id = manifest.run_id
        parts = layout.part_files(layout.tokens_dir(layout.run_dir(self.root, run_id)))
        if not parts:
            raise StoreError(f"run {run_id!r} has no token files")
        for part in parts:
            names = self._schema(run_id, part, "tokens").names
            missing = [name for name in _TOKEN_COLUMNS if name not in names]
            if missing:
                rel = self._relative(run_id, part)
                raise StoreError(
                    f"run {run_id!r}: cannot read tokens (file {rel} has no column {missing[0]!r})"
                )
        return [str(p) for p in parts]

    def check(self, manifest: RunManifest) -> None:
        """Every file the run's reads need opens and fits the manifest, or a StoreError."""
        self.samples_file(manifest)
        self.vector_files(manifest)
        if "all" in manifest.positions:
            self.token_files(manifest)

    def damage(self, manifest: RunManifest) -> DamagedRun | None:
        """`check` as a value: the run's DamagedRun if a file of it fails, else None."""
        try:
            self.check(manifest)
        except StoreError as exc:
            return as_damaged(manifest.run_id, exc)
        return None

    def _relative(self, run_id: str, path: Path) -> str:
        return path.relative_to(layout.run_dir(self.root, run_id)).as_posix()

    def _schema(self, run_id: str, path: Path, what: str) -> pa.Schema:
        """The Parquet schema of one file of a run, read from its footer once per version."""
        rel = self._relative(run_id, path)
        try:
            info = os.stat(path)
        except OSError as exc:
            problem = _file_problem(exc, rel)
            raise StoreError(f"run {run_id!r}: cannot read {what} ({problem})") from None
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"run {run_id!r}: cannot read {what} (file {rel} is not a file)")
        signature = (info.st_size, info.st_mtime_ns, info.st_ino)
        key = str(path)
        with self._lock:
            cached = self._schemas.get(key)
        if cached is None or cached[0] != signature:
            try:
                found: pa.Schema | str = pq.read_schema(path)
            except (pa.ArrowException, OSError, ValueError) as exc:
                found = _file_problem(exc, rel)
            cached = (signature, found)
            with self._lock:
                self._schemas[key] = cached
        if isinstance(cached[1], str):
            raise StoreError(f"run {run_id!r}: cannot read {what} ({cached[1]})")
        return cached[1]
