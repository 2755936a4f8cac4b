"""Feature runs: SAE features of a dataset, stored sparsely in `STORE/features/<id>/`.

`python -m extraction sae` encodes one hook's activations with an SAE and keeps, per position,
the top-K features (ids and activations of the features that fired, strongest first, at most
K) and how many fired in all. Nothing dense is stored: a position costs ~8 bytes per kept
feature, not d_sae floats. A feature run holds

    source.<ext>          the dataset file as given (the JSON export writes it back)
    samples.parquet       one row per record: sample_idx, location (`results[0].variations[2]`
                          or `line 5`), id, label, prompt, response, status ("ok" or why not),
                          answer_start (first response token), total_tokens, truncated
    topk/part-*.parquet   sample_idx, token_idx, n_active, feature_ids list<int32>,
                          activations list<float32> (one row per kept position)
    tokens/part-*.parquet sample_idx, token_idx, token_id, token (every token of every record)
    manifest.json         `FeatureManifest`: model, SAE and its source, hook, layer, positions,
                          top K, dataset, provenance; written at commit
    _COMMITTED            written last: a feature run without it is invisible

`positions` is `last_prompt` (one row per record: the last token before the response, where
the model has read the prompt and is about to answer) or `all` (one row per token).

The writer buffers rows and writes part files atomically (temporary name, fsync, rename); a
killed extraction leaves an uncommitted folder that readers ignore and `extraction clean`
removes. Reading is strict (`store.catalog` for manifests, `FeatureShelf` for files).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from settings.run import (
    BACKENDS,
    HOOKS,
    MAX_LAYER_INDEX,
    check_bool,
    check_choice,
    check_int,
    validate_run_id,
)
from settings.sae import MAX_D_SAE, MAX_TOP_K, SAE_POSITIONS, tl_hook_name
from store import layout
from store.atomic import atomic_write_bytes, atomic_write_text, fsync_dir
from store.catalog import CatalogKind
from store.errors import StoreError
from store.fs import refuse_local_only
from store.json_records import MAX_SOURCE_BYTES, SUFFIXES
from store.manifest import (
    MAX_D_MODEL,
    MAX_SAMPLES,
    MAX_SHORT_TEXT,
    ManifestRecord,
    _check_mapping,
    _check_str,
    _count,
    _number,
    _text,
    check_extra,
)
from store.shelf import id_check
from store.writer import TOKEN_SCHEMA, write_progress_file

SAE_SOURCES = ("store", "folder", "release")
TOPK_SCHEMA = pa.schema(
    [
        ("sample_idx", pa.int32()),
        ("token_idx", pa.int32()),
        ("n_active", pa.int32()),
        ("feature_ids", pa.list_(pa.int32())),
        ("activations", pa.list_(pa.float32())),
    ]
)
SAMPLE_SCHEMA = pa.schema(
    [
        ("sample_idx", pa.int32()),
        ("location", pa.string()),
        ("id", pa.string()),
        ("label", pa.string()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("status", pa.string()),
        ("answer_start", pa.int32()),
        ("total_tokens", pa.int32()),
        ("truncated", pa.bool_()),
    ]
)
OK = "ok"
FLUSH_ROWS = 200_000  # ~8 MB of kept features at K = 50


@dataclass(frozen=True)
class FeatureManifest(ManifestRecord):
    """Provenance of one feature run. Validates every field; does no I/O.

    `sae_source` says where the SAE came from: `store` (an SAE this store trained; `sae` is its
    id), `folder` (a folder in sae-lens's format; `sae` is its name) or `release` (sae-lens's
    pretrained directory; `sae` is the release and `sae_id` the id in it).
    """

    feature_run_id: str
    name: str
    model: str
    model_source: str
    model_architecture: str
    weights_sha256: str
    n_layers: int
    d_model: int
    backend: str
    weight_processing: str
    sae_source: str
    sae: str
    sae_id: str
    sae_sha256: str
    sae_architecture: str
    hook: str
    layer: int
    d_sae: int
    positions: str
    top_k: int
    dataset_name: str
    dataset_sha256: str
    source_suffix: str
    n_records: int
    n_ok: int
    chat_template: bool = False
    max_length: int = 512
    batch_size: int = 16
    device: str = "cpu"
    compute_dtype: str = "float32"
    code_version: str = ""
    created_at: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    row_counts: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_run_id(self.feature_run_id)
        for name in ("name", "model", "sae", "sae_id", "dataset_name"):
            _check_str(name, getattr(self, name), MAX_SHORT_TEXT, empty=False)
        for name in ("model_source", "model_architecture", "weights_sha256",
                     "weight_processing", "sae_sha256", "sae_architecture", "dataset_sha256",
                     "device", "compute_dtype", "code_version", "created_at"):  # fmt: skip
            _check_str(name, getattr(self, name), MAX_SHORT_TEXT)
        check_int("n_layers", self.n_layers, 1, MAX_LAYER_INDEX)
        check_int("d_model", self.d_model, 1, MAX_D_MODEL)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("sae_source", self.sae_source, SAE_SOURCES)
        check_choice("hook", self.hook, HOOKS)
        check_int("layer", self.layer, 0, self.n_layers - 1)
        check_int("d_sae", self.d_sae, 1, MAX_D_SAE)
        check_choice("positions", self.positions, SAE_POSITIONS)
        check_int("top_k", self.top_k, 1, MAX_TOP_K)
        check_choice("source_suffix", self.source_suffix, SUFFIXES)
        check_int("n_records", self.n_records, 1, MAX_SAMPLES)
        check_int("n_ok", self.n_ok, 0, self.n_records)
        check_bool("chat_template", self.chat_template)
        check_int("max_length", self.max_length, 1, 1 << 30)
        check_int("batch_size", self.batch_size, 1, 1 << 20)
        _check_mapping("timings", self.timings, _number)
        _check_mapping("row_counts", self.row_counts, _count)
        _check_mapping("versions", self.versions, _text)
        check_extra(self.extra)

    @property
    def hook_name(self) -> str:
        return tl_hook_name(self.hook, self.layer)


FEATURES = CatalogKind(
    "features", "feature run", id_check("feature run"), FeatureManifest.from_dict,
    lambda m: m.feature_run_id,
)  # fmt: skip


class FeatureWriter:
    """Streams one feature run into `STORE/features/<id>/`. `create`, `add_*`, `commit`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.feature_run_id = folder.name
        self._topk: list[tuple] = []
        self._tokens: list[tuple] = []
        self._buffered = 0
        self._next_part = 0
        self._lock_handle: Any = None
        self.rows_written = 0

    @classmethod
    def create(cls, root: Path, feature_run_id: str, source: bytes, suffix: str) -> FeatureWriter:
        """A new feature run folder holding `source` (the dataset file, kept for the export)."""
        refuse_local_only(root, "features")
        check_choice("source suffix", suffix, SUFFIXES)
        if len(source) > MAX_SOURCE_BYTES:
            raise StoreError(f"the dataset is over {MAX_SOURCE_BYTES >> 20} MiB")
        folder = layout.feature_run_dir(Path(root), feature_run_id)
        if folder.exists() or folder.is_symlink():
            raise StoreError(f"feature run {feature_run_id!r} already exists in this store")
        try:
            layout.topk_dir(folder).mkdir(parents=True)
            layout.tokens_dir(folder).mkdir()
        except OSError as exc:
            raise StoreError(
                f"cannot write feature run {feature_run_id!r} into store {str(root)!r}: "
                f"{exc.strerror or exc}"
            ) from None
        writer = cls(folder)
        writer._lock_handle = open(folder / ".lock", "a+")  # noqa: SIM115 - held until commit
        fcntl.flock(writer._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        atomic_write_bytes(layout.source_path(folder, suffix), source)
        return writer

    def write_samples(self, table: pa.Table) -> None:
        buffer = pa.BufferOutputStream()
        pq.write_table(table.cast(SAMPLE_SCHEMA), buffer, compression="zstd")
        atomic_write_bytes(layout.samples_path(self.folder), buffer.getvalue().to_pybytes())

    def add_positions(
        self,
        sample_idx: np.ndarray,
        token_idx: np.ndarray,
        n_active: np.ndarray,
        feature_ids: list[np.ndarray],
        activations: list[np.ndarray],
    ) -> None:
        """Buffer kept positions: [m] arrays, and per position its feature ids and values."""
        self._topk.append((sample_idx, token_idx, n_active, feature_ids, activations))
        self._buffered += len(sample_idx)

    def add_tokens(self, sample_idx, token_idx, token_ids, tokens: list[str]) -> None:
        self._tokens.append((sample_idx, token_idx, token_ids, tokens))
        self._buffered += len(tokens)

    def write_progress(self, done: int, total: int) -> None:
        write_progress_file(self.folder, done, total, run_id=self.feature_run_id)

    def end_batch(self) -> None:
        if self._buffered >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._topk and not self._tokens:
            return
        name = layout.part_name(self._next_part)
        if self._tokens:
            parts = self._tokens
            table = pa.table(
                {
                    "sample_idx": np.concatenate([p[0] for p in parts]).astype(np.int32),
                    "token_idx": np.concatenate([p[1] for p in parts]).astype(np.int32),
                    "token_id": np.concatenate([p[2] for p in parts]).astype(np.int32),
                    "token": pa.array([t for p in parts for t in p[3]], pa.string()),
                },
                schema=TOKEN_SCHEMA,
            )
            self._write_part(layout.tokens_dir(self.folder) / name, table)
        if self._topk:
            parts = self._topk
            ids = [row for p in parts for row in p[3]]
            values = [row for p in parts for row in p[4]]
            table = pa.table(
                {
                    "sample_idx": np.concatenate([p[0] for p in parts]).astype(np.int32),
                    "token_idx": np.concatenate([p[1] for p in parts]).astype(np.int32),
                    "n_active": np.concatenate([p[2] for p in parts]).astype(np.int32),
                    "feature_ids": _list_array(ids, np.int32, pa.int32()),
                    "activations": _list_array(values, np.float32, pa.float32()),
                },
                schema=TOPK_SCHEMA,
            )
            self._write_part(layout.topk_dir(self.folder) / name, table)
            self.rows_written += table.num_rows
        self._topk.clear()
        self._tokens.clear()
        self._buffered = 0
        self._next_part += 1

    @staticmethod
    def _write_part(path: Path, table: pa.Table) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp, compression="zstd", row_group_size=65_536)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def commit(self, manifest: FeatureManifest) -> None:
        """Flush, write the manifest, then the marker: the feature run becomes visible."""
        if manifest.feature_run_id != self.feature_run_id:
            raise ValueError(f"manifest id {manifest.feature_run_id!r} != {self.feature_run_id!r}")
        self.flush()
        atomic_write_text(layout.manifest_path(self.folder), manifest.to_json())
        atomic_write_text(layout.marker_path(self.folder), manifest.created_at or "committed")
        fsync_dir(self.folder)
        self.close()

    def close(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None


def _list_array(rows: list[np.ndarray], np_type, pa_type) -> pa.Array:
    offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    flat = np.concatenate(rows).astype(np_type) if rows else np.zeros(0, np_type)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa_type))
