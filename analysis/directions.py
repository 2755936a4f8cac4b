"""Label means, difference-of-means directions and how trustworthy those directions are.

A "direction" for a target label is ``mean(X[target]) - mean(X[baseline])`` in one layer's
activation space. This module computes them (one-shot or streamed over chunks for runs too large
to hold in memory), their norms, cosines between them, and two reliability checks:

* ``split_half_stability`` / ``bootstrap_stability``: does the direction come out the same on
  different subsets of the samples?
* ``projection_separability``: does projecting held-out samples onto a direction fitted on the
  other half separate target from baseline (AUC, accuracy)?

Caveats:

* Raw direction norms grow with the layer's overall activation scale, which in transformers grows
  with depth. Divide by ``typical_norm`` of the same layer before comparing layers.
* A few "massive activation" dimensions can dominate norms and cosines; nothing here corrects
  for that.
* Streamed and one-shot means agree to float64 rounding, not bit for bit, since summation order
  differs.
* Labels may be strings or integers; the returned label lists are sorted python values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import (
    CHUNK_ROWS,
    as_float_matrix,
    as_float_vector,
    as_labels,
    as_matrix,
    check_numeric,
    check_positive_int,
    check_seed,
    rankdata,
    require_finite,
    require_label,
    row_norms,
)

__all__ = [
    "LabelStats",
    "MeanAccumulator",
    "auc",
    "bootstrap_stability",
    "cosine",
    "cosine_matrix",
    "diff_of_means",
    "direction_norms",
    "direction_norms_by_layer",
    "directions_from_means",
    "held_out_layers",
    "label_directions",
    "label_means",
    "one_vs_rest_means",
    "project",
    "projection_separability",
    "projection_separability_layers",
    "split_half_stability",
    "split_half_stability_layers",
    "typical_norm",
]


@dataclass(frozen=True)
class LabelStats:
    """Per-label sufficient statistics gathered by ``MeanAccumulator``.

    labels: sorted python label values, length k.
    counts: [k] int64 samples per label.
    sums: [k, d] float64 sum of the samples per label.
    sum_norms: [k] float64 sum of the samples' L2 norms per label.
    sum_sq_norms: [k] float64 sum of the samples' squared L2 norms per label.
    """

    labels: list
    counts: np.ndarray
    sums: np.ndarray
    sum_norms: np.ndarray
    sum_sq_norms: np.ndarray

    @property
    def means(self) -> np.ndarray:
        """[k, d] per-label mean vectors."""
        return self.sums / self.counts[:, None]


class MeanAccumulator:
    """Streams per-label sums, counts and norm sums over chunks of samples.

    Lets difference-of-means directions be computed over runs of any size while holding only one
    chunk of vectors at a time::

        acc = MeanAccumulator()
        for X_chunk, labels_chunk in chunks:   # X_chunk: [m, d], labels_chunk: [m]
            acc.update(X_chunk, labels_chunk)
        direction = acc.diff_of_means("joy", "neutral")   # [d]

    ``merge`` combines accumulators filled on different shards. The width d is fixed by the first
    chunk (or by ``dim``). Internal state is float64 whatever the chunk dtype.
    """

    def __init__(self, dim: int | None = None) -> None:
        """dim: optional vector width d; otherwise taken from the first chunk."""
        self._dim = None if dim is None else check_positive_int(dim, "dim")
        self._sums: dict = {}
        self._counts: dict = {}
        self._sum_norms: dict = {}
        self._sum_sq_norms: dict = {}

    @property
    def dim(self) -> int | None:
        """Vector width d, or None before the first chunk."""
        return self._dim

    @property
    def labels(self) -> list:
        """Sorted python label values seen so far."""
        try:
            return sorted(self._counts)
        except TypeError:
            # Chunks labelled with different types (e.g. 1 and "1") cannot be ordered.
            kinds = sorted({type(k).__name__ for k in self._counts})
            raise ValueError(f"labels mix incomparable types {kinds}") from None

    @property
    def n_samples(self) -> int:
        """Total number of samples accumulated."""
        return int(sum(self._counts.values()))

    def update(self, X_chunk, labels_chunk) -> MeanAccumulator:
        """Add a chunk. X_chunk: [m, d], labels_chunk: [m]. Returns self for chaining.

        An empty chunk (m = 0) is allowed and changes nothing.
        """
        X = np.asarray(X_chunk)
        if X.ndim == 2 and X.shape[0] == 0:
            as_labels(labels_chunk, 0, "labels_chunk")
            return self
        X = as_float_matrix(X_chunk, "X_chunk")
        labels = as_labels(labels_chunk, X.shape[0], "labels_chunk")
        if self._dim is None:
            self._dim = X.shape[1]
        elif X.shape[1] != self._dim:
            raise ValueError(f"X_chunk has width {X.shape[1]}, accumulator has width {self._dim}")
        uniq, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(-1)
        sq = np.einsum("ij,ij->i", X, X)
        norms = np.sqrt(sq)
        # One-hot matmul sums every label's rows in a single BLAS call.
        onehot = np.zeros((uniq.shape[0], X.shape[0]), dtype=np.float64)
        onehot[inverse, np.arange(X.shape[0])] = 1.0
        sums = onehot @ X
        counts = np.bincount(inverse, minlength=uniq.shape[0])
        sum_norms = np.bincount(inverse, weights=norms, minlength=uniq.shape[0])
        sum_sq = np.bincount(inverse, weights=sq, minlength=uniq.shape[0])
        for i, label in enumerate(uniq.tolist()):
            self._add(label, sums[i], int(counts[i]), float(sum_norms[i]), float(sum_sq[i]))
        return self

    def _add(self, label, s: np.ndarray, count: int, sum_norm: float, sum_sq: float) -> None:
        if label in self._counts:
            self._sums[label] = self._sums[label] + s
            self._counts[label] += count
            self._sum_norms[label] += sum_norm
            self._sum_sq_norms[label] += sum_sq
        else:
            self._sums[label] = s.copy()
            self._counts[label] = count
            self._sum_norms[label] = sum_norm
            self._sum_sq_norms[label] = sum_sq

    def merge(self, other: MeanAccumulator) -> MeanAccumulator:
        """Return a new accumulator holding both; neither input is changed."""
        if not isinstance(other, MeanAccumulator):
            raise TypeError(f"can only merge a MeanAccumulator, got {type(other).__name__}")
        if self._dim is not None and other._dim is not None and self._dim != other._dim:
            raise ValueError(f"cannot merge accumulators of width {self._dim} and {other._dim}")
        out = MeanAccumulator(self._dim if self._dim is not None else other._dim)
        for acc in (self, other):
            for label in acc._counts:
                out._add(
                    label,
                    acc._sums[label],
                    acc._counts[label],
                    acc._sum_norms[label],
                    acc._sum_sq_norms[label],
                )
        return out

    def _require_data(self) -> None:
        if not self._counts:
            raise ValueError("accumulator is empty: call update() with at least one sample")

    def stats(self) -> LabelStats:
        """Snapshot of the per-label statistics (copies; labels sorted)."""
        self._require_data()
        labels = self.labels
        return LabelStats(
            labels=labels,
            counts=np.array([self._counts[k] for k in labels], dtype=np.int64),
            sums=np.stack([self._sums[k] for k in labels]),
            sum_norms=np.array([self._sum_norms[k] for k in labels], dtype=np.float64),
            sum_sq_norms=np.array([self._sum_sq_norms[k] for k in labels], dtype=np.float64),
        )

    def means(self) -> tuple[list, np.ndarray, np.ndarray]:
        """Same output as ``label_means``: (labels, means [k, d], counts [k])."""
        st = self.stats()
        return st.labels, st.means, st.counts

    def diff_of_means(self, target, baseline) -> np.ndarray:
        """Direction mean(target) - mean(baseline). Returns [d] float64."""
        labels, means, _ = self.means()
        return directions_from_means(means, labels, [target], baseline)[0]

    def label_directions(self, baseline) -> dict:
        """Direction of every label other than baseline: dict label -> [d]."""
        labels, means, _ = self.means()
        return _directions_by_label(means, labels, baseline)

    def typical_norm(self) -> float:
        """Mean L2 norm over all samples seen; equals ``typical_norm`` of the stacked chunks."""
        self._require_data()
        return float(sum(self._sum_norms.values()) / self.n_samples)

    def within_label_variance(self) -> tuple[list, np.ndarray]:
        """Per label, mean squared distance of its samples to the label mean: (labels, [k]).

        Computed as E||x||^2 - ||mean||^2, which loses precision when the mean is large relative
        to the spread (float64 keeps it usable for activation-sized values); clipped at 0.
        """
        st = self.stats()
        mean = st.means
        var = st.sum_sq_norms / st.counts - np.einsum("ij,ij->i", mean, mean)
        return st.labels, np.maximum(var, 0.0)


def _check_target_baseline(target, baseline, present: list) -> None:
    require_label(target, present, "target")
    require_label(baseline, present, "baseline")
    if target == baseline:
        raise ValueError(f"target and baseline are the same label {target!r}")


def label_means(X, labels) -> tuple[list, np.ndarray, np.ndarray]:
    """Mean vector of every label.

    X: [n, d] (any real dtype), labels: [n].
    Returns (unique labels as a sorted list of length k, means [k, d] float64, counts [k] int64).
    Works a chunk of rows at a time, so a float16 X is never copied whole to float64.
    """
    X = as_matrix(X, "X")
    labels = as_labels(labels, X.shape[0])
    acc = MeanAccumulator(X.shape[1])
    for start in range(0, X.shape[0], CHUNK_ROWS):
        stop = start + CHUNK_ROWS
        acc.update(X[start:stop], labels[start:stop])
    return acc.means()


def directions_from_means(means, labels, targets, baseline) -> np.ndarray:
    """Difference-of-means directions from label means already computed (the one place where
    ``mean(target) - mean(baseline)`` is written; every other direction function calls it).

    means: [..., k, d] label means in the order of ``labels`` (length k, no repeats), e.g.
    [L, k, d] for one row of label means per layer; targets: m labels; baseline: one label.
    Returns [..., m, d] float64 with ``out[..., j, :] = means[..., targets[j], :] -
    means[..., baseline, :]``. A nan mean (a label with no samples in a layer) gives nan
    directions for that layer only; nothing else is checked for finiteness.
    """
    M = np.asarray(means)
    check_numeric(M, "means")
    if M.ndim < 2 or M.shape[-1] < 1:
        raise ValueError(f"means must be [..., k, d] with d >= 1, got shape {M.shape}")
    labels = list(labels)
    if len(labels) != M.shape[-2]:
        raise ValueError(f"means has {M.shape[-2]} label rows but {len(labels)} labels were given")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat a value: {labels!r}")
    for target in targets:
        _check_target_baseline(target, baseline, labels)
    require_label(baseline, labels, "baseline")
    rows = [labels.index(t) for t in targets]
    M = M.astype(np.float64, copy=False)
    return M[..., rows, :] - M[..., labels.index(baseline), None, :]


def one_vs_rest_means(means, counts) -> np.ndarray:
    """For every label, the mean of every sample of the other labels ("one vs rest" baseline).

    means: [..., k, d] label means (e.g. [L, k, d]); counts: [k] samples per label (k >= 2).
    Returns [..., k, d] float64 with ``out[..., j, :] = sum_{i != j} counts[i] means[..., i, :] /
    sum_{i != j} counts[i]``: the others weighted by their sample counts, i.e. the plain mean of
    all their samples. A nan mean (a label with no samples in a layer) counts as absent there.
    """
    M = np.asarray(means)
    check_numeric(M, "means")
    if M.ndim < 2 or M.shape[-2] < 2:
        raise ValueError(f"means must be [..., k, d] with k >= 2 labels, got shape {M.shape}")
    w = np.asarray(counts, np.float64)
    if w.shape != (M.shape[-2],) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"counts must be [{M.shape[-2]}] non-negative numbers, got {w.shape}")
    M = M.astype(np.float64, copy=False)
    present = np.all(np.isfinite(M), axis=-1, keepdims=True)  # [..., k, 1]
    W = np.where(present, w[:, None], 0.0)
    weighted = np.where(present, M, 0.0) * W
    rest_sum = weighted.sum(axis=-2, keepdims=True) - weighted
    rest_n = W.sum(axis=-2, keepdims=True) - W
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rest_n > 0.0, rest_sum / rest_n, np.nan)


def _directions_by_label(means: np.ndarray, labels: list, baseline) -> dict:
    targets = [k for k in labels if k != baseline]
    require_label(baseline, labels, "baseline")
    D = directions_from_means(means, labels, targets, baseline)
    return dict(zip(targets, D, strict=True))


def diff_of_means(X, labels, target, baseline) -> np.ndarray:
    """Difference-of-means direction mean(X[target]) - mean(X[baseline]).

    X: [n, d], labels: [n]. Returns [d] float64 (not normalised; its norm is informative).
    """
    uniq, means, _ = label_means(X, labels)
    return directions_from_means(means, uniq, [target], baseline)[0]


def label_directions(X, labels, baseline) -> dict:
    """Direction of every label other than ``baseline``. X: [n, d], labels: [n].

    Returns dict label -> [d] float64, in sorted label order.
    """
    uniq, means, _ = label_means(X, labels)
    return _directions_by_label(means, uniq, baseline)


def direction_norms(direction) -> tuple[float, float]:
    """(L1, L2) norm of one direction. direction: [d]."""
    v = as_float_vector(direction, "direction")
    return float(np.abs(v).sum()), float(np.sqrt(v @ v))


def direction_norms_by_layer(directions) -> tuple[np.ndarray, np.ndarray]:
    """(L1 [L], L2 [L]) norms of one direction per layer. directions: [L, d]."""
    D = as_float_matrix(directions, "directions")
    return np.abs(D).sum(axis=1), np.sqrt(np.einsum("ij,ij->i", D, D))


def typical_norm(X) -> float:
    """Mean L2 norm of the samples, X: [n, d] -> float.

    Divide a layer's direction norms by this to compare layers whose activation scales differ.
    """
    X = as_matrix(X, "X")
    norms = row_norms(X)
    require_finite(norms, "X")
    return float(norms.mean())


def cosine(a, b) -> float:
    """Cosine similarity of two vectors a: [d], b: [d]; 0.0 if either is all zeros."""
    a = as_float_vector(a, "a")
    b = as_float_vector(b, "b", length=a.shape[0])
    na, nb = np.sqrt(a @ a), np.sqrt(b @ b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip((a @ b) / (na * nb), -1.0, 1.0))


def cosine_matrix(V) -> np.ndarray:
    """Pairwise cosine similarities of the rows of V: [k, d] -> [k, k].

    Rows that are all zeros get cosine 0 with everything, themselves included.
    """
    V = as_float_matrix(V, "V")
    norms = np.sqrt(np.einsum("ij,ij->i", V, V))
    safe = np.where(norms > 0.0, norms, 1.0)
    U = V / safe[:, None]
    C = U @ U.T
    # Rounding can push unit-vector dot products a hair past +-1.
    C = np.clip(C, -1.0, 1.0)
    zero = norms == 0.0
    C[zero, :] = 0.0
    C[:, zero] = 0.0
    return C


def project(X, direction) -> np.ndarray:
    """Scalar projection of every sample onto the unit direction. X: [n, d], direction: [d].

    Returns [n] float64. Raises if the direction is all zeros.
    """
    X = as_float_matrix(X, "X")
    v = as_float_vector(direction, "direction", length=X.shape[1])
    norm = np.sqrt(v @ v)
    if norm == 0.0:
        raise ValueError("direction is all zeros; cannot project onto it")
    return X @ (v / norm)


def auc(scores_pos, scores_neg) -> float:
    """Area under the ROC curve of positives vs negatives (Mann-Whitney U / (n_pos n_neg)).

    scores_pos: [n_pos], scores_neg: [n_neg]. Ties count one half, matching
    ``sklearn.metrics.roc_auc_score``. 1.0 means every positive scores above every negative.
    """
    pos = as_float_vector(scores_pos, "scores_pos")
    neg = as_float_vector(scores_neg, "scores_neg")
    ranks = rankdata(np.concatenate([pos, neg]))
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _two_label_rows(X, labels, target, baseline, min_per_label: int):
    """Validated float64 rows of target and baseline only, split by label."""
    X = as_matrix(X, "X")
    X, idx_t, idx_b = _two_label_index(X[None], labels, target, baseline, min_per_label)
    return _rows64(X[0], idx_t), _rows64(X[0], idx_b)


def _two_label_index(X, labels, target, baseline, min_per_label: int):
    """Validated X [L, n, d] (as given: no float64 copy of every layer), and the row indices of
    target and baseline."""
    X = np.asarray(X)
    check_numeric(X, "X")
    if X.ndim != 3 or 0 in X.shape:
        raise ValueError(f"X must be [layers, n, d] with none of them 0, got shape {X.shape}")
    labels = as_labels(labels, X.shape[1])
    present = np.unique(labels).tolist()
    _check_target_baseline(target, baseline, present)
    idx_t = np.flatnonzero(labels == target)
    idx_b = np.flatnonzero(labels == baseline)
    for role, label, idx in (("target", target, idx_t), ("baseline", baseline, idx_b)):
        if idx.shape[0] < min_per_label:
            raise ValueError(
                f"{role} label {label!r} has {idx.shape[0]} sample(s), "
                f"need at least {min_per_label}"
            )
    return X, idx_t, idx_b


def _rows64(layer: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Some rows of one layer [n, d] as finite float64 [len(idx), d] (ValueError if not)."""
    rows = np.asarray(layer[idx], dtype=np.float64)
    require_finite(rows, "X")
    return rows


# Held-out statistics, one layer at a time: the float64 copies are one layer's rows, not every
# layer's (at a 4,096-sample subsample of 30 x 576 those were 0.3 GB per label pair and call).
def _half_splits(rng, nt: int, nb: int, n_splits: int):
    """The split-half selections, drawn as split_half_stability always drew them: [s, nt] and
    [s, nb] 0/1 matrices picking each split's first halves."""
    pick_t, pick_b = np.zeros((n_splits, nt)), np.zeros((n_splits, nb))
    for s in range(n_splits):
        pick_t[s, rng.permutation(nt)[: nt // 2]] = 1.0
        pick_b[s, rng.permutation(nb)[: nb // 2]] = 1.0
    return pick_t, pick_b


def _split_half_layer(Xt, Xb, pick_t, pick_b) -> tuple[float, float]:
    """(mean, std) of the split cosines at one layer; Xt [nt, d], Xb [nb, d] float64."""
    (nt, d), nb = Xt.shape, Xb.shape[0]
    ht, hb = nt // 2, nb // 2
    # Every split's first-half sums in one matrix product per label (a 0/1 selection matrix
    # [s, n] times the rows); the second half's sum is the total minus the first.
    st, sb = pick_t @ Xt, pick_b @ Xb  # [s, d]
    total_t, total_b = Xt.sum(axis=0)[None], Xb.sum(axis=0)[None]
    d1 = st / ht - sb / hb
    d2 = (total_t - st) / (nt - ht) - (total_b - sb) / (nb - hb)
    cosines = _cosines_by_row(d1.reshape(-1, d), d2.reshape(-1, d))
    return float(cosines.mean()), float(cosines.std())


def _fit_split(rng, nt: int, nb: int):
    """The stratified fit / held-out split of projection_separability: (pt, pb) permutations."""
    return rng.permutation(nt), rng.permutation(nb)


def _separability_layer(Xt, Xb, pt, pb) -> tuple[float, float]:
    """(AUC, accuracy) at one layer; Xt [nt, d], Xb [nb, d] float64."""
    ht, hb = Xt.shape[0] // 2, Xb.shape[0] // 2
    # Means and projections as matrix products over all rows (no copies of row subsets).
    fit_t, fit_b = np.zeros(Xt.shape[0]), np.zeros(Xb.shape[0])
    fit_t[pt[:ht]], fit_b[pb[:hb]] = 1.0 / ht, 1.0 / hb
    mt, mb = fit_t @ Xt, fit_b @ Xb  # [d]
    direction = mt - mb
    norm = np.sqrt(direction @ direction)
    unit = direction / norm if norm > 0.0 else direction.copy()
    st = (Xt @ unit)[pt[ht:]]  # held-out target rows
    sb = (Xb @ unit)[pb[hb:]]
    threshold = 0.5 * ((mt + mb) @ unit)
    correct = np.count_nonzero(st > threshold) + np.count_nonzero(sb <= threshold)
    return auc(st, sb), float(correct / (st.shape[0] + sb.shape[0]))


def held_out_layers(X, labels, targets, baseline, n_splits: int = 20, seed=0) -> np.ndarray:
    """Split-half stability and held-out separability of several targets against one
    baseline, every layer: X [L, n, d], labels [n] -> [len(targets), L, 4] float64 with
    (stability mean, stability std, AUC, accuracy).

    Entry [i, l] equals ``split_half_stability(X[l], labels, targets[i], baseline, n_splits,
    seed)`` and ``projection_separability(X[l], labels, targets[i], baseline, seed)``.
    baseline None: each target against every other sample (one vs rest), as if those rows were
    relabelled. A target whose statistics cannot be computed (under 2 samples on a side, a label
    missing, non-finite rows) gets nan. Each layer is widened to float64 once for all targets:
    the cost of a page's reliability checks, where the one-pair functions copy every layer per
    pair and statistic.
    """
    n_splits = check_positive_int(n_splits, "n_splits")
    X = np.asarray(X)
    check_numeric(X, "X")
    if X.ndim != 3 or 0 in X.shape:
        raise ValueError(f"X must be [layers, n, d] with none of them 0, got shape {X.shape}")
    labels = as_labels(labels, X.shape[1])
    out = np.full((len(targets), X.shape[0], 4), np.nan)
    # Rows grouped by label (a stable sort keeps each label's rows in sample order), so one
    # label's rows are a slice of the widened layer, not a copy of them for every target.
    code_of: dict = {}
    codes = np.array([code_of.setdefault(v, len(code_of)) for v in labels.tolist()], np.int64)
    order = np.argsort(codes, kind="stable")
    where = np.empty(len(order), np.int64)
    where[order] = np.arange(len(order))
    ends = np.cumsum(np.bincount(codes, minlength=len(code_of)))

    def rows_of(label) -> slice:
        code = code_of.get(label)
        if code is None:  # no such label: no rows (the checks below skip it)
            return slice(0, 0)
        return slice(int(ends[code - 1]) if code else 0, int(ends[code]))

    plans = {}
    for i, target in enumerate(targets):
        idx_t = np.flatnonzero(labels == target)
        idx_b = np.flatnonzero(labels != target if baseline is None else labels == baseline)
        if baseline is not None and (target == baseline or not len(idx_b)):
            continue
        if len(idx_t) < 2 or len(idx_b) < 2:
            continue
        splits = _half_splits(check_seed(seed), len(idx_t), len(idx_b), n_splits)
        # Where the target's and the baseline's rows lie in the grouped layer: a slice per
        # label; one vs rest, every other label's rows, in sample order (a copy, as before).
        at_b = rows_of(baseline) if baseline is not None else where[idx_b]
        plans[i] = (rows_of(target), at_b, splits, _fit_split(check_seed(seed), len(idx_t),
                                                              len(idx_b)))  # fmt: skip
    for layer in range(X.shape[0]):
        X64 = np.asarray(X[layer][order], dtype=np.float64)
        finite = np.isfinite(X64).all(axis=1)  # one pass per layer, not one per target and side
        for i, (at_t, at_b, splits, fit) in list(plans.items()):
            if not (finite[at_t].all() and finite[at_b].all()):
                out[i] = np.nan
                del plans[i]
                continue
            Xt, Xb = X64[at_t], X64[at_b]
            out[i, layer, :2] = _split_half_layer(Xt, Xb, *splits)
            out[i, layer, 2:] = _separability_layer(Xt, Xb, *fit)
    return out


def _cosines_by_row(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosine of each row of A [s, d] with the same row of B; 0 where a row is zero. [s]"""
    na, nb = np.sqrt(np.einsum("ij,ij->i", A, A)), np.sqrt(np.einsum("ij,ij->i", B, B))
    dots = np.einsum("ij,ij->i", A, B)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosines = np.clip(dots / (na * nb), -1.0, 1.0)
    return np.where((na == 0.0) | (nb == 0.0), 0.0, cosines)


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.sqrt(a @ a), np.sqrt(b @ b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip((a @ b) / (na * nb), -1.0, 1.0))


def split_half_stability(
    X, labels, target, baseline, n_splits: int = 20, seed=0
) -> tuple[float, float]:
    """How reproducible the target-vs-baseline direction is across disjoint halves of the data.

    X: [n, d], labels: [n]. For each of ``n_splits`` random splits, each label's samples are
    shuffled and cut into two halves; the direction is computed on each half and the cosine
    between the two recorded. Returns (mean cosine, std of cosines).

    Near 1: the direction is a stable property of the labels. Near 0: it is mostly sampling
    noise. Each half sees half the data, so this is a pessimistic estimate for the full-data
    direction. Needs at least 2 samples per label.
    """
    X = as_matrix(X, "X")
    means, stds = split_half_stability_layers(X[None], labels, target, baseline, n_splits, seed)
    return float(means[0]), float(stds[0])


def split_half_stability_layers(
    X, labels, target, baseline, n_splits: int = 20, seed=0
) -> tuple[np.ndarray, np.ndarray]:
    """``split_half_stability`` of every layer at once: X [L, n, d], labels [n] ->
    (mean cosines [L], stds [L]). Every layer gets the same splits, so entry l equals
    ``split_half_stability(X[l], labels, target, baseline, n_splits, seed)``; one matrix
    product per label and layer covers every split, which is what makes it fast."""
    n_splits = check_positive_int(n_splits, "n_splits")
    X, idx_t, idx_b = _two_label_index(X, labels, target, baseline, min_per_label=2)
    splits = _half_splits(check_seed(seed), len(idx_t), len(idx_b), n_splits)
    stats = [_split_half_layer(_rows64(layer, idx_t), _rows64(layer, idx_b), *splits)
             for layer in X]  # fmt: skip
    means, stds = np.array(stats).T
    return means, stds


def bootstrap_stability(
    X, labels, target, baseline, n_boot: int = 50, seed=0
) -> tuple[float, float]:
    """Cosine between bootstrap-resampled directions and the full-data direction.

    X: [n, d], labels: [n]. Each label's samples are resampled with replacement ``n_boot``
    times. Returns (mean cosine, std of cosines). Uses all the data per replicate, so it reads
    higher than ``split_half_stability``; the two are not interchangeable.
    """
    n_boot = check_positive_int(n_boot, "n_boot")
    rng = check_seed(seed)
    Xt, Xb = _two_label_rows(X, labels, target, baseline, min_per_label=1)
    full = Xt.mean(axis=0) - Xb.mean(axis=0)
    cosines = np.empty(n_boot)
    for s in range(n_boot):
        it = rng.integers(0, Xt.shape[0], size=Xt.shape[0])
        ib = rng.integers(0, Xb.shape[0], size=Xb.shape[0])
        cosines[s] = _cosine_rows(Xt[it].mean(axis=0) - Xb[ib].mean(axis=0), full)
    return float(cosines.mean()), float(cosines.std())


def projection_separability(X, labels, target, baseline, seed=0) -> tuple[float, float]:
    """Held-out separability of target vs baseline along their difference-of-means direction.

    X: [n, d], labels: [n]. Each label's samples are shuffled and split in half (stratified;
    the smaller half is the fitting half when a count is odd). The direction is fitted on one
    half; the other half is projected onto it. Returns (AUC, accuracy):

    * AUC of target vs baseline projections (0.5 = chance; ties count one half).
    * accuracy of "target if projection > midpoint of the two fitted class means' projections".

    Needs at least 2 samples per label. If the fitted direction is exactly zero all projections
    tie, giving AUC 0.5 and accuracy equal to the baseline share of the held-out half.
    """
    X = as_matrix(X, "X")
    aucs, accuracies = projection_separability_layers(X[None], labels, target, baseline, seed)
    return float(aucs[0]), float(accuracies[0])


def projection_separability_layers(
    X, labels, target, baseline, seed=0
) -> tuple[np.ndarray, np.ndarray]:
    """``projection_separability`` of every layer at once: X [L, n, d], labels [n] ->
    (AUC [L], accuracy [L]). Every layer gets the same split, so entry l equals
    ``projection_separability(X[l], labels, target, baseline, seed)``."""
    X, idx_t, idx_b = _two_label_index(X, labels, target, baseline, min_per_label=2)
    fit = _fit_split(check_seed(seed), len(idx_t), len(idx_b))
    stats = [_separability_layer(_rows64(layer, idx_t), _rows64(layer, idx_b), *fit)
             for layer in X]  # fmt: skip
    aucs, accuracies = np.array(stats).T
    return aucs, accuracies
