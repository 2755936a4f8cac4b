"""Run summaries, read back: per-label sums and a fixed subsample, so pages never scan every vector.

Written at commit by `store.summarize` (while the run streams), or later for an older run by
`python -m store summarize`. In `runs/<run_id>/summaries/`:

    labels.parquet     one row per (hook, position, layer, label): count, sum (float64[d]),
                       sum_sq_norm (sum of squared L2 norms), sum_norm (sum of L2 norms);
                       one row group per (hook, position)
    subsample.parquet  the vector rows of a stratified random subsample of the samples (at most
                       SUBSAMPLE_SIZE, seed recorded), sorted by (hook, position, layer,
                       sample_idx), one row group per site: one site is read without the rest.
                       Each vector is raw little-endian bytes (float16 or float32, the run's
                       dtype), uncompressed: several times faster to read than a list column
    summary.json       written last: format, seed, the subsample's sample indices, labels,
                       sites, the number of complete minimal pairs (`n_pairs`, optional: older
                       summaries lack it), and the sizes of its own files and of the files it
                       was made from

A site is one (hook, position, layer) with one row per sample: per-token positions (`all`) and
anything without dense vectors have none. Label means, directions and the typical activation
norm (the mean L2 norm of a site's samples) come from labels.parquet; per-sample statistics
(stability, AUC, PCA, CKA, pairs) from the subsample: the pages from at most
PAGE_SUBSAMPLE_SIZE of it, chosen from it the same stratified way with the same seed
(`Store.subsample(..., size=PAGE_SUBSAMPLE_SIZE)`).

Summaries are read as strictly as every other file, but a run without usable summaries is not a
damaged run (its vectors are fine): `SummaryUnavailable`, a StoreError, says why (missing,
damaged, or out of date with the files they were made from) and carries the command that
(re)builds them. Nothing here ever falls back to scanning the vectors.

Caveats: the checks are of structure (types, widths, sites, counts adding up to the run's
samples, file sizes), not of every number: a planted file of the right shape with wrong sums is
read as it is. A run written with more than MAX_SUMMARY_LABELS labels keeps one all-samples row
per site (`per_label` False).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from settings.run import TOKEN_POSITIONS
from store import layout
from store.atomic import read_regular
from store.errors import StoreError, one_line
from store.manifest import RunManifest

FORMAT = 1
SUBSAMPLE_SIZE = 4096  # samples kept for per-sample statistics
SUBSAMPLE_SEED = 0
# Samples an analysis page computes its per-sample statistics from (stability, AUC, PCA,
# projections, CKA, pairs): `choose_subsample` of the stored subsample, with its seed, so a run of
# at most this many samples uses all of them, two runs of one dataset use the same ones, and a
# page's cost stops growing with the run at this size instead of at SUBSAMPLE_SIZE (measured at
# 100,000 samples, the 4,096-sample subsample made the pages 2-6x slower than at 1,000).
PAGE_SUBSAMPLE_SIZE = 1024
MAX_SUMMARY_LABELS = 64
SUMMARY_MAX_BYTES = 4 * 1024 * 1024  # summary.json: a few KiB plus the subsample's indices

_LABEL_COLUMNS = ("hook", "position", "layer", "label", "count", "sum", "sum_sq_norm", "sum_norm")


def label_schema(d_model: int) -> pa.Schema:
    return pa.schema(
        [
            ("hook", pa.string()), ("position", pa.string()), ("layer", pa.int16()),
            ("label", pa.string()), ("count", pa.int64()),
            ("sum", pa.list_(pa.float64(), d_model)), ("sum_sq_norm", pa.float64()),
            ("sum_norm", pa.float64()),
        ]
    )  # fmt: skip


_VALUE_TYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}


def subsample_schema(d_model: int, dtype: str) -> pa.Schema:
    width = d_model * _VALUE_TYPES[dtype].itemsize
    return pa.schema(
        [
            ("hook", pa.string()), ("position", pa.string()), ("layer", pa.int16()),
            ("sample_idx", pa.int32()), ("vector", pa.binary(width)),
        ]
    )  # fmt: skip


def rows_to_binary(rows: np.ndarray) -> pa.FixedSizeBinaryArray:
    """[m, d] float16/float32 -> m fixed-size binary values of d little-endian numbers."""
    rows = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<"))
    width = rows.shape[1] * rows.itemsize
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(rows), [None, pa.py_buffer(rows.tobytes())]
    )


def binary_to_rows(column: pa.ChunkedArray | pa.Array, d_model: int, dtype: str) -> np.ndarray:
    """The inverse of `rows_to_binary`: [m, d] of `dtype`; ValueError on nulls or a bad width."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    value = _VALUE_TYPES[dtype]
    if not pa.types.is_fixed_size_binary(array.type):
        raise ValueError(f"vectors are {array.type}, not raw bytes")
    if array.type.byte_width != d_model * value.itemsize:
        raise ValueError(f"vectors of {array.type.byte_width} bytes, not {d_model} x {dtype}")
    if array.null_count:
        raise ValueError(f"{array.null_count} vectors are missing (null)")
    data = array.buffers()[1]
    start = array.offset * array.type.byte_width
    return np.frombuffer(data, value, count=len(array) * d_model, offset=start).reshape(
        len(array), d_model
    )


def source_sizes(run_path: Path) -> dict[str, int]:
    """Sizes of the files summaries are made from (samples and vector parts), by relative path."""
    found = {}
    for path in [layout.samples_path(run_path), *layout.part_files(layout.vectors_dir(run_path))]:
        try:
            found[path.relative_to(run_path).as_posix()] = os.stat(path).st_size
        except OSError:
            continue
    return found


def summary_sites(manifest: RunManifest) -> list[tuple[str, str, int]]:
    """The sites a run's summaries cover: every hook, per-sample position and layer."""
    positions = [p for p in manifest.positions if p not in TOKEN_POSITIONS]
    return [(h, p, layer) for h in manifest.hooks for p in positions for layer in manifest.layers]


def summarize_command(root: Path | str, run_ids: list[str], force: bool = False) -> str:
    parts = [
        "python",
        "-m",
        "store",
        "summarize",
        "--store",
        str(root),
        "--runs",
        ",".join(run_ids),
    ]
    return shlex.join(parts + (["--force"] if force else []))


def _ranks(keys: list[str], seed: int) -> np.ndarray:
    """A keyed hash of each key: a random order that depends only on the keys and the seed."""
    salt = int(seed).to_bytes(8, "little")
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(k.encode("utf-8", "surrogatepass"), digest_size=8, key=salt)
                .digest(), "little",
            )
            for k in keys
        ],
        dtype=np.uint64,
    )  # fmt: skip


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name].astype(object).where(frame[name].notna(), None)
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _shares(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Samples per stratum: all of a small stratum, an equal cap for the large ones. [s]"""
    if sizes.sum() <= budget:
        return sizes.copy()
    cap, left, order = 0, budget, np.sort(sizes)
    for i, size in enumerate(order):
        share = left // (len(order) - i)
        if size > share:
            cap = share
            break
        left -= size
    return np.minimum(sizes, cap)


def choose_subsample(samples: pd.DataFrame, size: int = SUBSAMPLE_SIZE,
                     seed: int = SUBSAMPLE_SEED) -> np.ndarray:  # fmt: skip
    """A stratified random subsample of at most `size` samples: sorted sample_idx [m].

    Samples with a `pair_id` are taken pair by pair (both sides or neither), stratified by the
    pair's category; the others one by one, stratified by label. Each stratum keeps all its
    samples or an equal share of `size`; within it, units are ranked by a keyed hash of their id
    (or pair id) with `seed`. So the choice depends on the dataset and the seed only.
    """
    idx = samples["sample_idx"].to_numpy(dtype=np.int64)
    if len(idx) == 0:
        return np.zeros(0, np.int64)
    ids = _column(samples, "id")
    pair = _column(samples, "pair_id")
    label, category = _column(samples, "label"), _column(samples, "category")
    is_pair = pair.notna().to_numpy()
    unit = np.where(is_pair, "p:" + pair.astype(str), "s:" + ids.fillna("").astype(str))
    no_id = ~is_pair & ids.isna().to_numpy()
    unit[no_id] = ["i:" + str(i) for i in idx[no_id]]
    stratum = np.where(is_pair, "c:" + category.fillna("").astype(str),
                       "l:" + label.fillna("\0").astype(str))  # fmt: skip
    frame = pd.DataFrame({"idx": idx, "unit": unit, "stratum": stratum}).sort_values("idx")
    # A pair's stratum is that of its first sample, so a pair is never split across strata.
    frame["stratum"] = frame.groupby("unit", sort=False)["stratum"].transform("first")
    units = frame.groupby("unit", sort=False).agg(stratum=("stratum", "first"),
                                                  n=("idx", "size")).reset_index()  # fmt: skip
    units["rank"] = _ranks(units["unit"].tolist(), seed)
    strata = units.groupby("stratum", sort=True)["n"].sum()
    shares = dict(zip(strata.index, _shares(strata.to_numpy(), size), strict=True))
    keep = []
    for name, group in units.sort_values(["stratum", "rank"]).groupby("stratum", sort=True):
        taken = group["n"].cumsum() <= shares[name]
        keep.extend(group["unit"][taken].tolist())
    return np.sort(frame["idx"][frame["unit"].isin(keep)].to_numpy())


def count_complete_pairs(samples: pd.DataFrame) -> int:
    """Complete minimal pairs among `samples`: pair ids that have a side "a" and a side "b"
    (what the Pairs page counts as a pair; repeats of a side count once)."""
    if "pair_id" not in samples.columns or "side" not in samples.columns:
        return 0
    sided = samples[samples["pair_id"].notna() & samples["side"].isin(["a", "b"])]
    return int((sided.groupby("pair_id")["side"].nunique() == 2).sum())


class SummaryUnavailable(StoreError):
    """A run's summaries are missing, damaged or out of date. `command` rebuilds them."""

    def __init__(self, run_id: str, kind: str, reason: str, command: str) -> None:
        super().__init__(f"run {run_id!r}: {reason}")
        self.run_id, self.kind, self.reason, self.command = run_id, kind, reason, command


@dataclass(frozen=True)
class RunSummary:
    """What summary.json says: the subsample (sorted sample indices), labels, sites, seed."""

    run_id: str
    made_by: str
    created_at: str
    n_samples: int
    labels: tuple[str | None, ...]
    per_label: bool
    sites: frozenset[tuple[str, str, int]]
    seed: int
    subsample_size: int
    subsample: tuple[int, ...] = field(repr=False)

    dtype: str = "float16"
    has_pairs: bool = False  # some samples have a pair_id
    # Complete pairs in the run (`count_complete_pairs`), so a page need not read every sample
    # to say how many there are; None in summaries written before it was recorded.
    n_pairs: int | None = None

    @property
    def subsample_is_everything(self) -> bool:
        return len(self.subsample) == self.n_samples


@dataclass(frozen=True)
class LabelSums:
    """Per-label sums of one run at one (hook, position), layer by layer.

    layers [L]; labels [k] (None: samples without a label, or every sample when the run has too
    many labels); counts [L, k] int64; sums [L, k, d], sum_sq_norms and sum_norms [L, k] float64.
    """

    run_id: str
    hook: str
    position: str
    layers: tuple[int, ...]
    labels: tuple[str | None, ...]
    counts: np.ndarray
    sums: np.ndarray
    sum_sq_norms: np.ndarray
    sum_norms: np.ndarray

    @property
    def means(self) -> np.ndarray:
        """[L, k, d] mean vector of each label (nan for a label with no samples)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts[:, :, None]

    @property
    def typical_norms(self) -> np.ndarray:
        """[L] mean L2 norm of the samples at each layer (the typical activation norm)."""
        return self.sum_norms.sum(axis=1) / self.counts.sum(axis=1)


def _check(condition: bool, reason: str) -> None:
    if not condition:
        raise ValueError(reason)


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _label_list(labels: object) -> bool:
    if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_SUMMARY_LABELS:
        return False
    texts = all(x is None or (isinstance(x, str) and len(x) <= 2000) for x in labels)
    return texts and len(set(labels)) == len(labels)


def _index_list(values: object, size: int, n: int) -> bool:
    """A sorted list of distinct sample indices in 0..n-1, at most `size` long."""
    if not isinstance(values, list) or len(values) > size:
        return False
    ordered = all(a < b for a, b in zip(values, values[1:], strict=False))
    return ordered and all(_is_int(i, 0, n - 1) for i in values)


def _parse(data: object, manifest: RunManifest) -> RunSummary:
    """summary.json's content checked against the manifest; ValueError naming what is wrong."""
    _check(isinstance(data, dict), "summary.json is not a JSON object")
    _check(data.get("format") == FORMAT, f"summary.json has format {data.get('format')!r:.40}")
    _check(data.get("run_id") == manifest.run_id, "summary.json names another run")
    n = data.get("n_samples")
    _check(n == manifest.n_samples, f"summary.json counts {n!r:.40} samples")
    _check(data.get("d_model") == manifest.d_model, "summary.json has another width")
    _check(_label_list(data.get("labels")), "summary.json has a malformed label list")
    _check(isinstance(data.get("per_label"), bool), "summary.json has no per_label flag")
    _check(isinstance(data.get("sites"), list), "summary.json has no site list")
    wanted, found = set(summary_sites(manifest)), set()
    for site in data["sites"]:
        _check(isinstance(site, list) and len(site) == 3, "summary.json has a malformed site")
        key = (site[0], site[1], site[2])
        _check(key in wanted, f"summary.json names a site the run lacks: {key!r:.80}")
        found.add(key)
    _check(found == wanted, f"summaries lack {len(wanted - found)} of the run's sites")
    for name in ("seed", "subsample_size"):
        _check(_is_int(data.get(name), 0, 2**63 - 1), f"summary.json has a malformed {name}")
    sub = data.get("subsample")
    _check(_index_list(sub, data["subsample_size"], n), "summary.json has a malformed subsample")
    for name in ("made_by", "created_at"):
        _check(isinstance(data.get(name), str), f"summary.json has a malformed {name}")
    _check(data.get("dtype") in _VALUE_TYPES, "summary.json has a malformed dtype")
    _check(isinstance(data.get("has_pairs"), bool), "summary.json has no has_pairs flag")
    n_pairs = data.get("n_pairs")  # optional: absent from summaries made before it
    _check(n_pairs is None or (_is_int(n_pairs, 0, n // 2) and (n_pairs > 0) <= data["has_pairs"]),
           "summary.json has a malformed n_pairs")  # fmt: skip
    return RunSummary(
        manifest.run_id, data["made_by"][:40], data["created_at"][:40], n, tuple(data["labels"]),
        data["per_label"], frozenset(found), data["seed"], data["subsample_size"], tuple(sub),
        data["dtype"], data["has_pairs"], n_pairs,
    )  # fmt: skip


class SummaryFiles:
    """The summaries of one store's runs: summary.json parsed once per file version."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[tuple, RunSummary | SummaryUnavailable]] = {}

    def _unavailable(self, run_id: str, kind: str, reason: str) -> SummaryUnavailable:
        return SummaryUnavailable(
            run_id, kind, reason, summarize_command(self.root, [run_id], force=kind != "missing")
        )

    def _damaged(self, run_id: str, reason: str) -> SummaryUnavailable:
        return self._unavailable(run_id, "damaged", f"its summaries are damaged ({reason})")

    def summary(self, manifest: RunManifest) -> RunSummary:
        """The run's summary, or SummaryUnavailable (missing, damaged, out of date)."""
        run_id = manifest.run_id
        run = layout.run_dir(self.root, run_id)
        folder = layout.summaries_dir(run)
        try:
            info = os.lstat(layout.summary_path(run))
            folder_info = os.lstat(folder)
        except FileNotFoundError:
            raise self._unavailable(
                run_id, "missing", "has no summaries (it was committed before runs had them)"
            ) from None
        except OSError as exc:
            raise self._damaged(run_id, f"summaries/summary.json: {exc.strerror}") from None
        files = {}
        for name in ("labels.parquet", "subsample.parquet"):
            try:
                entry = os.lstat(folder / name)
                files[name] = (entry.st_mode, entry.st_size, entry.st_mtime_ns, entry.st_ino)
            except OSError:
                files[name] = None
        sources = source_sizes(run)
        signature = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino,
                     stat.S_ISLNK(folder_info.st_mode), tuple(sorted(files.items())),
                     tuple(sorted(sources.items())), manifest.n_samples, manifest.d_model,
                     manifest.layers, manifest.hooks, manifest.positions)  # fmt: skip
        with self._lock:
            cached = self._parsed.get(run_id)
        if cached is None or cached[0] != signature:
            cached = (signature, self._load(manifest, folder, folder_info, files, sources))
            with self._lock:
                self._parsed[run_id] = cached
        if isinstance(cached[1], SummaryUnavailable):
            raise cached[1]
        return cached[1]

    def _load(self, manifest, folder, folder_info, files, sources):
        run_id = manifest.run_id
        if stat.S_ISLNK(folder_info.st_mode) or not stat.S_ISDIR(folder_info.st_mode):
            return self._damaged(run_id, "summaries is not a folder")
        try:
            data = json.loads(read_regular(layout.summary_path(folder.parent), SUMMARY_MAX_BYTES))
        except (OSError, ValueError, RecursionError) as exc:
            if isinstance(exc, OSError):
                reason = f"summary.json cannot be read ({exc.strerror or type(exc).__name__})"
            elif "larger than" in str(exc):
                reason = f"summary.json is over {SUMMARY_MAX_BYTES // 2**20} MiB"
            else:
                reason = "summary.json is not JSON"
            return self._damaged(run_id, reason)
        try:
            summary = _parse(data, manifest)
        except (ValueError, TypeError) as exc:
            return self._damaged(run_id, one_line(exc, 200))
        recorded_files = data.get("files") if isinstance(data.get("files"), dict) else {}
        for name, entry in files.items():
            recorded = recorded_files.get(name)
            if entry is None:
                return self._damaged(run_id, f"summaries/{name} is missing")
            if not stat.S_ISREG(entry[0]):
                return self._damaged(run_id, f"summaries/{name} is not a file")
            if recorded != entry[1]:
                return self._damaged(run_id, f"summaries/{name} is not the file it wrote")
            problem = _footer_problem(folder / name, name, manifest.d_model, summary.dtype)
            if problem:
                return self._damaged(run_id, f"summaries/{name}: {problem}")
        recorded = data.get("source")
        if recorded != sources:
            changed = sorted(set(sources) ^ set(recorded or {}))
            changed += sorted(
                k for k in sources if k in (recorded or {}) and recorded[k] != sources[k]
            )
            what = changed[0] if changed else "the run's files"
            return self._unavailable(
                run_id, "stale", f"its summaries are out of date ({what} changed after them)"
            )
        return summary

    def status(self, manifest: RunManifest) -> SummaryUnavailable | None:
        try:
            self.summary(manifest)
        except SummaryUnavailable as exc:
            return exc
        return None

    # -- the two files ---------------------------------------------------------------------
    def _table(self, manifest: RunManifest, name: str, columns: list[str], filters) -> pa.Table:
        path = layout.summaries_dir(layout.run_dir(self.root, manifest.run_id)) / name
        try:
            return pq.read_table(path, columns=columns, filters=filters)
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            text = str(exc)
            if "magic bytes" in text or "smaller than the minimum" in text:
                text = "not Parquet (or cut short)"
            raise self._damaged(
                manifest.run_id, f"summaries/{name}: {one_line(text.split(chr(10))[0], 160)}"
            ) from None

    def _sites(self, manifest, hook, position, layers) -> tuple[RunSummary, list[int]]:
        summary = self.summary(manifest)
        layers = sorted({int(x) for x in (manifest.layers if layers is None else layers)})
        for layer in layers:
            if (hook, position, layer) not in summary.sites:
                raise self._unavailable(
                    manifest.run_id, "missing",
                    f"its summaries have no {hook}/{position} layer {layer}",
                )  # fmt: skip
        return summary, layers

    def label_sums(self, manifest: RunManifest, hook: str, position: str,
                   layers=None) -> LabelSums:  # fmt: skip
        summary, layers = self._sites(manifest, hook, position, layers)
        d, run_id = manifest.d_model, manifest.run_id
        table = self._table(manifest, "labels.parquet", list(_LABEL_COLUMNS),
                            [("hook", "=", hook), ("position", "=", position)])  # fmt: skip
        table = table.filter(pc.is_in(table.column("layer"), pa.array(layers, pa.int16())))
        kind = table.schema.field("sum").type
        k, L = len(summary.labels), len(layers)
        try:
            _check(
                pa.types.is_fixed_size_list(kind)
                and kind.list_size == d
                and pa.types.is_float64(kind.value_type),
                f"sums are {kind}, not float64[{d}]",
            )
            _check(table.num_rows == L * k, f"{table.num_rows} rows for {L} layers x {k} labels")
            layer_col = table.column("layer").to_numpy()
            label_col = table.column("label").to_pylist()
            row = {
                (int(a), b): i for i, (a, b) in enumerate(zip(layer_col, label_col, strict=True))
            }
            _check(len(row) == L * k, "a (layer, label) row twice")
            order = np.array([row.get((layer, label), -1) for layer in layers
                              for label in summary.labels])  # fmt: skip
            _check(bool((order >= 0).all()), "rows for labels the summary does not list")
            counts = table.column("count").to_numpy()[order].reshape(L, k)
            _check(bool((counts >= 0).all()), "a negative count")
            wrong = counts.sum(axis=1)[counts.sum(axis=1) != summary.n_samples]
            _check(not len(wrong), f"{int(wrong[0]) if len(wrong) else 0} rows counted for "
                   f"{summary.n_samples} samples")  # fmt: skip
            sums = vectors_to_numpy_f64(table.column("sum"), d)[order].reshape(L, k, d)
            sq = table.column("sum_sq_norm").to_numpy()[order].reshape(L, k)
            norms = table.column("sum_norm").to_numpy()[order].reshape(L, k)
        except (ValueError, pa.ArrowException, TypeError) as exc:
            raise self._damaged(run_id, f"summaries/labels.parquet: {one_line(exc, 160)}") from None
        return LabelSums(run_id, hook, position, tuple(layers), summary.labels, counts, sums,
                         sq, norms)  # fmt: skip

    def subsample(
        self, manifest: RunManifest, hook: str, position: str, layers=None, rows=None,
        dtype=np.float32,
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:  # fmt: skip
        """(sample_idx [m], X [L, m, d] of `dtype`, layers) of the subsample at one site; with
        `rows`, only those sample indices (a sorted subset of the subsample). Reads only the
        row groups of those layers (one per site, in the order of the summary's sites), one at
        a time: memory is X and one layer's rows, not every layer's file rows beside X."""
        summary, layers = self._sites(manifest, hook, position, layers)
        order = sorted(summary.sites)
        groups = [order.index((hook, position, layer)) for layer in layers]
        idx = np.asarray(summary.subsample, np.int64)
        keep = None if rows is None else np.searchsorted(idx, rows).clip(0, max(len(idx) - 1, 0))
        kept = idx if keep is None else idx[keep]
        path = layout.subsample_path(layout.run_dir(self.root, manifest.run_id))
        d, m = manifest.d_model, len(idx)
        X = np.empty((len(layers), len(kept), d), dtype)
        try:
            # Read, not memory-mapped: one row group at a time, its buffer freed before the
            # next, is as fast (measured at 4,096 samples x 30 layers x 576: 0.24 s against
            # 0.27 s, median of 5), and the mapped file's touched pages stayed in the process's
            # RSS beside X until it closed (+277 MB at peak against +151 MB).
            file = pq.ParquetFile(path)
            _check(file.metadata.num_row_groups == len(order),
                   f"{file.metadata.num_row_groups} row groups for {len(order)} sites")  # fmt: skip
            for li, (layer, group) in enumerate(zip(layers, groups, strict=True)):
                table = file.read_row_group(
                    group, columns=["hook", "position", "layer", "sample_idx", "vector"]
                )
                _check(table.num_rows == m, f"{table.num_rows} rows for {m} samples of a layer")
                same = [pc.all(pc.equal(table.column(name), value)).as_py() is not False
                        for name, value in (("hook", hook), ("position", position))]  # fmt: skip
                same.append(bool((table.column("layer").to_numpy() == layer).all()))
                _check(all(same), "a row group holds another site than its place says")
                found = table.column("sample_idx").to_numpy()
                _check(bool((found == idx).all()), "rows of samples outside the subsample")
                vectors = table.column("vector")
                values = binary_to_rows(
                    vectors.chunk(0) if vectors.num_chunks == 1 else vectors, d, summary.dtype
                )
                X[li] = values if keep is None else values[keep]
                del table, vectors, values  # frees this layer's buffer before the next
        except (ValueError, pa.ArrowException, TypeError, OSError, IndexError) as exc:
            text = str(exc)
            if "magic bytes" in text or "smaller than the minimum" in text:
                text = "not Parquet (or cut short)"
            raise self._damaged(
                manifest.run_id, f"summaries/subsample.parquet: {one_line(text, 160)}"
            ) from None
        return kept, X, layers


def _footer_problem(path: Path, name: str, d_model: int, dtype: str) -> str | None:
    """What is wrong with a summary file's footer (its columns and widths), or None."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        text = str(exc)
        if "magic bytes" in text or "smaller than the minimum" in text:
            return "not Parquet (or cut short)"
        return one_line(text.split("\n")[0], 160)
    wanted = label_schema(d_model) if name == "labels.parquet" else subsample_schema(d_model, dtype)
    for column in wanted:
        if column.name not in schema.names:
            return f"no column {column.name!r}"
        found = schema.field(column.name).type
        if column.name in ("sum", "vector") and found != column.type:
            return f"column {column.name!r} is {found}, not {column.type}"
    return None


def vectors_to_numpy_f64(column: pa.ChunkedArray, d: int) -> np.ndarray:
    array = column.combine_chunks()
    if array.null_count:
        raise ValueError(f"{array.null_count} sums are missing (null)")
    return array.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, d)
