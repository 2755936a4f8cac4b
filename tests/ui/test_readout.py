"""ui.readout: the one call pages make to read directions as tokens (label directions, control
vectors, SAE decoder directions), on a real store's readout."""

from __future__ import annotations

import numpy as np
import pytest

from store import StoreError, open_store
from ui.context import StoreView
from ui.readout import direction_words, words_table


def test_directions_read_as_the_tokens_they_point_to(tiny_store):
    store = open_store(tiny_store["root"])
    view = StoreView(str(tiny_store["root"]), tuple(store.run_ids()))
    run = next(m for m in store.runs() if m.architecture == "llama")
    readout = store.readout(run.weights_sha256)
    W = np.concatenate([w for _, w in store.iter_unembedding(run.weights_sha256)])
    directions = np.stack([W[70], -W[70]]) / np.asarray(readout.gain)
    words = direction_words(view, run.weights_sha256, directions, top=4)
    assert set(words.columns) == {"direction", "end", "rank", "token", "score"}
    assert len(words) == 2 * 2 * 4
    promoted = words[(words.end == "promotes") & (words["rank"] == 1)]
    suppressed = words[(words.end == "suppresses") & (words["rank"] == 1)]
    token = store.token_texts(run.weights_sha256, [70])[0]
    assert promoted.set_index("direction").loc[0, "token"] == token
    assert suppressed.set_index("direction").loc[1, "token"] == token  # the opposite direction
    table = words_table(words, ["up", "down"])
    assert list(table.columns) == ["direction", "promotes", "suppresses"]
    assert table.loc[0, "direction"] == "up" and len(table) == 2


def test_unusable_directions_and_missing_readouts_say_why(tiny_store, tmp_path):
    store = open_store(tiny_store["root"])
    view = StoreView(str(tiny_store["root"]), tuple(store.run_ids()))
    weights = store.runs()[0].weights_sha256
    with pytest.raises(ValueError, match="directions of width 5"):
        direction_words(view, weights, np.ones((1, 5)))
    with pytest.raises(ValueError, match="1..512 rows"):
        direction_words(view, weights, np.ones((0, 32)))
    empty = StoreView(str(tmp_path), ())
    open_store(tmp_path, create=True)
    with pytest.raises(StoreError, match="no readout of these model weights"):
        direction_words(empty, weights, np.ones((1, 32)))
