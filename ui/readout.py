"""What directions say in words, for any page: the tokens each promotes and suppresses.

    words = direction_words(view, weights_sha256, directions, top=8)   # cached, a DataFrame
    table = words_table(words, labels=["layer 0", "layer 1", ...])     # one row per direction

`directions` is [k, d] in the residual basis of the model whose weights hash is given (a run's
or a vector set's `weights_sha256`): label directions (Directions page), control vectors
(Vectors page) or SAE decoder directions (Features page) alike. The store streams that model's
unembedding (store.readouts) and `analysis.readout` does the math, so nothing here needs torch.
A store without the model's readout raises StoreError with what to run; pages show it.

Cached per (store folder, weights, directions, top): the unembedding of a large vocabulary takes
a second or more to stream, so a page pays it once per set of directions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from analysis import TopTokens, readout_directions
from ui.context import StoreView

MAX_DIRECTIONS = 512
MAX_TOP = 50


@st.cache_data(show_spinner="Reading the directions through the unembedding ...", max_entries=32)
def direction_words(
    view: StoreView, weights_sha256: str, directions: np.ndarray, top: int = 8
) -> pd.DataFrame:
    """Long table: direction (row of `directions`), end (promotes / suppresses), rank, token,
    score (the logit change per unit of the direction, up to the final norm's scale)."""
    directions = np.asarray(directions, dtype=np.float64)
    if directions.ndim != 2 or not 0 < len(directions) <= MAX_DIRECTIONS:
        raise ValueError(f"directions must be [k, d] with 1..{MAX_DIRECTIONS} rows")
    top = max(1, min(int(top), MAX_TOP))
    store = view.store
    readout = store.readout(weights_sha256)
    if directions.shape[1] != readout.d_model:
        raise ValueError(
            f"directions of width {directions.shape[1]}; the model's is {readout.d_model}"
        )
    reader = TopTokens(readout_directions(directions, readout.gain, readout.centred), top)
    for token_ids, W in store.iter_unembedding(weights_sha256):
        reader.update(token_ids, W)
    result = reader.result()
    rows = []
    for end, ids, scores in (
        ("promotes", result.promoted_ids, result.promoted_scores),
        ("suppresses", result.suppressed_ids, result.suppressed_scores),
    ):
        texts = store.token_texts(weights_sha256, ids.reshape(-1))
        for flat, (k, rank) in enumerate(np.ndindex(ids.shape)):
            rows.append({"direction": k, "end": end, "rank": rank + 1, "token": texts[flat],
                         "score": float(scores[k, rank])})  # fmt: skip
    return pd.DataFrame(rows)


def shown_token(text: str) -> str:
    """A token as a table cell shows it: leading spaces and line breaks made visible."""
    return repr(text)[1:-1].replace(" ", "␣") if text else "∅"


def words_table(words: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """One row per direction (named by `labels`): its promoted and suppressed tokens, best first."""
    out = pd.DataFrame({"direction": labels})
    for end in ("promotes", "suppresses"):
        part = words[words["end"] == end].sort_values(["direction", "rank"])
        joined = part.groupby("direction")["token"].agg(lambda s: "  ".join(map(shown_token, s)))
        out[end] = [joined.get(i, "") for i in range(len(labels))]
    return out
