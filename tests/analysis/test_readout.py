"""analysis.readout: streamed top and bottom tokens equal a brute-force read of the unembedding."""

import numpy as np
import pytest

from analysis import TopTokens, readout_directions


def test_streamed_top_tokens_equal_the_full_product():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(1000, 16)).astype(np.float32)
    V = rng.normal(size=(3, 16))
    gain = rng.uniform(0.5, 2.0, size=16)
    readout = readout_directions(V, gain, centred=False)
    top = TopTokens(readout, top=5)
    for start in range(0, 1000, 128):  # chunks that do not divide the vocabulary
        top.update(np.arange(start, min(start + 128, 1000)), W[start : start + 128])
    result = top.result()
    full = W.astype(np.float64) @ (V * gain).T  # [vocab, k]
    for k in range(3):
        order = np.argsort(-full[:, k])
        np.testing.assert_array_equal(result.promoted_ids[k], order[:5])
        np.testing.assert_array_equal(result.suppressed_ids[k], order[::-1][:5])
        np.testing.assert_allclose(result.promoted_scores[k], full[order[:5], k], rtol=1e-5)


def test_centred_readout_ignores_the_all_ones_direction():
    """A LayerNorm removes the mean of its input: a direction along (1, ..., 1) reads as zero."""
    readout = readout_directions(np.ones((1, 8)), np.full(8, 3.0), centred=True)
    np.testing.assert_allclose(readout, 0.0, atol=1e-12)
    kept = readout_directions(np.ones((1, 8)), np.full(8, 3.0), centred=False)
    np.testing.assert_allclose(kept, 3.0)


def test_bad_chunks_are_refused():
    top = TopTokens(np.ones((2, 4)), top=3)
    with pytest.raises(ValueError, match="does not fit"):
        top.update(np.arange(5), np.ones((5, 3)))
    with pytest.raises(ValueError, match="nan or inf"):
        top.update(np.arange(2), np.full((2, 4), np.inf))
    with pytest.raises(ValueError, match="gain has length 3"):
        readout_directions(np.ones((1, 4)), np.ones(3), centred=False)
