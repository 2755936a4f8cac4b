"""Download buttons for vectors and directions, in the formats of `python -m store export`.

    downloads.matrix_buttons(st, X, labels, "directions-run-resid_post-L12", key="dir_dl")
    downloads.run_vector_buttons(st, view, run_id, hook, layer, position, key="prop_dl")
    downloads.direction_downloads(view, run_id, hook, position, layer, baseline)  # Directions
    downloads.pair_downloads(view, run_id, hook, position, layer)  # Pairs

Each offers CSV (`label,d1,...,dD`), `.npy` (the float32 matrix) and Parquet, one row per vector.
The bytes are made only when a button is pressed (Streamlit calls the function then), and the
pages' buttons are built only when their "Download" expander is opened (`OPEN_KEY` in session
state), so a view that does not download pays nothing for them. `run_vector_buttons` reads through
`store.export.export_vectors`, exactly what the CLI writes; if the run cannot be read by then
(damaged meanwhile), the file holds the one-line error instead of a traceback.

Downloads write nothing on the server, so they are offered in read-only mode too.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import streamlit as st

from store import StoreError
from store.export import EXPORT_FORMATS, MIME_TYPES, encode_vectors, export_vectors
from ui.compute import layer_directions
from ui.context import StoreView, public_text
from ui.pairs_compute import pair_table
from ui.propositions_compute import side_rows

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
    # One horizontal container, not a column per button: the same row, in one layout block
    # instead of four (every block is a message to each visitor: bench/bench_load.py).
    row = container.container(horizontal=True, gap="small")
    for fmt in EXPORT_FORMATS:
        row.download_button(
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


# -- the blocks the analysis pages add at their end ------------------------------------------
OPEN_KEY = "downloads_open"  # the Download expander's state: open, its buttons are built


def _section():
    """The pages' closed "Download" expander, or None while it is closed: its buttons (and the
    directions they would hold) are built only once a visitor opens it. A dozen elements on
    every view otherwise (each a message to each visitor: bench/bench_load.py), for a section
    few visitors use."""
    box = st.expander("Download", key=OPEN_KEY, on_change="rerun", icon=":material/download:")
    return box if box.open else None


def direction_downloads(
    view: StoreView, run_id: str, hook: str, position: str, layer: int, baseline: str
) -> None:
    """Directions page: its label directions at `layer` (one row per label, as the page
    computes them: against the baseline label, or one-vs-rest) and the samples' vectors there.
    In the Download expander (`_section`)."""
    box = _section()
    if box is None:
        return
    targets, D = layer_directions(view, run_id, hook, position, layer, baseline)  # the page's
    left, right = box.columns(2)
    left.caption(f"The label directions at layer {layer} (vs {baseline}), one row per label")
    matrix_buttons(left, D, targets, f"directions-{run_id}-{hook}-L{layer}-{position}-vs-"
                   f"{baseline}", key="dir_dl", what="Label directions")  # fmt: skip
    right.caption(f"Every sample's vector at layer {layer}, labelled id and label")
    run_vector_buttons(right, view, run_id, hook, layer, position, key="dir_samples_dl")


def _pair_differences(store, run_id, hook, layer, position, fmt) -> bytes:
    try:
        X, samples, _ = store.layer_vectors(run_id, hook, position, layers=[layer])
        pairs = pair_table(samples)
    except StoreError as exc:
        return f"error: {public_text(exc)}\n".encode()
    ia, ib = side_rows(samples, pairs)
    return encode_vectors(X[0, ib] - X[0, ia], pairs["pair_id"].astype(str).tolist(), fmt)


def pair_downloads(view: StoreView, run_id: str, hook: str, position: str, layer: int) -> None:
    """Pairs page: each pair's difference b - a at `layer` (one row per pair, labelled by its
    pair id) and the samples' vectors there (labelled pair id and side). In the Download
    expander (`_section`)."""
    box = _section()
    if box is None:
        return
    left, right = box.columns(2)
    left.caption(f"Each pair's difference b - a at layer {layer}, one row per pair")
    make = partial(_pair_differences, view.store, run_id, hook, int(layer), position)
    _buttons(left, make, f"pair-differences-{run_id}-{hook}-L{layer}-{position}", "pairs_dl",
             f"b - a at {hook} layer {layer} {position}, one row per pair")  # fmt: skip
    right.caption(f"Every sample's vector at layer {layer}, labelled pair id and side")
    run_vector_buttons(right, view, run_id, hook, layer, position, key="pairs_samples_dl",
                       label_columns=("pair_id", "side"))  # fmt: skip
