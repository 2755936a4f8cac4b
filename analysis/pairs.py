"""Minimal-pair analysis: how activations change when one token of a prompt changes.

Inputs are aligned pairs: row i of A is side a of pair i, row i of B is side b of the same pair,
taken at the same layer and position. Differences are always B - A.

Caveats:

* ``relative_difference`` divides by the average activation norm, so it compares across layers
  with different scales; ``mean_abs_difference`` does not.
* ``dimension_consistency`` scores a dimension's change against how much that dimension varies
  naturally across the pairs, so "massive activation" dimensions with huge but unremarkable
  changes do not crowd the top of the ranking. It needs at least 2 pairs.
* ``token_difference_map`` assumes both sides tokenise to the same length; a substitution that
  changes the token count needs alignment first (not done here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_float_matrix, as_labels, check_numeric, check_positive_int, require_finite

__all__ = [
    "DimensionStats",
    "dimension_consistency",
    "mean_abs_difference",
    "pair_cosines",
    "pair_differences",
    "per_category_mean_abs",
    "rank_dimensions",
    "relative_difference",
    "token_difference_map",
]


def _aligned(A, B, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    A = as_float_matrix(A, "A", min_rows=min_rows)
    B = as_float_matrix(B, "B", min_rows=min_rows)
    if A.shape != B.shape:
        raise ValueError(
            f"A and B must be aligned pairs of the same shape, got {A.shape[0]}x{A.shape[1]} "
            f"and {B.shape[0]}x{B.shape[1]}"
        )
    return A, B


def pair_differences(A, B) -> np.ndarray:
    """Per-pair difference B - A. A: [p, d], B: [p, d] -> [p, d] float64."""
    A, B = _aligned(A, B)
    return B - A


def mean_abs_difference(A, B) -> float:
    """Mean absolute entry of B - A over all pairs and dimensions. A, B: [p, d]."""
    A, B = _aligned(A, B)
    return float(np.abs(B - A).mean())


def pair_cosines(A, B) -> np.ndarray:
    """Cosine between the two sides of each pair. A, B: [p, d] -> [p] float64 in [-1, 1].

    A pair with a zero vector on either side has cosine 0.0 (no direction to compare).
    """
    A, B = _aligned(A, B)
    norms = np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1)
    dots = np.einsum("pd,pd->p", A, B)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosines = np.where(norms > 0.0, dots / np.where(norms > 0.0, norms, 1.0), 0.0)
    return np.clip(cosines, -1.0, 1.0)


def relative_difference(A, B) -> float:
    """Mean ||B - A|| over pairs divided by the mean of (||A|| + ||B||) / 2. A, B: [p, d].

    Scale-free, so layers of different activation size compare. 0.0 if every vector is zero.
    """
    A, B = _aligned(A, B)
    diff = np.linalg.norm(B - A, axis=1).mean()
    scale = (0.5 * (np.linalg.norm(A, axis=1) + np.linalg.norm(B, axis=1))).mean()
    return float(diff / scale) if scale > 0.0 else 0.0


def per_category_mean_abs(A, B, categories) -> dict:
    """``mean_abs_difference`` within each pair category.

    A, B: [p, d], categories: [p]. Returns dict category -> float, in sorted category order.
    """
    A, B = _aligned(A, B)
    cats = as_labels(categories, A.shape[0], "categories")
    per_pair = np.abs(B - A).mean(axis=1)
    uniq, inverse = np.unique(cats, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.bincount(inverse, weights=per_pair, minlength=uniq.shape[0])
    counts = np.bincount(inverse, minlength=uniq.shape[0])
    return {c: float(s / k) for c, s, k in zip(uniq.tolist(), sums, counts, strict=True)}


@dataclass(frozen=True)
class DimensionStats:
    """Per-dimension change statistics from ``dimension_consistency``.

    mean_abs: [d] mean over pairs of |B - A|.
    std: [d] natural spread of the dimension across pairs: sqrt of the mean of the across-pair
        variances of A and of B (pooled, so the edit itself does not inflate it).
    score: [d] mean_abs / std. High: the edit moves this dimension by a lot compared with how
        much it varies between prompts. Low: the edit leaves it put relative to its usual spread.
        A dimension constant across pairs scores inf if it changes and 0 if it does not.
    """

    mean_abs: np.ndarray
    std: np.ndarray
    score: np.ndarray


def dimension_consistency(A, B) -> DimensionStats:
    """Which dimensions change consistently between the two sides. A, B: [p, d] with p >= 2.

    See ``DimensionStats`` for the definitions; rank the result with ``rank_dimensions``.
    """
    A, B = _aligned(A, B, min_rows=2)
    mean_abs = np.abs(B - A).mean(axis=0)
    std = np.sqrt(0.5 * (A.var(axis=0) + B.var(axis=0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(std > 0.0, mean_abs / np.where(std > 0.0, std, 1.0), 0.0)
    score = np.where((std == 0.0) & (mean_abs > 0.0), np.inf, score)
    return DimensionStats(mean_abs=mean_abs, std=std, score=score)


def rank_dimensions(
    stats: DimensionStats, k: int = 20, largest: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k highest-scoring (largest=True) or lowest-scoring dimensions.

    stats: from ``dimension_consistency`` over d dimensions. Returns (indices [m] int64,
    scores [m] float64) with m = min(k, d), best first; ties go to the lower index.
    """
    if not isinstance(stats, DimensionStats):
        raise TypeError(f"stats must be a DimensionStats, got {type(stats).__name__}")
    k = check_positive_int(k, "k")
    key = -stats.score if largest else stats.score
    idx = np.argsort(key, kind="stable")[:k]
    return idx.astype(np.int64), stats.score[idx]


def token_difference_map(A, B) -> np.ndarray:
    """L2 norm of the per-token difference for one pair at every layer.

    A, B: [L, t, d] all-token activations of side a and side b (same token count t).
    Returns [L, t] float64: ||B[l, i] - A[l, i]||.
    """
    A, B = np.asarray(A), np.asarray(B)
    for name, X in (("A", A), ("B", B)):
        check_numeric(X, name)
        if X.ndim != 3:
            raise ValueError(f"{name} must be 3-D [L, t, d], got {X.ndim}-D shape {X.shape}")
        if 0 in X.shape:
            raise ValueError(f"{name} must not be empty, got shape {X.shape}")
    if A.shape != B.shape:
        raise ValueError(f"A and B must have the same [L, t, d] shape, got {A.shape} and {B.shape}")
    A, B = A.astype(np.float64), B.astype(np.float64)
    require_finite(A, "A")
    require_finite(B, "B")
    return np.linalg.norm(B - A, axis=2)
