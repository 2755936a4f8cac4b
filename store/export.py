"""Exports other tools read: one run's vectors, or any labelled matrix, as CSV, .npy or Parquet.

    data = encode_vectors(X, labels, "csv")            # X [n, d]; labels: n strings, or None
    export = export_vectors(store, run_id, "resid_post", 12, "answer_mean", ("id", "label"), "csv")
    write_new_file(Path("out.csv"), export.data, force=False)

Formats (`EXPORT_FORMATS`), one row per sample (or per labelled vector), in sample order:

* `csv`: a header `label,d1,...,dD`, then the label and the D numbers of each row (float32,
  shortest form that reads back exactly). The label is one sample column, or several joined with
  `:` (`id,label` -> `prop-01a:A`). Nothing is quoted, unless a label holds a comma, a quote or
  a line break: then every text cell is (standard CSV either way).
* `npy`: the float32 matrix [n, d] alone (`numpy.load(path)`, no pickle); its rows are in the
  same order as the CSV's, i.e. `store.samples(run_id)` order.
* `parquet`: the CSV's columns (`label` string, `d1..dD` float32), zstd.

Nothing here touches the store's files but through `Store.vectors`, so a damaged run is the
run's one-line StoreError; a bad hook, layer, position, label column or format is a StoreError
naming it. `write_new_file` never replaces a file silently: it refuses an existing path unless
`force`, and writes through a temporary file and a rename.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from store.errors import StoreError, one_line

EXPORT_FORMATS = ("csv", "npy", "parquet")
LABEL_SEPARATOR = ":"
MIME_TYPES = {"csv": "text/csv", "npy": "application/octet-stream",
              "parquet": "application/vnd.apache.parquet"}  # fmt: skip


def check_format(fmt: object) -> str:
    if fmt not in EXPORT_FORMATS:
        raise StoreError(f"unknown export format {one_line(repr(fmt), 80)}; choose "
                         f"{', '.join(EXPORT_FORMATS)}")  # fmt: skip
    return fmt  # type: ignore[return-value]


def format_from_path(path: Path) -> str:
    """`out.csv` -> csv; a suffix that is no export format is a StoreError naming it."""
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in EXPORT_FORMATS:
        raise StoreError(
            f"cannot tell the format of {one_line(str(path), 120)!r} from its suffix: name it "
            f".csv, .npy or .parquet, or pass --format"
        )
    return suffix


def parse_label_columns(spec: object) -> tuple[str, ...]:
    """`label` -> ('label',); `id,label` -> ('id', 'label')."""
    if not isinstance(spec, str) or len(spec) > 400:
        raise StoreError(f"label columns {one_line(repr(spec), 80)} must be short text")
    columns = tuple(c.strip() for c in spec.split(",") if c.strip())
    if not columns:
        raise StoreError(
            "label columns must name at least one sample column, e.g. label or id,label"
        )
    return columns


def label_values(samples: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Each sample's label: the named columns as text, joined with ':' (missing values: '')."""
    usable = [c for c in samples.columns if c != "run_id" and _is_scalar_column(samples[c])]
    parts = []
    for column in columns:
        if column not in usable:
            kind = "holds lists" if column in samples.columns else "is not a sample column"
            raise StoreError(
                f"label column {one_line(repr(column), 80)} {kind}; choose from {', '.join(usable)}"
            )
        parts.append(["" if pd.isna(v) else str(v) for v in samples[column]])
    return [LABEL_SEPARATOR.join(values) for values in zip(*parts, strict=True)]


def _is_scalar_column(column: pd.Series) -> bool:
    return not any(isinstance(v, list | tuple | np.ndarray | dict) for v in column.head(50))


def encode_vectors(X: np.ndarray, labels: Sequence[str] | None, fmt: str) -> bytes:
    """X [n, d] (and n labels, or None for .npy) as the bytes of one export file."""
    check_format(fmt)
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise StoreError(f"vectors of shape {X.shape} cannot be exported; expected [n, d]")
    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, X, allow_pickle=False)
        return buffer.getvalue()
    labels = [""] * len(X) if labels is None else [str(v) for v in labels]
    if len(labels) != len(X):
        raise StoreError(f"{len(labels)} labels for {len(X)} vectors")
    columns = {"label": pa.array(labels, pa.string())}
    columns.update({f"d{j + 1}": pa.array(X[:, j]) for j in range(X.shape[1])})
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    if fmt == "csv":
        try:  # plain `label,d1,...` unless a label needs quotes (a comma, quote or line break)
            pa_csv.write_csv(
                table, sink, pa_csv.WriteOptions(quoting_style="none", quoting_header="none")
            )
        except pa.ArrowInvalid:
            sink = pa.BufferOutputStream()
            pa_csv.write_csv(
                table, sink, pa_csv.WriteOptions(quoting_style="needed", quoting_header="none")
            )
    else:
        pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class Export:
    data: bytes
    rows: int
    width: int
    file_name: str  # a suggested name: <run>-<hook>-L<layer>-<position>.<format>


def export_vectors(
    store,
    run_id: str,
    hook: str,
    layer: int,
    position: str,
    label_columns: Sequence[str] = ("label",),
    fmt: str = "csv",
) -> Export:
    """One run's pooled vectors of a hook, layer and position, as one export file's bytes."""
    check_format(fmt)
    X, samples = store.vectors(run_id, hook, layer, position)
    labels = label_values(samples, label_columns) if fmt != "npy" else None
    name = f"{run_id}-{hook}-L{layer}-{position}.{fmt}"
    return Export(encode_vectors(X, labels, fmt), X.shape[0], X.shape[1], name)


def check_new_path(path: Path, force: bool = False) -> None:
    """StoreError unless `path` can be written as a new file (or replaced, with `force`)."""
    path = Path(path)
    shown = one_line(str(path), 160)
    if path.is_dir():
        raise StoreError(f"{shown!r} is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise StoreError(f"{shown!r} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise StoreError(f"folder {one_line(str(path.parent), 160)!r} does not exist")


def write_new_file(path: Path, data: bytes, force: bool = False) -> None:
    """Write `data` to `path`; an existing path is refused unless `force` (then replaced whole,
    never written through: a link is replaced, not its target)."""
    path = Path(path)
    check_new_path(path, force)
    shown = one_line(str(path), 160)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {shown!r}: {exc.strerror or exc}") from None
