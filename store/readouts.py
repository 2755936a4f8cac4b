"""Model readouts: what reading a direction as tokens needs, stored once per model weights.

    STORE/readouts/<key>/
      unembedding.parquet  token_id, piece (the tokenizer's own string), text (what it decodes
                           to), vector (float16 [d_model]): one row per row of the unembedding
      manifest.json        ReadoutManifest: the weights hash, the final norm (kind, gain)
      _COMMITTED           written last

`key` is the model's weights hash (`RunManifest.weights_sha256`) when that is 64 hex digits, else
the sha256 of it (a Hugging Face id's `hub:org/name`): `readout_key`. The app never imports
torch, so extraction writes this (`extraction.readout`) and the app reads it: the math is
`analysis.readout`, and `ui.readout.direction_tokens` puts the two together for pages.

Read API (on `Store`): `readouts()`, `damaged_readouts()`, `readout(weights_sha256)` (the
manifest, or StoreError), `iter_unembedding(weights_sha256, batch_rows)` yielding
`(token_ids [m], W [m, d] float32)` chunks, and `token_texts(weights_sha256, ids)`.

Reading trusts nothing: folders are listed by the catalog rules of runs (`store.catalog`), the
Parquet file must be a regular file (not a link) with exactly the expected columns, as many rows
as the manifest's vocabulary, token ids 0..vocab-1 in order and finite values; anything else is
a StoreError naming the readout, never a bare pyarrow error. Memory stays bounded: the
unembedding is read a row batch at a time.

Writing (`write_readout`) goes to a hidden temporary folder that is renamed into place and then
marked committed, so readers never see half a readout; two processes writing the same model's
readout at once both finish, and one copy is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from settings.run import check_choice, check_int
from store import layout
from store.atomic import atomic_write_text, fsync_dir
from store.catalog import CatalogKind, DamagedRun, ManifestCatalog
from store.errors import StoreError
from store.fs import refuse_local_only
from store.manifest import (
    MAX_D_MODEL,
    MAX_LONG_TEXT,
    MAX_SHORT_TEXT,
    ManifestRecord,
    _check_mapping,
    _check_str,
    _text,
    check_extra,
)

NORM_KINDS = ("rms", "layer")  # RMSNorm-like (no centring) or LayerNorm-like (centres first)
MAX_VOCAB = 1 << 24
_HEX64 = re.compile(r"[0-9a-f]{64}")


def readout_key(weights_sha256: str) -> str:
    """The folder name of a model's readout: its weights hash, or the sha256 of a non-hash."""
    if isinstance(weights_sha256, str) and _HEX64.fullmatch(weights_sha256):
        return weights_sha256
    return hashlib.sha256(str(weights_sha256).encode("utf-8")).hexdigest()


class MissingReadout(StoreError):
    """The store has no readout of these weights (not damaged: never saved)."""


@dataclass(frozen=True)
class ReadoutManifest(ManifestRecord):
    """A model's final norm and unembedding, as stored: `gain` [d_model] is the norm's
    effective per-dimension scale (measured, see extraction.readout), `norm_kind` whether it
    centres its input first."""

    key: str
    weights_sha256: str
    model: str
    architecture: str
    d_model: int
    vocab_size: int
    norm_kind: str
    gain: tuple[float, ...]
    dtype: str = "float16"
    reading: str = (
        "scores = W_U @ (gain * P v): the direct effect of direction v on the logits through the "
        "final norm (P removes v's mean for a LayerNorm) and the unembedding, up to the norm's "
        "positive scale; the norm's bias and the unembedding's bias do not depend on v"
    )
    code_version: str = ""
    created_at: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layout.validate_readout_key(self.key)
        _check_str("weights_sha256", self.weights_sha256, MAX_SHORT_TEXT, empty=False)
        if readout_key(self.weights_sha256) != self.key:
            raise ValueError(f"key {self.key[:16]}... is not the key of its weights hash")
        _check_str("model", self.model, MAX_SHORT_TEXT, empty=False)
        for name in ("architecture", "code_version", "created_at"):
            _check_str(name, getattr(self, name), MAX_SHORT_TEXT)
        _check_str("reading", self.reading, MAX_LONG_TEXT)
        check_int("d_model", self.d_model, 1, MAX_D_MODEL)
        check_int("vocab_size", self.vocab_size, 1, MAX_VOCAB)
        check_choice("norm kind", self.norm_kind, NORM_KINDS)
        check_choice("dtype", self.dtype, ("float16",))
        if isinstance(self.gain, str) or not isinstance(self.gain, tuple | list):
            raise ValueError("gain must be a list of numbers")
        if len(self.gain) != self.d_model:
            raise ValueError(f"gain has {len(self.gain)} values; d_model is {self.d_model}")
        if any(type(g) not in (int, float) or not np.isfinite(g) for g in self.gain):
            raise ValueError("gain holds a value that is not a finite number")
        object.__setattr__(self, "gain", tuple(float(g) for g in self.gain))
        _check_mapping("versions", self.versions, _text)
        check_extra(self.extra)

    @property
    def centred(self) -> bool:
        return self.norm_kind == "layer"


READOUTS = CatalogKind(
    "readouts", "readout", layout.validate_readout_key, ReadoutManifest.from_dict, lambda m: m.key
)


def unembedding_schema(d_model: int) -> pa.Schema:
    return pa.schema(
        [
            ("token_id", pa.int32()),
            ("piece", pa.string()),
            ("text", pa.string()),
            ("vector", pa.list_(pa.float16(), d_model)),
        ]
    )


# -- writing -------------------------------------------------------------------------------------
def write_readout(
    root: Path,
    manifest: ReadoutManifest,
    chunks: Iterable[tuple[list[str], list[str], np.ndarray]],
    rows_per_group: int = 8192,
) -> bool:
    """Write a model's readout from chunks (pieces, texts, W [m, d] float16), in token order.

    Returns False (and writes nothing) when a committed readout of these weights is there.
    """
    refuse_local_only(root, "readouts")
    root = Path(root)
    parent = layout.readouts_dir(root)
    final = layout.readout_dir(root, manifest.key)
    if layout.is_committed(final):
        return False
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{manifest.key[:16]}-", dir=parent))
    try:
        schema = unembedding_schema(manifest.d_model)
        written = 0
        with pq.ParquetWriter(layout.unembedding_file(tmp), schema, compression="zstd") as out:
            for pieces, texts, W in chunks:
                W = np.asarray(W, dtype=np.float16)
                ids = np.arange(written, written + W.shape[0], dtype=np.int32)
                table = pa.table(
                    {
                        "token_id": pa.array(ids),
                        "piece": pa.array(pieces, pa.string()),
                        "text": pa.array(texts, pa.string()),
                        "vector": pa.FixedSizeListArray.from_arrays(
                            pa.array(W.reshape(-1), pa.float16()), manifest.d_model
                        ),
                    },
                    schema=schema,
                )
                out.write_table(table, row_group_size=rows_per_group)
                written += W.shape[0]
        if written != manifest.vocab_size:
            raise ValueError(f"wrote {written} rows; the manifest says {manifest.vocab_size}")
        atomic_write_text(layout.manifest_path(tmp), manifest.to_json())
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the readout from a shared store's readers
        try:
            os.rename(tmp, final)
        except OSError:
            if layout.is_committed(final):
                return False  # another process finished first: keep its copy
            shutil.rmtree(final, ignore_errors=True)  # an interrupted earlier write
            os.rename(tmp, final)
        atomic_write_text(layout.marker_path(final), manifest.created_at or "committed")
        fsync_dir(final)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- reading -------------------------------------------------------------------------------------
class Readouts:
    """The readouts of one store: listed by manifest, the unembedding checked as it is read."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._catalog = ManifestCatalog(self.root, READOUTS)

    def scan(self) -> tuple[list[ReadoutManifest], list[DamagedRun]]:
        healthy, damaged, _ = self._catalog.scan()
        return healthy, damaged

    def manifest(self, weights_sha256: str) -> ReadoutManifest:
        if not isinstance(weights_sha256, str) or not weights_sha256:
            raise StoreError(f"weights hash {weights_sha256!r:.80} is not a hash")
        key = readout_key(weights_sha256)
        if self._catalog.read(key)[1] is None:
            raise MissingReadout(
                "no readout of these model weights in this store: `python -m extraction "
                "readout --model ...` saves it (a run of a paired dataset does too)"
            )
        return self._catalog.get(key)

    @contextlib.contextmanager
    def _parquet(self, manifest: ReadoutManifest) -> Iterator[pq.ParquetFile]:
        path = layout.unembedding_file(layout.readout_dir(self.root, manifest.key))

        def fail(problem: str) -> StoreError:
            return StoreError(f"readout {manifest.key[:12]}: file unembedding.parquet {problem}")

        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise fail("is missing") from None
        except OSError as exc:
            raise fail(f"cannot be read ({exc.strerror or 'a link?'})") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise fail("is not a regular file")
            try:
                parquet = pq.ParquetFile(handle)
            except (pa.ArrowException, OSError, ValueError):
                raise fail("is not Parquet (or is cut short)") from None
            if not parquet.schema_arrow.remove_metadata().equals(
                unembedding_schema(manifest.d_model)
            ):
                raise fail(f"does not have the columns of a readout of width {manifest.d_model}")
            if parquet.metadata.num_rows != manifest.vocab_size:
                raise fail(
                    f"has {parquet.metadata.num_rows} rows; the manifest says {manifest.vocab_size}"
                )
            try:
                yield parquet
            except (pa.ArrowException, OSError) as exc:
                raise fail(f"is damaged ({type(exc).__name__})") from None

    def iter_unembedding(
        self, weights_sha256: str, batch_rows: int = 16384
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(token_ids [m] int64, W [m, d] float32) chunks of the unembedding, in token order."""
        manifest = self.manifest(weights_sha256)
        with self._parquet(manifest) as parquet:
            expected = 0
            for batch in parquet.iter_batches(
                batch_size=batch_rows, columns=["token_id", "vector"]
            ):
                ids = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
                if not np.array_equal(ids, np.arange(expected, expected + len(ids))):
                    raise StoreError(
                        f"readout {manifest.key[:12]}: file unembedding.parquet has token ids "
                        "out of order"
                    )
                expected += len(ids)
                vectors = batch.column(1)
                if vectors.null_count:
                    raise StoreError(
                        f"readout {manifest.key[:12]}: file unembedding.parquet has missing rows"
                    )
                W = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
                yield ids, W.reshape(-1, manifest.d_model)

    def token_texts(self, weights_sha256: str, token_ids) -> list[str]:
        """What each token id decodes to (`text`), in the order given."""
        manifest = self.manifest(weights_sha256)
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= manifest.vocab_size):
            raise StoreError(f"token id out of range 0..{manifest.vocab_size - 1}")
        with self._parquet(manifest) as parquet:
            texts = parquet.read(columns=["text"]).column(0).to_pylist()
        return [texts[i] if texts[i] is not None else "" for i in ids.tolist()]


def copy_readouts(source: Path, target: Path, weights: set[str], model_name) -> list[str]:
    """Copy the healthy readouts of these weights hashes from store `source` into store
    `target` (a snapshot), the manifest's model named by `model_name(model)`. Returns the keys."""
    copied = []
    for manifest in Readouts(source).scan()[0]:
        folder = layout.readout_dir(Path(target), manifest.key)
        if manifest.weights_sha256 not in weights or folder.exists():
            continue
        src = layout.unembedding_file(layout.readout_dir(Path(source), manifest.key))
        if src.is_symlink() or not src.is_file():
            continue  # a damaged readout stays behind
        folder.mkdir(parents=True)
        shutil.copyfile(src, layout.unembedding_file(folder))
        public = ReadoutManifest(**{**manifest.__dict__, "model": model_name(manifest.model)})
        atomic_write_text(layout.manifest_path(folder), public.to_json())
        atomic_write_text(layout.marker_path(folder), manifest.created_at or "committed")
        fsync_dir(folder)
        copied.append(manifest.key)
    return copied
