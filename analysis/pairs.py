"""Minimal-pair analysis: how activations change when one token of a prompt changes.

Inputs are aligned pairs: row i of A is side a of pair i, row i of B is side b of the same pair,
taken at the same layer and position. Differences are always B - A.

Caveats:

* ``relative_difference`` divides by the average activation norm, so it compares across layers
  with different scales; ``mean_abs_difference`` does not.
* ``dimension_consistency`` scores a dimension's change against how much that dimension varies
  naturally across the pairs, so "massive activation" dimensions with huge but unremarkable
  changes do not crowd the top of the ranking. It needs at least 2 pairs.
* ``mean_change`` and ``agreement`` (in ``DimensionStats``) say whether the edit pushes a
  dimension one way: the signed mean of B - A and the share of pairs whose change has the sign
  of that mean. Coin-flip signs give ``sign_agreement_chance(p)`` on average (about 0.5 plus
  0.4 / sqrt(p)); with d dimensions a few of them reach far higher by chance alone.
* ``pair_sums`` keeps sums over pairs per group (e.g. per category), so the statistics of any
  union of groups follow from ``dimension_stats`` without the vectors. Variances from sums
  (E[x^2] - E[x]^2) lose precision when a dimension's mean dwarfs its spread by ~1e7.
* ``token_difference_map`` assumes both sides tokenise to the same length; a substitution that
  changes the token count needs alignment first (not done here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import (
    as_float_matrix,
    as_float_vector,
    as_labels,
    check_numeric,
    check_positive_int,
    require_finite,
)

__all__ = [
    "DimensionStats",
    "PairLayer",
    "PairSums",
    "dimension_consistency",
    "dimension_stats",
    "mean_abs_difference",
    "pair_cosines",
    "pair_differences",
    "pair_layer",
    "pair_sums",
    "per_category_mean_abs",
    "rank_dimensions",
    "relative_difference",
    "relative_projection",
    "sign_agreement_chance",
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
    mean_change: [d] signed mean over pairs of B - A (None where not computed).
    agreement: [d] share of pairs whose B - A has the sign of mean_change (a zero change agrees
        only with a zero mean), in [0, 1]; compare with ``sign_agreement_chance``.
    """

    mean_abs: np.ndarray
    std: np.ndarray
    score: np.ndarray
    mean_change: np.ndarray | None = None
    agreement: np.ndarray | None = None


def dimension_consistency(A, B) -> DimensionStats:
    """Which dimensions change consistently between the two sides. A, B: [p, d] with p >= 2.

    See ``DimensionStats`` for the definitions; rank the result with ``rank_dimensions``.
    """
    A, B = _aligned(A, B, min_rows=2)
    diff = B - A
    return _consistency(A, B, diff, np.abs(diff))


def _consistency(A, B, diff, abs_diff) -> DimensionStats:
    """``dimension_consistency`` of checked float64 rows, given B - A and its absolute value."""
    mean_abs = abs_diff.mean(axis=0)
    std = np.sqrt(0.5 * (A.var(axis=0) + B.var(axis=0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(std > 0.0, mean_abs / np.where(std > 0.0, std, 1.0), 0.0)
    score = np.where((std == 0.0) & (mean_abs > 0.0), np.inf, score)
    mean_change = diff.mean(axis=0)
    agreement = (np.sign(diff) == np.sign(mean_change)).mean(axis=0)
    return DimensionStats(mean_abs, std, score, mean_change, agreement)


@dataclass(frozen=True)
class PairLayer:
    """Everything a page takes from one layer's pairs (``pair_layer``): ``stats`` as
    ``dimension_consistency`` gives it, ``sums`` as ``pair_sums`` does, and per pair [p]:
    ``distance`` ||b - a||, ``scale`` (||a|| + ||b||) / 2, ``pair_abs`` mean |b - a|."""

    stats: DimensionStats
    sums: PairSums
    distance: np.ndarray
    scale: np.ndarray
    pair_abs: np.ndarray


def pair_layer(A, B, groups, n_groups: int) -> PairLayer:
    """``dimension_consistency(A, B)``, ``pair_sums(A, B, groups, n_groups)`` and the per-pair
    figures of one layer in one go: the same numbers as calling each, with the rows checked
    and B - A formed once (each of those passes over every pair's row)."""
    A, B = _aligned(A, B, min_rows=2)
    diff = B - A
    abs_diff = np.abs(diff)
    G = _group_matrix(groups, n_groups, A.shape[0])
    scale = 0.5 * (np.linalg.norm(A, axis=1) + np.linalg.norm(B, axis=1))
    return PairLayer(
        _consistency(A, B, diff, abs_diff), _sums(G, A, B, diff, abs_diff),
        np.linalg.norm(diff, axis=1), scale, abs_diff.mean(axis=1),
    )  # fmt: skip


@dataclass(frozen=True)
class PairSums:
    """Sums over pairs from which ``dimension_stats`` of any union of pair groups follows.

    Every array has the same leading shape G (e.g. [g] groups, or [L, g] layers and groups);
    n: [*G] pairs; the others [*G, d]: abs_diff = sum |B - A|, diff = sum (B - A), positive /
    negative = pairs with B - A > 0 / < 0, a / a_sq / b / b_sq = sums of A, A^2, B, B^2.
    """

    n: np.ndarray
    abs_diff: np.ndarray
    diff: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    a: np.ndarray
    a_sq: np.ndarray
    b: np.ndarray
    b_sq: np.ndarray

    def total(self, axis: int = 0) -> PairSums:
        """The sums over one leading axis (e.g. the groups): shape G without that axis."""
        return PairSums(*(np.sum(getattr(self, f), axis=axis) for f in _SUM_FIELDS))

    def take(self, index, axis: int = 0) -> PairSums:
        """The groups at `index` (ints) along one leading axis."""
        return PairSums(*(np.take(getattr(self, f), index, axis=axis) for f in _SUM_FIELDS))

    @staticmethod
    def stack(parts: list[PairSums]) -> PairSums:
        """One new leading axis over `parts` (e.g. one per layer): [len(parts), *G, ...]."""
        return PairSums(*(np.stack([getattr(p, f) for p in parts]) for f in _SUM_FIELDS))


_SUM_FIELDS = ("n", "abs_diff", "diff", "positive", "negative", "a", "a_sq", "b", "b_sq")


def pair_sums(A, B, groups, n_groups: int) -> PairSums:
    """Per-group sums of aligned pairs. A, B: [p, d]; groups: [p] ints in 0..n_groups-1.

    Returns a PairSums with n [n_groups] and [n_groups, d] sums (a group with no pair sums 0).
    """
    A, B = _aligned(A, B)
    G = _group_matrix(groups, n_groups, A.shape[0])
    D = B - A
    return _sums(G, A, B, D, np.abs(D))


def _group_matrix(groups, n_groups: int, p: int) -> np.ndarray:
    """[n_groups, p] 0/1: row g picks the pairs of group g (ValueError on bad groups)."""
    groups = np.asarray(groups)
    if groups.shape != (p,) or groups.dtype.kind not in "iu":
        raise ValueError(f"groups must be [{p}] integers, got {groups.dtype} {groups.shape}")
    n_groups = check_positive_int(n_groups, "n_groups")
    if groups.size and (groups.min() < 0 or groups.max() >= n_groups):
        raise ValueError(
            f"groups must lie in 0..{n_groups - 1}, got {groups.min()}..{groups.max()}"
        )
    G = np.zeros((n_groups, p))
    G[groups, np.arange(p)] = 1.0
    return G


def _sums(G, A, B, D, abs_D) -> PairSums:
    return PairSums(
        n=G.sum(axis=1), abs_diff=G @ abs_D, diff=G @ D, positive=G @ (D > 0.0),
        negative=G @ (D < 0.0), a=G @ A, a_sq=G @ (A * A), b=G @ B, b_sq=G @ (B * B),
    )  # fmt: skip


def dimension_stats(sums: PairSums) -> DimensionStats:
    """``dimension_consistency`` of the pairs summed in `sums` (any leading shape G: arrays
    [*G, d]). Where a group has no pair every statistic is nan."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.asarray(sums.n, np.float64)[..., None]
        mean_abs = sums.abs_diff / n
        mean_change = sums.diff / n
        var = []
        for total, squares in ((sums.a, sums.a_sq), (sums.b, sums.b_sq)):
            mean_sq = squares / n
            v = mean_sq - (total / n) ** 2
            var.append(np.where(v > 1e-12 * mean_sq, v, 0.0))  # rounding, not spread
        std = np.sqrt(0.5 * (var[0] + var[1]))
        score = np.where(std > 0.0, mean_abs / np.where(std > 0.0, std, 1.0), 0.0)
        score = np.where((std == 0.0) & (mean_abs > 0.0), np.inf, score)
        zero = n - sums.positive - sums.negative
        agree = np.where(mean_change > 0.0, sums.positive,
                         np.where(mean_change < 0.0, sums.negative, zero)) / n  # fmt: skip
    empty = np.broadcast_to(n == 0.0, mean_abs.shape)
    out = [np.where(empty, np.nan, x) for x in (mean_abs, std, score, mean_change, agree)]
    return DimensionStats(*out)


def sign_agreement_chance(n_pairs: int) -> float:
    """Expected share of n_pairs coin-flip signs that fall on the majority side:
    E[max(K, n - K)] / n for K ~ Binomial(n, 1/2). An upper reference for ``agreement`` under
    chance (the mean's sign need not be the majority's): 1.0 for one pair, 0.75 for 2, about
    0.5 + 0.4 / sqrt(n) for large n."""
    n = check_positive_int(n_pairs, "n_pairs")
    k = np.arange(n + 1)
    logs = np.concatenate([[0.0], np.cumsum(np.log(n - k[1:] + 1) - np.log(k[1:]))])
    pmf = np.exp(logs - n * np.log(2.0))
    return float((pmf * np.maximum(k, n - k)).sum() / n)


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


def relative_projection(X, origin, direction) -> np.ndarray:
    """Where each sample sits along a direction, in units of the direction's length, from
    `origin`: (X - origin) . v / (v . v). With v = mean(target) - mean(baseline) and origin =
    mean(baseline), the baseline mean sits at 0 and the target mean at 1.

    X: [n, d], origin: [d], direction: [d]. Returns [n] float64. Raises on a zero direction.
    """
    X = as_float_matrix(X, "X")
    o = as_float_vector(origin, "origin", length=X.shape[1])
    v = as_float_vector(direction, "direction", length=X.shape[1])
    length_sq = v @ v
    if length_sq == 0.0:
        raise ValueError("direction is all zeros; cannot project onto it")
    return (X - o) @ v / length_sq


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
