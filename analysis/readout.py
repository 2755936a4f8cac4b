"""What a direction says in words: the tokens it promotes and suppresses through the unembedding.

A direction v in a layer's residual stream is read the way the model reads its last residual
state: through the final norm, then the unembedding W_U [vocab, d]. The final norm is
``gain * (x - centre(x)) / scale(x) + bias``: its scale is one positive number per state, which
changes no ranking, and its bias is the same whatever the direction, so the direction's own
effect on the logits is ``W_U @ (gain * P v)``, where P removes the mean of v for a LayerNorm
(``centred``) and is the identity for an RMSNorm. Tokens with the highest scores are the ones
the direction promotes, the lowest the ones it suppresses. This is the "logit lens" read of a
direction; in early layers, which the model transforms a lot before the end, it says less.

``TopTokens`` streams W_U a chunk of rows at a time (the unembedding of a large vocabulary does
not fit comfortably in float32 memory) and keeps, per direction, the best ``top`` token ids at
each end.

Shapes: directions [k, d]; gain [d]; a chunk of the unembedding [m, d] with its token ids [m].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_float_matrix, as_float_vector, check_positive_int

__all__ = ["TokenScores", "TopTokens", "readout_directions"]


def readout_directions(directions, gain, centred: bool) -> np.ndarray:
    """``gain * P v`` for every row v of directions [k, d]: what W_U multiplies. -> [k, d]."""
    V = as_float_matrix(directions, "directions")
    g = as_float_vector(gain, "gain", length=V.shape[1])
    if centred:
        V = V - V.mean(axis=1, keepdims=True)
    return V * g


@dataclass(frozen=True)
class TokenScores:
    """Per direction (row), the token ids it promotes most and suppresses most, best first.

    promoted_ids, promoted_scores, suppressed_ids, suppressed_scores: [k, top] each; a score is
    the logit change per unit of the direction, up to the final norm's positive scale.
    """

    promoted_ids: np.ndarray
    promoted_scores: np.ndarray
    suppressed_ids: np.ndarray
    suppressed_scores: np.ndarray


class TopTokens:
    """Streams chunks of the unembedding and keeps the ``top`` extreme tokens per direction.

    top = TopTokens(readout_directions(V, gain, centred), top=10)
    for token_ids, W_chunk in chunks:       # [m], [m, d]
        top.update(token_ids, W_chunk)
    scores = top.result()
    """

    def __init__(self, readout: np.ndarray, top: int = 10) -> None:
        self.V = as_float_matrix(readout, "readout")
        self.top = check_positive_int(top, "top")
        k = self.V.shape[0]
        self._ids = np.zeros((k, 0), dtype=np.int64)
        self._scores = np.zeros((k, 0), dtype=np.float64)
        self._low_ids = np.zeros((k, 0), dtype=np.int64)
        self._low_scores = np.zeros((k, 0), dtype=np.float64)

    def update(self, token_ids, W_chunk) -> TopTokens:
        ids = np.asarray(token_ids, dtype=np.int64)
        W = np.asarray(W_chunk, dtype=np.float32)
        if W.ndim != 2 or W.shape[1] != self.V.shape[1] or ids.shape != (W.shape[0],):
            raise ValueError(
                f"chunk of shape {W.shape} with {ids.shape} ids does not fit directions of "
                f"width {self.V.shape[1]}"
            )
        if W.shape[0] == 0:
            return self
        # float32 keeps a 256k-token chunk's products in memory at half the cost of float64.
        with np.errstate(all="ignore"):  # damage is reported below, not as a warning
            scores = (W @ self.V.T.astype(np.float32)).T.astype(np.float64)  # [k, m]
        if not np.isfinite(scores).all():
            raise ValueError("the unembedding holds nan or inf values")
        tiled = np.broadcast_to(ids, scores.shape)
        self._ids, self._scores = _best(
            np.concatenate([self._ids, tiled], axis=1),
            np.concatenate([self._scores, scores], axis=1),
            self.top,
        )
        self._low_ids, low = _best(
            np.concatenate([self._low_ids, tiled], axis=1),
            np.concatenate([-self._low_scores, -scores], axis=1),
            self.top,
        )
        self._low_scores = -low
        return self

    def result(self) -> TokenScores:
        return TokenScores(self._ids, self._scores, self._low_ids, self._low_scores)


def _best(ids: np.ndarray, scores: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The `top` highest scores per row, highest first (ties: lower token id first)."""
    if scores.shape[1] > top:
        keep = np.argpartition(-scores, top - 1, axis=1)[:, :top]
        ids = np.take_along_axis(ids, keep, axis=1)
        scores = np.take_along_axis(scores, keep, axis=1)
    order = np.lexsort((ids, -scores), axis=1)
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)
