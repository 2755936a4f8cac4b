"""Download buttons for vectors and directions, in the formats of `python -m store export`.

    downloads.matrix_buttons(st, X, labels, "directions-run-resid_post-L12", key="dir_dl")
    downloads.run_vector_buttons(st, view, run_id, hook, layer, position, key="prop_dl")

Each offers CSV (`label,d1,...,dD`), `.npy` (the float32 matrix) and Parquet, one row per vector.
The bytes are made only when a button is pressed (Streamlit calls the function then), so a page
that shows the buttons pays nothing for them. `run_vector_buttons` reads through
`store.export.export_vectors`, exactly what the CLI writes; if the run cannot be read by then
(damaged meanwhile), the file holds the one-line error instead of a traceback.

Downloads write nothing on the server, so they are offered in read-only mode too.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from store import StoreError
from store.export import EXPORT_FORMATS, MIME_TYPES, encode_vectors, export_vectors
from ui.context import StoreView, public_text

LABELS = {"csv": "CSV", "npy": ".npy", "parquet": "Parquet"}
HELP = {
    "csv": "label,d1,...,dD: one row per vector",
    "npy": "the float32 matrix [rows, d] (numpy.load; rows in the CSV's order)",
    "parquet": "the CSV's columns: label (text), d1..dD (float32)",
}


def _safe_stem(stem: str) -> str:
    kept = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem)
    return kept.strip("-.")[:150] or "vectors"


def _buttons(container, make, stem: str, key: str, what: str) -> None:
    columns = container.columns(len(EXPORT_FORMATS))
    for column, fmt in zip(columns, EXPORT_FORMATS, strict=True):
        column.download_button(
            f"{LABELS[fmt]}", data=partial(make, fmt), file_name=f"{_safe_stem(stem)}.{fmt}",
            mime=MIME_TYPES[fmt], key=f"{key}_{fmt}", on_click="ignore",
            icon=":material/download:", help=f"{what}: {HELP[fmt]}",
        )  # fmt: skip


def matrix_buttons(
    container, X: np.ndarray, labels: Sequence[str], stem: str, key: str, what: str = "Vectors"
) -> None:
    """Buttons for a matrix already in memory: X [n, d], one label per row."""
    matrix, names = np.asarray(X, dtype=np.float32), [str(v) for v in labels]
    _buttons(container, lambda fmt: encode_vectors(matrix, names, fmt), stem, key, what)


def _run_vectors(store, run_id, hook, layer, position, label_columns, fmt) -> bytes:
    try:
        return export_vectors(store, run_id, hook, layer, position, label_columns, fmt).data
    except StoreError as exc:
        return f"error: {public_text(exc)}\n".encode()


def run_vector_buttons(
    container,
    view: StoreView,
    run_id: str,
    hook: str,
    layer: int,
    position: str,
    key: str,
    label_columns: Sequence[str] = ("id", "label"),
) -> None:
    """Buttons for one run's stored vectors of a hook, layer and position (one row per sample)."""
    make = partial(_run_vectors, view.store, run_id, hook, int(layer), position,
                   tuple(label_columns))  # fmt: skip
    stem = f"{run_id}-{hook}-L{layer}-{position}"
    _buttons(container, make, stem, key, f"{hook} layer {layer} {position}, one row per sample")
