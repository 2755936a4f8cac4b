"""Vector sets: control vectors computed from one paired run, one unit vector per layer.

    STORE/vector_sets/<set_id>/
      vectors.parquet   layer, vector (float32 [d_model]), raw_norm, explained_variance,
                        sign_agreement, typical_norm: one row per layer
      manifest.json     VectorSetManifest: provenance (run, model and weights, hook, method,
                        layers, styles, dataset, code version)
      _COMMITTED        written last: a set without it is invisible

A set is written whole (`write_vector_set`: the Parquet file, the manifest, then the marker, each
atomically; on object storage each put whole under its final key, the marker last, and read through
the store's mirror, see store.fs) and never changed. Reading trusts nothing: folders are listed by
the same catalog rules as runs (`store.catalog`: a bad name, a symlink, a missing, huge or
malformed manifest, a manifest naming another set), and `read_vector_set` checks the Parquet file
against its manifest (regular file, size bounded by what the manifest allows, the exact columns and
types, one row per listed layer, finite numbers, unit vectors, figures in range). Any failure is a
`StoreError` naming the set and the file; listings turn it into a `DamagedRun` record with the
reason (`damaged_vector_sets`), so one damaged or planted set never hides the others.

`typical_norm` is the mean L2 norm of the run's states at that layer and hook (both styles):
steering scales its strength by it, so one strength means the same at every layer.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from settings.run import MAX_LAYER_INDEX, check_choice, check_int, validate_run_id
from settings.vectors import METHODS, VECTOR_HOOKS
from store import layout
from store.atomic import atomic_write_bytes, atomic_write_text, fsync_dir, read_regular
from store.catalog import CatalogKind, DamagedRun, ManifestCatalog
from store.errors import StoreError, one_line
from store.fs import RemoteStore, is_uri
from store.manifest import (
    MAX_D_MODEL,
    MAX_LONG_TEXT,
    MAX_SAMPLES,
    MAX_SHORT_TEXT,
    ManifestRecord,
    _check_layers,
    _check_mapping,
    _check_str,
    _text,
    check_extra,
)

SIGN_CONVENTION = (
    "each vector points from the first style to the second: for most pairs the second style's "
    "state projects higher on it (repeng's rule; ties broken by the mean projection)"
)
STRENGTH_SCALE = (
    "typical_norm = mean L2 norm of the run's states at that layer and hook, both styles; "
    "steering adds strength * typical_norm * vector"
)
_FIGURES = ("raw_norm", "explained_variance", "sign_agreement", "typical_norm")


def _check_number(kind: str, value: object, low: float, high: float) -> float:
    if type(value) not in (int, float) or not low <= value <= high:
        raise ValueError(f"{kind} {value!r:.40} must be a number in {low:g}..{high:g}")
    return float(value)


@dataclass(frozen=True)
class VectorSetManifest(ManifestRecord):
    """Provenance of one vector set. Layer L is decoder block L of the run's convention."""

    set_id: str
    name: str
    run_id: str
    model: str
    architecture: str
    weights_sha256: str
    n_layers: int  # of the model
    d_model: int
    hook: str
    method: str
    layers: tuple[int, ...]
    dataset_name: str
    dataset_sha256: str
    n_pairs: int
    first_label: str  # the style of side a
    second_label: str  # the style of side b: vectors point toward it
    position: str = "last"
    sign_convention: str = SIGN_CONVENTION
    strength_scale: str = STRENGTH_SCALE
    code_version: str = ""
    created_at: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_run_id(self.set_id)
        validate_run_id(self.run_id)
        for name in ("name", "model", "dataset_name", "first_label", "second_label"):
            _check_str(name, getattr(self, name), MAX_SHORT_TEXT, empty=False)
        for name in ("architecture", "weights_sha256", "dataset_sha256", "code_version",
                     "created_at"):  # fmt: skip
            _check_str(name, getattr(self, name), MAX_SHORT_TEXT)
        for name in ("sign_convention", "strength_scale"):
            _check_str(name, getattr(self, name), MAX_LONG_TEXT)
        check_int("n_layers", self.n_layers, 1, MAX_LAYER_INDEX)
        check_int("d_model", self.d_model, 1, MAX_D_MODEL)
        check_int("n_pairs", self.n_pairs, 2, MAX_SAMPLES)
        check_choice("hook", self.hook, VECTOR_HOOKS)
        check_choice("method", self.method, METHODS)
        check_choice("position", self.position, ("last",))
        object.__setattr__(self, "layers", _check_layers(self.layers, self.n_layers))
        _check_mapping("versions", self.versions, _text)
        check_extra(self.extra)

    @property
    def max_file_bytes(self) -> int:
        """The largest vectors.parquet this manifest can explain (float32 rows, some slack)."""
        return len(self.layers) * (self.d_model * 4 + 64) * 2 + (1 << 20)


VECTOR_SETS = CatalogKind(
    "vector_sets", "vector set", validate_run_id, VectorSetManifest.from_dict, lambda m: m.set_id
)


def vector_set_schema(d_model: int) -> pa.Schema:
    return pa.schema(
        [("layer", pa.int16()), ("vector", pa.list_(pa.float32(), d_model))]
        + [(name, pa.float64()) for name in _FIGURES]
    )


@dataclass(frozen=True)
class VectorSet:
    """A committed set, read and checked: layers [L], vectors [L, d] float32 (unit rows), and
    per layer raw_norm, explained_variance, sign_agreement, typical_norm ([L] float64 each)."""

    manifest: VectorSetManifest
    layers: tuple[int, ...]
    vectors: np.ndarray
    raw_norm: np.ndarray
    explained_variance: np.ndarray
    sign_agreement: np.ndarray
    typical_norm: np.ndarray

    def by_layer(self) -> dict[int, np.ndarray]:
        return {layer: self.vectors[i] for i, layer in enumerate(self.layers)}


# -- writing -------------------------------------------------------------------------------------
def write_vector_set(
    root: Path | str, manifest: VectorSetManifest, vectors: np.ndarray,
    figures: dict[str, np.ndarray],
) -> Path | str:  # fmt: skip
    """Write a new committed set: vectors [L, d] for manifest.layers, figures [L] by name.
    `root` may be a store URI (`s3://...`): each file is put whole, the marker last
    (store.fs.RemoteStore.put_entry); returns the set's folder (or its URI)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(manifest.layers)
    if vectors.shape != (n, manifest.d_model):
        raise ValueError(f"vectors of shape {vectors.shape}; expected {(n, manifest.d_model)}")
    columns = {
        "layer": pa.array(np.asarray(manifest.layers, dtype=np.int16)),
        "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1)), manifest.d_model
        ),
        **{name: pa.array(np.asarray(figures[name], dtype=np.float64)) for name in _FIGURES},
    }
    table = pa.table(columns, schema=vector_set_schema(manifest.d_model))
    if is_uri(root):
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        files = {"vectors.parquet": buffer.getvalue(), "manifest.json": manifest.to_json().encode()}
        RemoteStore(str(root)).put_entry("vector_sets", manifest.set_id, files,
                                         manifest.created_at or "committed")  # fmt: skip
        return f"{str(root).rstrip('/')}/vector_sets/{manifest.set_id}"
    folder = layout.vector_set_dir(Path(root), manifest.set_id)
    try:
        layout.vector_sets_dir(Path(root)).mkdir(parents=True, exist_ok=True)
        folder.mkdir()
    except FileExistsError:
        raise StoreError(f"vector set {manifest.set_id!r} already exists") from None
    except OSError as exc:
        raise StoreError(f"cannot create vector set {manifest.set_id!r}: {exc.strerror}") from None
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    atomic_write_bytes(layout.vector_set_file(folder), buffer.getvalue())
    atomic_write_text(layout.manifest_path(folder), manifest.to_json())
    atomic_write_text(layout.marker_path(folder), manifest.created_at or "committed")
    fsync_dir(folder)
    return folder


def is_committed_vector_set(root: Path, set_id: str) -> bool:
    return layout.is_committed(layout.vector_set_dir(Path(root), set_id))


def remove_partial_vector_set(root: Path, set_id: str) -> bool:
    """Delete an uncommitted set folder (a killed computation); a committed one is kept."""
    folder = layout.vector_set_dir(Path(root), set_id)
    if folder.is_symlink() or not folder.is_dir() or layout.is_committed(folder):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


# -- reading -------------------------------------------------------------------------------------
def read_vector_set(root: Path, manifest: VectorSetManifest) -> VectorSet:
    """Read and check a set's Parquet file against its manifest (StoreError if it fails)."""
    set_id = manifest.set_id
    folder = layout.vector_set_dir(Path(root), set_id)

    def fail(problem: str) -> StoreError:
        return StoreError(f"vector set {set_id!r}: file vectors.parquet {problem}")

    try:
        data = read_regular(layout.vector_set_file(folder), manifest.max_file_bytes)
    except FileNotFoundError:
        raise fail("is missing") from None
    except ValueError:
        raise fail("is larger than its manifest allows") from None
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError):
        raise fail("is not Parquet (or is cut short)") from None
    expected = vector_set_schema(manifest.d_model)
    if not table.schema.remove_metadata().equals(expected):
        raise fail(f"does not have the columns of a vector set of width {manifest.d_model}")
    layers = tuple(table.column("layer").to_pylist())
    if layers != manifest.layers:
        raise fail(
            f"holds layers {list(layers)[:8]}; the manifest says {list(manifest.layers)[:8]}"
        )
    vector_column = table.column("vector").combine_chunks()
    if vector_column.null_count:
        raise fail("has missing vectors")
    vectors = vector_column.flatten().to_numpy(zero_copy_only=False).reshape(-1, manifest.d_model)
    figures = {}
    for name in _FIGURES:
        column = table.column(name)
        if column.null_count:
            raise fail(f"has missing {name} values")
        figures[name] = column.to_numpy().astype(np.float64)
    if not (np.isfinite(vectors).all() and all(np.isfinite(v).all() for v in figures.values())):
        raise fail("holds nan or inf values")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if np.abs(norms - 1.0).max() > 1e-3:
        raise fail("holds vectors that are not unit vectors")
    if (figures["sign_agreement"] < 0).any() or (figures["sign_agreement"] > 1).any():
        raise fail("holds a sign agreement outside 0..1")
    if (figures["explained_variance"] < 0).any() or (
        figures["explained_variance"] > 1 + 1e-9
    ).any():
        raise fail("holds an explained variance outside 0..1")
    if (figures["typical_norm"] <= 0).any():
        raise fail("holds a typical norm that is not positive")
    return VectorSet(manifest, layers, vectors.astype(np.float32), **figures)


class VectorSets:
    """The vector sets of one store: listed by manifest, each file checked when read."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._catalog = ManifestCatalog(self.root, VECTOR_SETS)

    def scan(self, check_files: bool = False) -> tuple[list[VectorSetManifest], list[DamagedRun]]:
        check = self._damage if check_files else None
        healthy, damaged, _ = self._catalog.scan(check)
        return healthy, damaged

    def _damage(self, manifest: VectorSetManifest) -> DamagedRun | None:
        try:
            read_vector_set(self.root, manifest)
        except StoreError as exc:
            reason = str(exc).removeprefix(f"vector set {manifest.set_id!r}: ")
            return DamagedRun(f"vector_sets/{manifest.set_id}", one_line(reason))
        return None

    def manifest(self, set_id: str) -> VectorSetManifest:
        return self._catalog.get(set_id)

    def read(self, set_id: str) -> VectorSet:
        return read_vector_set(self.root, self.manifest(set_id))

    def resolve(self, name: str) -> str:
        """A healthy set id, or an unambiguous prefix of one."""
        return self._catalog.resolve(name)


def copy_vector_sets(source: Path, target: Path, run_ids, model_name) -> list[str]:
    """Copy every healthy set of `run_ids` from store `source` into store `target` (a snapshot):
    the file as it is, the manifest with the model named by `model_name(model)` (a snapshot
    names no server path). Returns the ids copied; damaged sets are left behind."""
    sets = VectorSets(source)
    copied = []
    for manifest in sets.scan(check_files=True)[0]:
        if manifest.run_id not in run_ids:
            continue
        folder = layout.vector_set_dir(target, manifest.set_id)
        if folder.exists():
            continue
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()
        data = read_regular(
            layout.vector_set_file(layout.vector_set_dir(source, manifest.set_id)),
            manifest.max_file_bytes,
        )
        atomic_write_bytes(layout.vector_set_file(folder), data)
        public = VectorSetManifest(**{**manifest.__dict__, "model": model_name(manifest.model)})
        atomic_write_text(layout.manifest_path(folder), public.to_json())
        atomic_write_text(layout.marker_path(folder), manifest.created_at or "committed")
        fsync_dir(folder)
        copied.append(manifest.set_id)
    return copied
