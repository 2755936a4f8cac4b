"""Comparing representations across layers and models: CKA, RSA and Procrustes alignment.

* ``linear_cka``: linear centered kernel alignment between two sets of activations for the same
  n inputs (Kornblith et al. 2019). Invariant to orthogonal transforms and isotropic scaling,
  so it compares layers or models of different widths.
* ``rsa``: representational similarity analysis; correlation of two label-by-label similarity
  matrices (e.g. ``cosine_matrix`` of label means in two layers).
* ``procrustes_fit`` / ``procrustes_cosine``: best orthogonal map between two spaces and how well
  it transfers to held-out rows.
* ``procrustes_cosine_matrix``: the same held-out score for every layer pair of two models, fast
  enough for a full heatmap (it works in the span of the fitting rows).
* ``best_per_row`` and ``shuffled_chance``: the best layer of B for each layer of A, and the
  chance level of a comparison (B's samples shuffled, so nothing corresponds); ``cka_chance``
  and ``procrustes_chance`` give the same for chosen cells of the two heatmaps, fast.
* ``compare_layers``: everything the cross-model heatmaps show (both matrices, each row's best
  cell and its chance levels) from one centred Gram matrix per layer, several times faster than
  the functions above one by one, and equal to them.
* ``normalised_depth`` puts layers of models with different depths on one 0..1 axis.

Caveats:

* Linear CKA with n small relative to d is biased upwards: even unrelated representations score
  well above 0. Compare CKA values computed on the same n, and prefer n >> d where possible.
* RSA on k labels uses only k(k-1)/2 numbers; with few labels it is noisy.
* Degenerate inputs return 0.0 rather than nan (constant activations in CKA, constant
  similarity matrices in RSA) so heatmaps stay plottable; a 0 can therefore mean "undefined".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_float_matrix, check_positive_int, check_seed, rankdata
from .directions import cosine_matrix

__all__ = [
    "best_pairs",
    "best_per_row",
    "centred_label_similarity",
    "cka_matrix",
    "compare_layers",
    "LayerComparison",
    "linear_cka",
    "normalised_depth",
    "procrustes_cosine",
    "procrustes_cosine_matrix",
    "procrustes_fit",
    "rsa",
    "rsa_matrix",
    "shuffled_chance",
    "cka_chance",
    "procrustes_chance",
]


def _center_scaled(X: np.ndarray) -> np.ndarray:
    Xc = X - X.mean(axis=0)
    # CKA ignores scale; dividing by the Frobenius norm keeps the 4th-power terms in range.
    f = np.linalg.norm(Xc)
    return Xc / f if f > 0.0 else Xc


def _self_term(Xc: np.ndarray) -> float:
    """||Xc^T Xc||_F, via whichever of the [d, d] or [n, n] Gram matrices is smaller."""
    n, d = Xc.shape
    G = Xc.T @ Xc if d <= n else Xc @ Xc.T
    return float(np.linalg.norm(G))


def _cross_term(Xc: np.ndarray, Yc: np.ndarray) -> float:
    """||Yc^T Xc||_F^2 = <Xc Xc^T, Yc Yc^T>_F, choosing the cheaper of the two forms."""
    n, d1 = Xc.shape
    d2 = Yc.shape[1]
    if n * (d1 + d2) < d1 * d2:
        return float(np.sum((Xc @ Xc.T) * (Yc @ Yc.T)))
    M = Yc.T @ Xc
    return float(np.sum(M * M))


def _cka_prepared(Xc, sx, Yc, sy) -> float:
    if sx == 0.0 or sy == 0.0:
        return 0.0
    return float(np.clip(_cross_term(Xc, Yc) / (sx * sy), 0.0, 1.0))


def _check_same_rows(X: np.ndarray, Y: np.ndarray, xname: str, yname: str) -> None:
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"{xname} and {yname} must describe the same inputs: "
            f"{X.shape[0]} rows vs {Y.shape[0]} rows"
        )


def linear_cka(X, Y) -> float:
    """Linear CKA between X: [n, d1] and Y: [n, d2] (rows are the same n inputs).

    Columns are centered, then CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), in [0, 1].
    Uses the [n, n] Gram form when n is small relative to the widths, so it is exact and cheap
    for both n < d and n > d. Returns 0.0 if either input is constant across rows.
    """
    X = as_float_matrix(X, "X", min_rows=2)
    Y = as_float_matrix(Y, "Y", min_rows=2)
    _check_same_rows(X, Y, "X", "Y")
    Xc, Yc = _center_scaled(X), _center_scaled(Y)
    return _cka_prepared(Xc, _self_term(Xc), Yc, _self_term(Yc))


def cka_matrix(layers_a, layers_b) -> np.ndarray:
    """Linear CKA between every layer of A and every layer of B.

    layers_a: list of La arrays [n, d1]; layers_b: list of Lb arrays [n, d2]; all share the same
    n rows in the same order. Returns [La, Lb] float64.
    """
    ca, cb, n = _same_rows(layers_a, layers_b, min_rows=2)
    for mats in (ca, cb):  # each copy replaced by its centred form as it goes (peak memory)
        for k, X in enumerate(mats):
            mats[k] = _center_scaled(X)
    if _use_gram_table(n, ca, cb):
        return _cka_matrix_grams(ca, cb)
    pa = [(Xc, _self_term(Xc)) for Xc in ca]
    pb = [(Yc, _self_term(Yc)) for Yc in cb]
    M = np.empty((len(pa), len(pb)))
    for i, (Xc, sx) in enumerate(pa):
        for j, (Yc, sy) in enumerate(pb):
            M[i, j] = _cka_prepared(Xc, sx, Yc, sy)
    return M


# Most bytes the stacked [Lb, n, n] Gram matrices of ``_cka_matrix_grams`` may take.
_GRAM_TABLE_BYTES = 256 * 1024 * 1024


def _same_rows(layers_a, layers_b, min_rows: int = 1) -> tuple[list, list, int]:
    """(layers_a, layers_b as float64 matrices, their shared row count n): each side at least
    one layer, each layer [n, d] with n >= min_rows and the same n throughout."""
    sides = []
    for name, layers in (("layers_a", layers_a), ("layers_b", layers_b)):
        if len(layers) == 0:
            raise ValueError(f"{name} is empty")
        sides.append(
            [as_float_matrix(X, f"{name}[{i}]", min_rows=min_rows) for i, X in enumerate(layers)]
        )
    n = sides[0][0].shape[0]
    for name, mats in zip(("layers_a", "layers_b"), sides, strict=True):
        for i, X in enumerate(mats):
            if X.shape[0] != n:
                raise ValueError(f"{name}[{i}] has {X.shape[0]} rows, layers_a[0] has {n}")
    return sides[0], sides[1], n


def _use_gram_table(n: int, ca: list, cb: list) -> bool:
    """Gram matrices are cheaper when n is below every width and all of B's fit in the budget."""
    return n < min(X.shape[1] for X in ca + cb) and len(cb) * n * n * 8 <= _GRAM_TABLE_BYTES


def _cka_matrix_grams(ca: list, cb: list) -> np.ndarray:
    """cka_matrix via [n, n] Gram matrices formed once per layer: each pair is one dot product.

    Same value as the per-pair form: ||Yc^T Xc||_F^2 = <Xc Xc^T, Yc Yc^T>_F, and the self terms
    are the Gram matrices' Frobenius norms.
    """
    grams_b = np.stack([(Yc @ Yc.T).ravel() for Yc in cb])  # [Lb, n*n]
    self_b = np.linalg.norm(grams_b, axis=1)
    safe_b = np.where(self_b > 0.0, self_b, 1.0)
    M = np.zeros((len(ca), len(cb)))
    for i, Xc in enumerate(ca):
        gram = (Xc @ Xc.T).ravel()
        sx = float(np.linalg.norm(gram))
        if sx == 0.0:
            continue
        row = np.where(self_b > 0.0, (grams_b @ gram) / (sx * safe_b), 0.0)
        M[i] = np.clip(row, 0.0, 1.0)
    return M


def _check_similarity_matrix(C, name: str) -> np.ndarray:
    C = as_float_matrix(C, name)
    if C.shape[0] != C.shape[1]:
        raise ValueError(f"{name} must be square [k, k], got shape {C.shape[0]}x{C.shape[1]}")
    if C.shape[0] < 3:
        raise ValueError(f"{name} needs k >= 3 labels for a correlation, got k={C.shape[0]}")
    return C


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    if denom == 0.0:
        return 0.0
    return float(np.clip((a @ b) / denom, -1.0, 1.0))


_RSA_METHODS = ("pearson", "spearman")


def _rsa_vectors(C: np.ndarray, method: str) -> np.ndarray:
    v = C[np.triu_indices(C.shape[0], k=1)]
    return rankdata(v) if method == "spearman" else v


def _check_method(method: str) -> None:
    if method not in _RSA_METHODS:
        raise ValueError(f"method {method!r} not in {list(_RSA_METHODS)!r}")


def rsa(C1, C2, method: str = "pearson") -> float:
    """Correlation of the off-diagonal upper triangles of two label-by-label matrices.

    C1, C2: [k, k] with k >= 3 and the labels in the same order (e.g. ``cosine_matrix`` of label
    means in two layers). method: "pearson" or "spearman" (Pearson on average ranks).
    Returns a float in [-1, 1]; 0.0 if either triangle is constant.
    """
    _check_method(method)
    C1 = _check_similarity_matrix(C1, "C1")
    C2 = _check_similarity_matrix(C2, "C2")
    if C1.shape != C2.shape:
        raise ValueError(f"C1 is {C1.shape[0]}x{C1.shape[0]} but C2 is {C2.shape[0]}x{C2.shape[0]}")
    return _pearson(_rsa_vectors(C1, method), _rsa_vectors(C2, method))


def rsa_matrix(mats_a, mats_b, method: str = "pearson") -> np.ndarray:
    """RSA between every layer's similarity matrix in A and in B.

    mats_a: list of La arrays [k, k]; mats_b: list of Lb arrays [k, k]; same k labels, same
    order. Returns [La, Lb] float64.
    """
    _check_method(method)
    vecs = []
    for side, mats in (("mats_a", mats_a), ("mats_b", mats_b)):
        if len(mats) == 0:
            raise ValueError(f"{side} is empty")
        vecs.append(
            [
                _rsa_vectors(_check_similarity_matrix(C, f"{side}[{i}]"), method)
                for i, C in enumerate(mats)
            ]
        )
    va, vb = vecs
    m = va[0].shape[0]
    for side, vs in (("mats_a", va), ("mats_b", vb)):
        for i, v in enumerate(vs):
            if v.shape[0] != m:
                raise ValueError(f"{side}[{i}] has a different number of labels from mats_a[0]")
    M = np.empty((len(va), len(vb)))
    for i, a in enumerate(va):
        for j, b in enumerate(vb):
            M[i, j] = _pearson(a, b)
    return M


def best_pairs(M, top: int = 5) -> list[tuple[int, int, float]]:
    """The ``top`` largest entries of a layer-by-layer matrix M: [La, Lb].

    Returns a list of (i, j, value), largest value first; ties go to the smaller (i, j).
    nan entries are skipped. Returns fewer than ``top`` if M has fewer finite entries.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.size == 0:
        raise ValueError(f"M must be a non-empty 2-D matrix, got shape {M.shape}")
    top = check_positive_int(top, "top")
    flat = M.ravel()
    keep = np.flatnonzero(~np.isnan(flat))
    # Stable sort on the negated values keeps row-major order among ties.
    order = keep[np.argsort(-flat[keep], kind="stable")][:top]
    rows, cols = np.unravel_index(order, M.shape)
    return [(int(i), int(j), float(M[i, j])) for i, j in zip(rows, cols, strict=True)]


def normalised_depth(n_layers: int) -> np.ndarray:
    """Relative depth of each layer: layer i -> i / (n_layers - 1). Returns [n_layers] in [0, 1].

    A single-layer model gives [0.0].
    """
    n_layers = check_positive_int(n_layers, "n_layers")
    if n_layers == 1:
        return np.zeros(1)
    return np.arange(n_layers) / (n_layers - 1)


def _orthogonal_map(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(A.T @ B)
    return U @ Vt


def procrustes_fit(A, B) -> np.ndarray:
    """Orthogonal R: [d, d] minimising ||A R - B||_F for A: [n, d], B: [n, d].

    No centering or scaling is applied (center the inputs first if offsets should not count).
    """
    A = as_float_matrix(A, "A")
    B = as_float_matrix(B, "B")
    if A.shape != B.shape:
        raise ValueError(
            f"A and B must have the same shape, got {A.shape[0]}x{A.shape[1]} "
            f"and {B.shape[0]}x{B.shape[1]}"
        )
    return _orthogonal_map(A, B)


def _pad_to(X: np.ndarray, width: int) -> np.ndarray:
    if X.shape[1] == width:
        return X
    return np.pad(X, ((0, 0), (0, width - X.shape[1])))


def procrustes_cosine(A, B, seed=0, center: bool = True) -> float:
    """Held-out quality of the best orthogonal map from A: [n, d1] to B: [n, d2].

    Rows are the same n inputs in both. The rows are shuffled and split in half; R is fitted on
    the first half and the mean row-wise cosine between (A_test R) and B_test is returned
    (1 = the spaces match up to a rotation; about 0 for unrelated data).

    If d1 != d2 the narrower input is zero-padded on the right to the wider width, so R maps
    into the shared padded space; the padded coordinates carry no information.
    With center=True (default) both sides are centered with their fitting-half means before
    fitting and scoring, so a shared constant offset (common in activations) does not inflate
    the cosine. Needs n >= 4 so each half has at least 2 rows.
    """
    A = as_float_matrix(A, "A")
    B = as_float_matrix(B, "B")
    _check_same_rows(A, B, "A", "B")
    n = A.shape[0]
    if n < 4:
        raise ValueError(f"procrustes_cosine needs at least 4 shared rows, got {n}")
    rng = check_seed(seed)
    width = max(A.shape[1], B.shape[1])
    A, B = _pad_to(A, width), _pad_to(B, width)
    perm = rng.permutation(n)
    train, test = perm[: n // 2], perm[n // 2 :]
    A_train, B_train, A_test, B_test = A[train], B[train], A[test], B[test]
    if center:
        ma, mb = A_train.mean(axis=0), B_train.mean(axis=0)
        A_train, A_test = A_train - ma, A_test - ma
        B_train, B_test = B_train - mb, B_test - mb
    R = _orthogonal_map(A_train, B_train)
    P = A_test @ R
    num = np.einsum("ij,ij->i", P, B_test)
    den = np.linalg.norm(P, axis=1) * np.linalg.norm(B_test, axis=1)
    cos = np.divide(num, den, out=np.zeros_like(num), where=den > 0.0)
    return float(np.clip(cos, -1.0, 1.0).mean())


def _span_coordinates(
    X: np.ndarray, train: np.ndarray, test: np.ndarray, center: bool, rank: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the fitting rows and the held-out rows in the fitting rows' top subspace.

    The subspace is spanned by the top ``rank`` right singular vectors of the (centred) fitting
    rows, or all of them up to their numerical rank when ``rank`` is None.
    Returns (train coords [n_train, r], test coords [n_test, r]).
    """
    X_train, X_test = X[train], X[test]
    if center:
        mean = X_train.mean(axis=0)
        X_train, X_test = X_train - mean, X_test - mean
    if rank is not None and rank < min(X_train.shape) // 2:
        return _top_span_coordinates(X_train, X_test, rank)
    _, sing, Vt = np.linalg.svd(X_train, full_matrices=False)
    tol = sing[0] * max(X_train.shape) * np.finfo(np.float64).eps if sing.size else 0.0
    keep = max(int(np.count_nonzero(sing > tol)), 1)
    basis = Vt[: keep if rank is None else min(keep, rank)]
    return X_train @ basis.T, X_test @ basis.T


def _top_span_coordinates(X_train: np.ndarray, X_test: np.ndarray, rank: int):
    """`_span_coordinates` for a rank well below both sides of X_train [m, d]: the top `rank`
    right singular vectors from the eigenvectors of the smaller Gram matrix (m x m or d x d)
    instead of a full SVD, 5-10x cheaper at 200 x 576. The coordinates may differ from the
    SVD's by a rotation within the same subspace, which the Procrustes fit absorbs (its held-out
    cosines do not change). Directions whose variance is below float64 rounding of the Gram
    matrix are left out, as the SVD's numerical rank leaves out zero ones."""
    wide = X_train.shape[0] <= X_train.shape[1]
    gram = X_train @ X_train.T if wide else X_train.T @ X_train
    values, vectors = np.linalg.eigh(gram)
    values, vectors = values[::-1][:rank], vectors[:, ::-1][:, :rank]
    tol = values[0] * max(X_train.shape) * np.finfo(np.float64).eps * 10 if values.size else 0.0
    keep = max(int(np.count_nonzero(values > tol)), 1)
    values, vectors = values[:keep], vectors[:, :keep]
    # wide: the Gram's eigenvectors are left singular vectors U, and V = X^T U / s: [d, r]
    basis = (X_train.T @ vectors) / np.sqrt(values) if wide else vectors
    return X_train @ basis, X_test @ basis


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0.0)


def procrustes_cosine_matrix(
    layers_a, layers_b, seed=0, center: bool = True, rank: int | None = None
) -> np.ndarray:
    """Held-out Procrustes cosine for every layer of A against every layer of B: [La, Lb].

    layers_a: list of La arrays [n, d1]; layers_b: list of Lb arrays [n, d2]; all share the same
    n >= 4 rows (the same inputs) in the same order. One shuffled split (from ``seed``) serves
    every pair, so the entries compare. For each pair, as in ``procrustes_cosine``: fit the
    orthogonal map on the first half, return the mean cosine between mapped and true held-out
    rows.

    Each layer is first expressed in an orthonormal basis of its fitting half's row space (its
    top ``rank`` principal directions if ``rank`` is given), and fitting and scoring happen in
    those coordinates, so a pair costs an r x r SVD (r <= n / 2, or ``rank``) instead of a
    width x width one. Equal to ``procrustes_cosine`` when ``rank`` is None and the fitting half
    spans each space (n / 2 at least the widths). Otherwise held-out rows are scored by their
    part inside the kept subspace: with n / 2 below the width, ``procrustes_cosine`` leaves the
    map outside that span to whatever LAPACK returns, which this avoids.
    """
    if rank is not None:
        rank = check_positive_int(rank, "rank")
    mats_a, mats_b, n = _same_rows(layers_a, layers_b)
    if n < 4:
        raise ValueError(f"procrustes_cosine_matrix needs at least 4 shared rows, got {n}")
    perm = check_seed(seed).permutation(n)
    train, test = perm[: n // 2], perm[n // 2 :]
    prep_a = [_span_coordinates(X, train, test, center, rank) for X in mats_a]
    prep_b = [_span_coordinates(X, train, test, center, rank) for X in mats_b]
    cells = [(i, j) for i in range(len(prep_a)) for j in range(len(prep_b))]
    return _aligned_cosines(prep_a, prep_b, cells).reshape(len(prep_a), len(prep_b))


ALIGN_BATCH = 128  # layer pairs per stacked SVD (memory: 4 x batch x n/2 x rank floats)


def _cells_by_width(prep_a, prep_b, cells) -> dict[int, list[int]]:
    """The indices into `cells` of the pairs (i, j) grouped by their padded width: the wider of
    prep_a[i]'s and prep_b[j]'s fitting coordinates (each prep: (train coords [n, w], ...))."""
    by_width: dict[int, list[int]] = {}
    for c, (i, j) in enumerate(cells):
        width = max(prep_a[i][0].shape[1], prep_b[j][0].shape[1])
        by_width.setdefault(width, []).append(c)
    return by_width


def _aligned_cosines(prep_a, prep_b, cells) -> np.ndarray:
    """Held-out mean cosine after the orthogonal map fitted on the span coordinates, for each
    (i, j) in cells: [C]. prep_a[i], prep_b[j]: (train coords, test coords) of a layer.

    Each pair is zero-padded to the wider of its two widths, as one pair alone would be; pairs
    of the same padded width share one stacked matmul and SVD (numpy loops LAPACK over the
    stack), instead of a Python round trip per pair: 900 pairs of 30-layer runs per heatmap.
    """
    out = np.empty(len(cells))
    for width, members in _cells_by_width(prep_a, prep_b, cells).items():
        for start in range(0, len(members), ALIGN_BATCH):
            batch = members[start : start + ALIGN_BATCH]
            a = [prep_a[cells[c][0]] for c in batch]
            b = [prep_b[cells[c][1]] for c in batch]
            CA, CB = (np.stack([_pad_to(side[0], width) for side in s]) for s in (a, b))
            U, _, Vt = np.linalg.svd(CA.transpose(0, 2, 1) @ CB)
            # Mean row cosine = mean of <unit(a_i) R, unit(b_i)>; R = U Vt keeps norms.
            P = np.stack([_unit_rows(_pad_to(side[1], width)) for side in a]) @ (U @ Vt)
            T = np.stack([_unit_rows(_pad_to(side[1], width)) for side in b])
            out[batch] = np.clip(np.einsum("gij,gij->gi", P, T), -1.0, 1.0).mean(axis=1)
    return out


def centred_label_similarity(means) -> np.ndarray:
    """Cosine matrix of label means after removing their average: means [k, d] -> [k, k].

    Raw label means share a large common component (cosines all near 1); subtracting the mean
    of the label means leaves how the labels differ, which is what RSA should compare.
    """
    M = as_float_matrix(means, "means", min_rows=2)
    return cosine_matrix(M - M.mean(axis=0))


def best_per_row(M) -> np.ndarray:
    """For each row i of M: [La, Lb], the column of its largest finite entry: [La] int.

    Ties go to the smaller column; a row with no finite entry gets -1.
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.size == 0:
        raise ValueError(f"M must be a non-empty 2-D matrix, got shape {M.shape}")
    finite = np.isfinite(M)
    best = np.argmax(np.where(finite, M, -np.inf), axis=1)
    return np.where(finite.any(axis=1), best, -1)


def shuffled_chance(X, Y, measure, shuffles: int = 5, seed=0) -> np.ndarray:
    """What a comparison of X: [n, d1] and Y: [n, d2] gives when the rows do not correspond.

    Rows of X and Y are the same n inputs. measure(X, Y) -> float (e.g. ``linear_cka``); it is
    recomputed on Y's rows reordered by each of ``shuffles`` random permutations (from
    ``seed``), so both sides keep their own structure and only the pairing of inputs is broken.
    Returns [shuffles] float64. The real value should stand clear of these: linear CKA of
    unrelated samples is well above 0 when n is small relative to the widths, and a held-out
    Procrustes cosine sits near 0.
    """
    X = as_float_matrix(X, "X", min_rows=2)
    Y = as_float_matrix(Y, "Y", min_rows=2)
    _check_same_rows(X, Y, "X", "Y")
    shuffles = check_positive_int(shuffles, "shuffles")
    rng = check_seed(seed)
    return np.array([float(measure(X, Y[rng.permutation(len(Y))])) for _ in range(shuffles)])


def _chance_inputs(layers_a, layers_b, cells, shuffles, seed):
    """Checked inputs of the *_chance functions: float64 layers, cells, permutations [S, n]."""
    shuffles = check_positive_int(shuffles, "shuffles")
    cells = [(int(i), int(j)) for i, j in cells]
    for i, j in cells:
        if not (0 <= i < len(layers_a) and 0 <= j < len(layers_b)):
            raise ValueError(f"cell ({i}, {j}) is outside {len(layers_a)} x {len(layers_b)}")
    used_a = {i: as_float_matrix(layers_a[i], f"layers_a[{i}]", min_rows=4) for i, _ in cells}
    used_b = {j: as_float_matrix(layers_b[j], f"layers_b[{j}]", min_rows=4) for _, j in cells}
    n = {X.shape[0] for X in [*used_a.values(), *used_b.values()]}
    if len(n) > 1:
        raise ValueError(f"every layer must have the same rows, got row counts {sorted(n)}")
    rng = check_seed(seed)
    rows = n.pop() if n else 0
    perms = np.stack([rng.permutation(rows) for _ in range(shuffles)]) if cells else None
    return cells, used_a, used_b, perms


def cka_chance(layers_a, layers_b, cells, shuffles: int = 5, seed=0) -> np.ndarray:
    """``shuffled_chance`` of ``linear_cka`` at some cells of ``cka_matrix``, fast: [C, S].

    layers_a / layers_b as for ``cka_matrix`` (n >= 4 rows); cells: C (i, j) layer-index
    pairs. The same S permutations of B's rows (from ``seed``) serve every cell; each layer's
    [n, n] Gram matrix is formed once and permuted, so a shuffle costs O(n^2) per cell.
    Equals ``shuffled_chance(layers_a[i], layers_b[j], linear_cka, S, seed)`` per cell.
    """
    cells, used_a, used_b, perms = _chance_inputs(layers_a, layers_b, cells, shuffles, seed)
    out = np.zeros((len(cells), shuffles))

    def gram(X):
        Xc = _center_scaled(X)
        G = Xc @ Xc.T
        return G, float(np.linalg.norm(G))

    grams_a = {i: gram(X) for i, X in used_a.items()}
    grams_b = {j: gram(Y) for j, Y in used_b.items()}
    for c, (i, j) in enumerate(cells):
        (Ga, sa), (Gb, sb) = grams_a[i], grams_b[j]
        if sa == 0.0 or sb == 0.0:
            continue
        for s, p in enumerate(perms):
            out[c, s] = np.clip(np.sum(Ga * Gb[np.ix_(p, p)]) / (sa * sb), 0.0, 1.0)
    return out


def procrustes_chance(
    layers_a, layers_b, cells, shuffles: int = 5, seed=0, split_seed=0, center: bool = True,
    rank: int | None = None,
) -> np.ndarray:  # fmt: skip
    """``shuffled_chance`` of ``procrustes_cosine_matrix`` at some of its cells, fast: [C, S].

    Same inputs and options as ``procrustes_cosine_matrix`` (``split_seed`` is its ``seed``:
    the same split into fitting and held-out rows), cells: C (i, j) layer-index pairs, S
    permutations of B's rows from ``seed``. A's span coordinates are computed once per layer,
    B's once per layer and shuffle, instead of both for every cell and shuffle.
    """
    if rank is not None:
        rank = check_positive_int(rank, "rank")
    cells, used_a, used_b, perms = _chance_inputs(layers_a, layers_b, cells, shuffles, seed)
    out = np.zeros((len(cells), shuffles))
    if not cells:
        return out
    split = check_seed(split_seed).permutation(perms.shape[1])
    train, test = split[: len(split) // 2], split[len(split) // 2 :]
    prep_a = {i: _span_coordinates(X, train, test, center, rank) for i, X in used_a.items()}
    for s, p in enumerate(perms):
        prep_b = {j: _span_coordinates(Y[p], train, test, center, rank) for j, Y in used_b.items()}
        out[:, s] = _aligned_cosines(prep_a, prep_b, cells)
    return out


# -- every comparison of the cross-model page at once ------------------------------------------
@dataclass(frozen=True)
class LayerComparison:
    """CKA and held-out Procrustes cosine of every layer pair, with chance levels at each row's
    best cell (``compare_layers``). La, Lb: the layers of A and B; S: shuffles.

    cka, procrustes: [La, Lb] as ``cka_matrix`` / ``procrustes_cosine_matrix``;
    cka_best, procrustes_best: [La] int, ``best_per_row`` of each (-1: no finite entry);
    cka_chance, procrustes_chance: [La, S], ``cka_chance`` / ``procrustes_chance`` at
    (i, best[i]) for each row i (nan where best is -1).
    """

    cka: np.ndarray
    procrustes: np.ndarray
    cka_best: np.ndarray
    procrustes_best: np.ndarray
    cka_chance: np.ndarray
    procrustes_chance: np.ndarray


def compare_layers(
    layers_a, layers_b, rank: int | None = None, shuffles: int = 5, seed=0, split_seed=0,
) -> LayerComparison:  # fmt: skip
    """What the cross-model heatmaps show, computed once from shared pieces: [La, Lb] matrices
    and [La, S] chance levels at each row's best cell (see ``LayerComparison``).

    layers_a: La arrays [n, d1]; layers_b: Lb arrays [n, d2]; the same n >= 4 rows in the same
    order. rank, split_seed: as ``procrustes_cosine_matrix``'s rank and seed (centred);
    shuffles, seed: as ``cka_chance`` / ``procrustes_chance``. Equal, within float rounding,
    to calling those four functions and ``best_per_row``.

    When n is below every width and a rank well below n / 4 is given (the page: n = 400,
    widths 576 and 640, rank 32), everything comes from one [n, n] Gram matrix per layer of the
    column-centred rows: CKA of every pair is one matrix product of the stacked Grams, a shuffle
    of B's rows permutes B's Gram (no new products), and a layer's top principal coordinates of
    any row split are the eigenvectors of the split's block of the Gram, re-centred on the
    fitting rows. Otherwise it calls the four functions.
    """
    if rank is not None:
        rank = check_positive_int(rank, "rank")
    shuffles = check_positive_int(shuffles, "shuffles")
    mats_a, mats_b, n = _same_rows(layers_a, layers_b)
    if n < 4:
        raise ValueError(f"compare_layers needs at least 4 shared rows, got {n}")
    widths_a, widths_b = [X.shape[1] for X in mats_a], [X.shape[1] for X in mats_b]
    narrowest = min(widths_a + widths_b)
    fast = (
        rank is not None
        and rank < min(n // 2, narrowest) // 2
        and n < narrowest
        and max(len(mats_a), len(mats_b)) * n * n * 8 <= _GRAM_TABLE_BYTES
    )
    if not fast:
        return _compare_layers_by_parts(mats_a, mats_b, rank, shuffles, seed, split_seed)
    grams_a, grams_b = _centred_grams(mats_a), _centred_grams(mats_b)
    del mats_a, mats_b
    rng = check_seed(seed)
    perms = np.stack([rng.permutation(n) for _ in range(shuffles)])  # as _chance_inputs draws
    split = check_seed(split_seed).permutation(n)
    train, test = split[: n // 2], split[n // 2 :]

    cka = _gram_cka(grams_a, grams_b)
    cka_best, cka_chance = _chance_at_best(
        cka, shuffles, lambda rows, cols: _gram_cka_chance(grams_a, grams_b, rows, cols, perms)
    )

    coords_a = _gram_span_coordinates(grams_a, widths_a, train, test, rank)
    coords_b = _gram_span_coordinates(grams_b, widths_b, train, test, rank)
    La, Lb = len(coords_a), len(coords_b)
    cells = [(i, j) for i in range(La) for j in range(Lb)]
    procrustes = _aligned_cosine_table(coords_a, coords_b, cells).reshape(La, Lb)

    def procrustes_chance_at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.empty((0, shuffles))
        # B's used layers under each shuffle p: the rows p[train] fit, p[test] score.
        used_b = sorted(set(cols.tolist()))
        shuffled, grams_used = [], grams_b[used_b]
        for p in perms:
            shuffled += _gram_span_coordinates(
                grams_used, [widths_b[j] for j in used_b], p[train], p[test], rank
            )
        column = {j: k for k, j in enumerate(used_b)}
        at = [column[int(j)] for j in cols]  # B's column of each row's best cell, among used_b
        pairs = list(zip(rows, at, strict=True))
        chance_cells = [(i, s * len(used_b) + k) for s in range(shuffles) for i, k in pairs]
        values = _aligned_cosine_table(coords_a, shuffled, chance_cells)
        return values.reshape(shuffles, len(rows)).T

    proc_best, proc_chance = _chance_at_best(procrustes, shuffles, procrustes_chance_at)
    return LayerComparison(cka, procrustes, cka_best, proc_best, cka_chance, proc_chance)


def _chance_at_best(M: np.ndarray, shuffles: int, chance) -> tuple[np.ndarray, np.ndarray]:
    """(best_per_row(M) [La], chance levels [La, S] at each row's best cell, nan where a row has
    none): chance(rows, cols) gives [len(rows), S] for the cells (rows[k], cols[k])."""
    best = best_per_row(M)
    levels = np.full((len(M), shuffles), np.nan)
    rows = np.flatnonzero(best >= 0)
    levels[rows] = chance(rows, best[rows])
    return best, levels


def _compare_layers_by_parts(mats_a, mats_b, rank, shuffles, seed, split_seed):
    """compare_layers from the general functions, for shapes its Gram form does not suit."""

    def cells(rows, cols):
        return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True)]

    cka = cka_matrix(mats_a, mats_b)
    procrustes = procrustes_cosine_matrix(mats_a, mats_b, seed=split_seed, rank=rank)
    cka_best, cka_levels = _chance_at_best(
        cka, shuffles,
        lambda rows, cols: cka_chance(mats_a, mats_b, cells(rows, cols), shuffles, seed),
    )  # fmt: skip
    proc_best, proc_levels = _chance_at_best(
        procrustes, shuffles,
        lambda rows, cols: procrustes_chance(
            mats_a, mats_b, cells(rows, cols), shuffles, seed, split_seed, rank=rank
        ),
    )  # fmt: skip
    return LayerComparison(cka, procrustes, cka_best, proc_best, cka_levels, proc_levels)


def _centred_grams(mats: list[np.ndarray]) -> np.ndarray:
    """[L, n, n]: X0 X0^T for each layer X [n, d], X0 = X less its column means over all n rows.

    A permutation p of the rows permutes the Gram matrix (G[p][:, p]) and keeps the means, so
    these serve every shuffle; re-centring on a subset of rows needs only the Gram (see
    ``_gram_span_coordinates``), and centring here first keeps that correction small.
    """
    n = mats[0].shape[0]
    out = np.empty((len(mats), n, n))
    for g, X in enumerate(mats):
        X0 = X - X.mean(axis=0)
        np.matmul(X0, X0.T, out=out[g])
    return out


def _gram_cka(grams_a: np.ndarray, grams_b: np.ndarray) -> np.ndarray:
    """Linear CKA of every pair from centred Grams [La, n, n] and [Lb, n, n]: [La, Lb].

    CKA = <Ga, Gb>_F / (||Ga||_F ||Gb||_F), scale-free, so the Frobenius scaling of
    ``linear_cka`` cancels. 0.0 where a layer is constant (a zero Gram)."""
    fa = grams_a.reshape(len(grams_a), -1)
    fb = grams_b.reshape(len(grams_b), -1)
    na, nb = np.linalg.norm(fa, axis=1), np.linalg.norm(fb, axis=1)
    denom = np.outer(na, nb)
    M = np.divide(fa @ fb.T, denom, out=np.zeros_like(denom), where=denom > 0.0)
    return np.clip(M, 0.0, 1.0)


def _gram_cka_chance(grams_a, grams_b, rows, cols, perms) -> np.ndarray:
    """CKA of A's layer rows[c] with B's layer cols[c] under each permutation of B's rows:
    [C, S]. B's Gram is permuted once per used layer and permutation."""
    out = np.zeros((len(rows), len(perms)))
    na = np.linalg.norm(grams_a.reshape(len(grams_a), -1), axis=1)
    for j in sorted(set(cols.tolist())):
        members = np.flatnonzero(cols == j)
        Gb = grams_b[j]
        nb = float(np.linalg.norm(Gb))
        fa = grams_a[rows[members]].reshape(len(members), -1)
        denom = na[rows[members]] * nb
        for s, p in enumerate(perms):
            dots = fa @ Gb[np.ix_(p, p)].ravel()
            out[members, s] = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0.0)
    return np.clip(out, 0.0, 1.0)


def _gram_span_coordinates(grams, widths, train, test, rank):
    """``_top_span_coordinates`` of every layer, centred on the fitting rows, from its centred
    Gram G [n, n] alone: a list of (train coords [m, r], test coords [n - m, r]).

    Re-centring on the fitting rows t: (x_i - m_t) . (x_k - m_t) = G_ik - r_i - r_k + c with
    r_i = mean_t G_it and c = mean_t r_t. The top eigenvectors V (values v) of the fitting
    block give the coordinates V sqrt(v) of the fitting rows and G_st V / sqrt(v) of the others,
    what X_t basis and X_s basis give with basis = X_t^T V / sqrt(v). One stacked eigh serves
    every layer.
    """
    m = len(train)
    rows = np.concatenate([train, test])
    # One gather: every row (fitting rows first) against the fitting columns, [L, n, m]...
    B = grams[:, rows[:, None], train[None, :]]
    r = B.mean(axis=2)  # [L, n]: r_i
    c = r[:, :m].mean(axis=1)  # [L]
    # ... re-centred in place: B_ik - r_i - (r_k - c).
    B -= r[:, :, None]
    B -= r[:, None, :m] - c[:, None, None]
    Ctt, Cst = B[:, :m], B[:, m:]
    values, vectors = np.linalg.eigh(Ctt)  # ascending
    top = min(rank, m)
    v = values[:, ::-1][:, :top]  # [L, r], largest first
    V = np.ascontiguousarray(vectors[:, :, ::-1][:, :, :top])  # [L, m, r]
    tol = v[:, 0] * np.maximum(m, widths) * np.finfo(np.float64).eps * 10
    keep = np.maximum(np.count_nonzero(v > tol[:, None], axis=1), 1)
    # A constant layer (v[0] = 0) gets zero coordinates rather than 0 / 0.
    root = np.sqrt(np.maximum(v, 0.0))
    inv = np.divide(1.0, root, out=np.zeros_like(root), where=root > 0.0)
    train_coords = V * root[:, None, :]
    test_coords = (Cst @ V) * inv[:, None, :]
    return [(train_coords[g, :, :k], test_coords[g, :, :k]) for g, k in enumerate(keep.tolist())]


# Most bytes the [La, Lb, w, w] tables of ``_aligned_cosine_table`` may take.
_ALIGN_TABLE_BYTES = 64 * 1024 * 1024


def _aligned_cosine_table(prep_a, prep_b, cells) -> np.ndarray:
    """``_aligned_cosines`` of the same inputs: [C], with the cross products of every pair from
    two matrix products instead of one per pair.

    For a pair, M = CA^T CB (fitting coordinates) gives the map R = U Vt, and the mean held-out
    cosine is mean_i <unit(a_i) R, unit(b_i)> = <R, UA^T UB>_F / t (unit test rows, t of
    them), so every M and UA^T UB is a [w, w] block of one [La w, Lb w] product. The per-row
    clip of ``_aligned_cosines`` moves only rounding (|cos| <= 1 for an orthogonal R).
    Falls back to ``_aligned_cosines`` when the tables would pass _ALIGN_TABLE_BYTES.
    """
    w = max(X.shape[1] for X, _ in [*prep_a, *prep_b])
    La, Lb = len(prep_a), len(prep_b)
    table = 4 * len(cells) >= La * Lb  # most pairs wanted: one product for all of them
    if table and La * Lb * w * w * 8 > _ALIGN_TABLE_BYTES:
        return _aligned_cosines(prep_a, prep_b, cells)

    def stack(prep, part, unit):  # [L, rows, w]: each layer's coordinates padded to w
        out = np.zeros((len(prep), prep[0][part].shape[0], w))
        for g, p in enumerate(prep):
            out[g, :, : p[part].shape[1]] = _unit_rows(p[part]) if unit else p[part]
        return out

    TA, TB = stack(prep_a, 0, False), stack(prep_b, 0, False)  # fitting coordinates
    UA, UB = stack(prep_a, 1, True), stack(prep_b, 1, True)  # unit held-out rows
    t = UA.shape[1]
    if table:

        def products(X, Y):  # [La, Lb, w, w]: X[i]^T Y[j] for every pair
            flat_x = X.transpose(1, 0, 2).reshape(X.shape[1], La * w)
            flat_y = Y.transpose(1, 0, 2).reshape(Y.shape[1], Lb * w)
            return (flat_x.T @ flat_y).reshape(La, w, Lb, w).transpose(0, 2, 1, 3)

        cross, unit = products(TA, TB), products(UA, UB)
    out = np.empty(len(cells))
    # Each pair is padded to the wider of its two widths only, as ``_aligned_cosines`` pads it
    # (the zero padding beyond that changes no determined part of R).
    for width, members in _cells_by_width(prep_a, prep_b, cells).items():
        ii = np.array([cells[c][0] for c in members])
        jj = np.array([cells[c][1] for c in members])
        if table:
            M, N = cross[ii, jj, :width, :width], unit[ii, jj, :width, :width]
        else:
            M = TA[ii, :, :width].transpose(0, 2, 1) @ TB[jj, :, :width]
            N = UA[ii, :, :width].transpose(0, 2, 1) @ UB[jj, :, :width]
        U, _, Vt = np.linalg.svd(M)  # [C, width, width]
        out[members] = np.einsum("gij,gij->g", U @ Vt, N) / t
    return np.clip(out, -1.0, 1.0)
