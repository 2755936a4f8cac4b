"""Snapshots: copy chosen runs and layers of a store into a small, self-contained new store.

A hosted read-only app serves the snapshot (commit it to the repository or ship it with the app).
Each run keeps its samples, tokens and config; vectors keep only the chosen layers and are stored
as float16 (values beyond the float16 range become inf and are counted in the manifest). The
manifest is the source's, with `layers`, `dtype` and `row_counts` updated and the source recorded
in `extra["snapshot"]`; the commit marker is written last, as for any run, so an interrupted
snapshot leaves nothing visible. Vectors are streamed one row group at a time: memory stays flat.
The copied runs' vector sets (store.vectorsets) come along; their models' readouts
(store.readouts: what reading directions as words needs) only with `readouts=True`, since they
are tens to hundreds of MB (57 MB for SmolLM2, 336 MB for Gemma-3-270M).

Layers use the one layer grammar of `settings.run` (`all`, `5`, `0,4,8`, `10-20`, `-1`), resolved
per run against its model and checked against the layers the run has. A damaged run (see
`Store.damaged_runs`, or a run whose files do not open) is skipped and reported, never fatal to
the others. Summaries are computed again while the vectors are copied (the same subsample: it
depends on the samples and the seed only), so they match the snapshot's layers and float16
values. A snapshot is meant to be published, so it carries no absolute server path: the
source store is recorded by its folder name, and absolute paths in the model source, `extra`
(e.g. `dataset_path`) and config.json are cut to their last component.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from settings.run import describe_layers, parse_layer_spec, resolve_layers
from store import layout
from store.atomic import atomic_write_text, fsync_dir
from store.catalog import DamagedRun
from store.errors import StoreError, one_line
from store.files import as_damaged, vectors_to_numpy
from store.layout import is_absolute as _is_absolute
from store.layout import public_path
from store.manifest import RunManifest
from store.reader import open_store
from store.readouts import copy_readouts
from store.summarize import Summarizer
from store.vectorsets import copy_vector_sets
from store.writer import DEFAULT_ROW_GROUP_BYTES, vector_schema


@dataclass(frozen=True)
class SnapshotResult:
    """What a snapshot wrote: its size, the runs copied and the runs skipped (with reasons)."""

    size_bytes: int
    copied: tuple[str, ...]
    skipped: tuple[DamagedRun, ...]
    vector_sets: tuple[str, ...] = ()  # the copied runs' vector sets, copied along


class _SourceDamage(Exception):
    """A source file failed while being copied (its footer opened, its data did not)."""


def _public(value: Any) -> Any:
    """Every string in a JSON value that is an absolute path, cut to its last component."""
    if isinstance(value, str):
        return public_path(value)
    if isinstance(value, list):
        return [_public(item) for item in value]
    if isinstance(value, dict):
        return {key: _public(item) for key, item in value.items()}
    return value


def _chosen_layers(manifest: RunManifest, wanted: tuple[int, ...] | None) -> list[int]:
    if wanted is None:
        return list(manifest.layers)
    for layer in wanted:
        actual = layer + manifest.n_layers if layer < 0 else layer
        if actual not in manifest.layers:
            raise StoreError(
                f"run {manifest.run_id!r} has no layer {layer}; it has layers "
                f"{describe_layers(manifest.layers)}"
            )
    return list(resolve_layers(wanted, manifest.n_layers))


def _copy_vectors(source: Path, target: Path, layers: list[int], d_model: int,
                  summarizer: Summarizer) -> tuple[int, int]:  # fmt: skip
    """Filter one part file to `layers`, cast to float16, summarize; returns (rows, overflow
    values).

    A failure reading `source` raises _SourceDamage; a failure writing `target` is an OSError.
    """
    schema = vector_schema(d_model, "float16")
    rows_per_group = max(1024, DEFAULT_ROW_GROUP_BYTES // (d_model * 2))
    keep = pa.array(layers, pa.int16())
    rows = overflow = 0
    tmp = target.with_name(f".{target.name}.tmp")
    writer = None
    damaged = f"file vectors/{source.name} is damaged"
    try:
        try:
            batches = pq.ParquetFile(source).iter_batches(batch_size=rows_per_group)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise _SourceDamage(f"{damaged} ({one_line(exc, 160)})") from None
        while True:
            try:
                batch = next(batches, None)
                if batch is None:
                    break
                batch = batch.filter(pc.is_in(batch.column("layer"), value_set=keep))
                values = vectors_to_numpy(batch.column("vector"), d_model)
                columns = [batch.column(name).cast(schema.field(name).type)
                           for name in schema.names[:-1]]  # fmt: skip
            except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
                raise _SourceDamage(f"{damaged} ({one_line(exc, 160)})") from None
            if batch.num_rows == 0:
                continue
            with np.errstate(over="ignore"):  # counted below and recorded in the manifest
                half = values.astype(np.float16)
            overflow += int(np.count_nonzero(~np.isfinite(half))) - int(
                np.count_nonzero(~np.isfinite(values))
            )
            summarizer.add_rows(*(c.to_numpy(zero_copy_only=False) for c in columns[:4]), half)
            vectors = pa.FixedSizeListArray.from_arrays(pa.array(half.reshape(-1)), d_model)
            table = pa.Table.from_arrays([*columns, vectors], schema=schema)
            if writer is None:
                writer = pq.ParquetWriter(
                    tmp, schema, compression="zstd", use_dictionary=["hook", "position"]
                )
            writer.write_table(table, row_group_size=rows_per_group)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        tmp.replace(target)
    return rows, overflow


def _copy_config(src: Path, dst: Path) -> None:
    """config.json with absolute paths cut; an unreadable one is left out (only resume reads it)."""
    try:
        config = json.loads(layout.config_path(src).read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return
    atomic_write_text(
        layout.config_path(dst), json.dumps(_public(config), indent=2, sort_keys=True)
    )


def _copy_run(source_root: Path, out_root: Path, manifest: RunManifest, chosen: list[int],
              source_name: str, samples) -> None:  # fmt: skip
    src = layout.run_dir(source_root, manifest.run_id)
    dst = layout.run_dir(out_root, manifest.run_id)
    layout.vectors_dir(dst).mkdir(parents=True)
    layout.tokens_dir(dst).mkdir()
    shutil.copyfile(layout.samples_path(src), layout.samples_path(dst))
    _copy_config(src, dst)
    for part in layout.part_files(layout.tokens_dir(src)):
        shutil.copyfile(part, layout.tokens_dir(dst) / part.name)
    rows = overflow = 0
    summarizer = Summarizer(dst, manifest.d_model, "float16", samples, made_by="snapshot")
    try:
        for part in layout.part_files(layout.vectors_dir(src)):
            r, o = _copy_vectors(part, layout.vectors_dir(dst) / part.name, chosen,
                                 manifest.d_model, summarizer)  # fmt: skip
            rows, overflow = rows + r, overflow + o
        summarizer.finish()
    except StoreError as exc:  # the source's vectors do not fit its samples
        summarizer.discard()
        raise _SourceDamage(str(exc).removeprefix(f"run {manifest.run_id!r}: ")) from None
    info = {
        "source_store": source_name,
        "source_layers": list(manifest.layers),
        "source_dtype": manifest.dtype,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    counts = dict(manifest.row_counts)
    counts["vector_rows"] = rows
    counts["float16_overflow_values"] = counts.get("float16_overflow_values", 0) + overflow
    model = public_path(manifest.model)
    new = replace(
        manifest,
        model=model,
        model_source=model if _is_absolute(manifest.model_source) else manifest.model_source,
        layers=tuple(chosen),
        dtype="float16",
        row_counts=counts,
        extra={**_public(manifest.extra), "snapshot": info},
    )
    atomic_write_text(layout.manifest_path(dst), new.to_json())
    atomic_write_text(layout.marker_path(dst), json.dumps(info))
    fsync_dir(dst)


def snapshot(
    store_path: str | Path,
    run_ids: Sequence[str] | str,
    out: str | Path,
    layers: str | Sequence[int] | None = None,
    on_skip: Callable[[DamagedRun], None] | None = None,
    readouts: bool = False,
) -> SnapshotResult:
    """Write the runs (only `layers`, or all) into a new store at `out`.

    `run_ids` is `"all"` (every healthy run) or a list of run ids or unambiguous prefixes.
    `layers` is a layer spec (`0,-1`, `10-20`, `all`), a sequence of layer indices, or None
    (all). Damaged runs, named or part of `all`, are skipped: each is passed to `on_skip` as it
    is found and listed in the result. Refuses (StoreError) an unknown or ambiguous run, a layer
    a run lacks, an `out` that already holds one of the runs or is the source store, and a
    snapshot with nothing left to copy.
    """
    wanted = parse_layer_spec(layers) if isinstance(layers, str) else layers
    if wanted is not None:
        wanted = tuple(int(layer) for layer in wanted)
    skipped: list[DamagedRun] = []

    def skip(damaged: DamagedRun) -> None:
        skipped.append(damaged)
        if on_skip is not None:
            on_skip(damaged)

    with open_store(store_path) as source:
        out_root = Path(out).expanduser()
        if out_root.resolve() == source.root.resolve():
            raise StoreError(f"snapshot output {str(out_root)!r} is the source store")
        damaged = {d.folder.removeprefix("runs/"): d for d in source.damaged_runs()}
        names: list[str] = []
        if isinstance(run_ids, str):
            if run_ids != "all":
                raise StoreError(f"runs {run_ids!r:.80}: give 'all' or a list of run ids")
            names = [m.run_id for m in source.runs()]
            for item in damaged.values():
                skip(item)
        else:
            for name in run_ids:
                if name in damaged:
                    skip(damaged[name])
                    continue
                run_id = source.resolve_run_id(name)  # raises for unknown or ambiguous runs
                if run_id not in names:
                    names.append(run_id)
        if not names and not skipped:
            raise StoreError("no runs given")
        plans = []
        for run_id in names:
            manifest = source.manifest(run_id)
            try:
                source.check_run(run_id)  # the files open, the widths match
            except StoreError as exc:
                skip(as_damaged(run_id, exc))
                continue
            try:
                samples = source.samples(run_id)
            except StoreError as exc:
                skip(as_damaged(run_id, exc))
                continue
            chosen = _chosen_layers(manifest, wanted)
            if layout.run_dir(out_root, run_id).exists():
                raise StoreError(f"run {run_id!r} already exists in {out_root}")
            plans.append((manifest, chosen, samples))
        if not plans:
            raise StoreError(f"no healthy runs to copy ({len(skipped)} skipped)")
        existed = out_root.exists()
        open_store(out_root, create=True)
        source_name = source.name
        copied: list[str] = []
        for manifest, chosen, samples in plans:
            try:
                _copy_run(source.root, out_root, manifest, chosen, source_name, samples)
            except _SourceDamage as exc:
                shutil.rmtree(layout.run_dir(out_root, manifest.run_id), ignore_errors=True)
                skip(DamagedRun(f"runs/{manifest.run_id}", one_line(exc)))
                continue
            copied.append(manifest.run_id)
        if not copied:
            if not existed:
                shutil.rmtree(out_root, ignore_errors=True)
            raise StoreError(f"no healthy runs to copy ({len(skipped)} skipped)")
        sets = copy_vector_sets(source.root, out_root, set(copied), public_path)
        if readouts:
            weights = {source.manifest(run_id).weights_sha256 for run_id in copied}
            copy_readouts(source.root, out_root, weights, public_path)
    size = sum(p.stat().st_size for p in out_root.rglob("*") if p.is_file())
    return SnapshotResult(size, tuple(copied), tuple(skipped), tuple(sets))
