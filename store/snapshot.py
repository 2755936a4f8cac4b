"""Snapshots: copy chosen runs and layers of a store into a small, self-contained new store.

A hosted read-only app serves the snapshot (commit it to the repository or ship it with the app).
Each run keeps its samples, tokens and config; vectors keep only the chosen layers and are stored
as float16 (values beyond the float16 range become inf and are counted in the manifest). The
manifest is the source's, with `layers`, `dtype` and `row_counts` updated and the source recorded
in `extra["snapshot"]`; the commit marker is written last, as for any run, so an interrupted
snapshot leaves nothing visible. Vectors are streamed one row group at a time: memory stays flat.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store import layout
from store.atomic import atomic_write_text, fsync_dir
from store.errors import StoreError
from store.reader import open_store
from store.writer import DEFAULT_ROW_GROUP_BYTES, vector_schema


def parse_layer_list(spec: str) -> tuple[int, ...] | None:
    """'all' -> None; '0,5,10' or '-1' (last) -> a tuple resolved per run."""
    if spec.strip() == "all":
        return None
    try:
        layers = tuple(int(part) for part in spec.split(",") if part.strip())
    except ValueError:
        raise StoreError(
            f"bad layers {spec!r}: use all or a list like 0,5,10 (-1 = last)"
        ) from None
    if not layers:
        raise StoreError(f"bad layers {spec!r}: no layer given")
    return layers


def _resolve_layers(run_id: str, available: Sequence[int], n_layers: int, wanted) -> list[int]:
    if wanted is None:
        return list(available)
    resolved = []
    for layer in wanted:
        actual = layer + n_layers if layer < 0 else layer
        if actual not in available:
            raise StoreError(
                f"run {run_id!r} has no layer {layer}; it has layers "
                f"{', '.join(str(x) for x in available)}"
            )
        resolved.append(actual)
    return sorted(set(resolved))


def _to_float16(column: pa.Array, d_model: int) -> tuple[pa.Array, int]:
    values = column.flatten().to_numpy(zero_copy_only=False)
    with np.errstate(over="ignore"):  # counted below and recorded in the manifest
        half = values.astype(np.float16)
    overflow = int(np.count_nonzero(~np.isfinite(half)) - np.count_nonzero(~np.isfinite(values)))
    return pa.FixedSizeListArray.from_arrays(pa.array(half), d_model), overflow


def _copy_vectors(source: Path, target: Path, layers: list[int], d_model: int) -> tuple[int, int]:
    """Filter one part file to `layers`, cast to float16; returns (rows, overflow values)."""
    schema = vector_schema(d_model, "float16")
    rows_per_group = max(1024, DEFAULT_ROW_GROUP_BYTES // (d_model * 2))
    keep = pa.array(layers, pa.int16())
    rows = overflow = 0
    tmp = target.with_name(f".{target.name}.tmp")
    writer = None
    try:
        reader = pq.ParquetFile(source)
        for batch in reader.iter_batches(batch_size=rows_per_group):
            batch = batch.filter(pc.is_in(batch.column("layer"), value_set=keep))
            if batch.num_rows == 0:
                continue
            vectors, bad = _to_float16(batch.column("vector"), d_model)
            columns = [batch.column(name) for name in schema.names[:-1]] + [vectors]
            table = pa.Table.from_arrays(columns, schema=schema)
            if writer is None:
                writer = pq.ParquetWriter(
                    tmp, schema, compression="zstd", use_dictionary=["hook", "position"]
                )
            writer.write_table(table, row_group_size=rows_per_group)
            rows += table.num_rows
            overflow += bad
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        tmp.replace(target)
    return rows, overflow


def snapshot(
    store_path: str | Path,
    run_ids: Sequence[str],
    out: str | Path,
    layers: Sequence[int] | None = None,
) -> int:
    """Write the runs (only `layers`, or all) into a new store at `out`; returns its size in bytes.

    A run may be named by an unambiguous prefix of its id. Refuses when `out` already holds any
    of the runs, or is the source store itself.
    """
    source = open_store(store_path)
    out_root = Path(out).expanduser()
    if out_root.resolve() == source.root.resolve():
        raise StoreError(f"snapshot output {str(out_root)!r} is the source store")
    if not run_ids:
        raise StoreError("no runs given")
    plans = []
    for name in run_ids:
        run_id = source.resolve_run_id(name)  # raises for unknown, ambiguous or uncommitted runs
        manifest = source.manifest(run_id)
        chosen = _resolve_layers(run_id, manifest.layers, manifest.n_layers, layers)
        target = layout.run_dir(out_root, run_id)
        if target.exists():
            raise StoreError(f"run {run_id!r} already exists in {out_root}")
        plans.append((manifest, chosen))
    open_store(out_root, create=True)
    for manifest, chosen in plans:
        src = layout.run_dir(source.root, manifest.run_id)
        dst = layout.run_dir(out_root, manifest.run_id)
        layout.vectors_dir(dst).mkdir(parents=True)
        layout.tokens_dir(dst).mkdir()
        shutil.copyfile(layout.samples_path(src), layout.samples_path(dst))
        if layout.config_path(src).is_file():
            shutil.copyfile(layout.config_path(src), layout.config_path(dst))
        for part in sorted(layout.tokens_dir(src).glob(layout.PART_GLOB)):
            shutil.copyfile(part, layout.tokens_dir(dst) / part.name)
        rows = overflow = 0
        for part in sorted(layout.vectors_dir(src).glob(layout.PART_GLOB)):
            r, o = _copy_vectors(
                part, layout.vectors_dir(dst) / part.name, chosen, manifest.d_model
            )
            rows, overflow = rows + r, overflow + o
        info = {
            "source_store": str(source.root.resolve()),
            "source_layers": list(manifest.layers),
            "source_dtype": manifest.dtype,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        counts = dict(manifest.row_counts)
        counts["vector_rows"] = rows
        counts["float16_overflow_values"] = counts.get("float16_overflow_values", 0) + overflow
        new = replace(
            manifest,
            layers=tuple(chosen),
            dtype="float16",
            row_counts=counts,
            extra={**manifest.extra, "snapshot": info},
        )
        atomic_write_text(layout.manifest_path(dst), new.to_json())
        atomic_write_text(layout.marker_path(dst), json.dumps(info))
        fsync_dir(dst)
    return sum(p.stat().st_size for p in out_root.rglob("*") if p.is_file())
