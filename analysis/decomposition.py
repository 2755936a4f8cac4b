"""Principal component analysis and first-principal-direction control vectors.

``pca`` is an exact SVD-based PCA (same numbers as ``sklearn.decomposition.PCA`` with the full
solver, up to the sign of each component). ``first_principal_direction`` is the RepE-style
control vector: the first principal direction of paired differences (e.g. activation on the
positive prompt minus activation on the negative prompt).

Caveats:

* Signs of principal components are arbitrary. ``pca`` makes the largest-|loading| entry of each
  component positive so repeated runs agree; that sign carries no meaning. For control vectors
  use ``align_sign`` so the direction points the way the differences do on average.
* Both solvers hold [n, d] float64 in memory; intended for up to tens of thousands of rows.
  Use a randomised method elsewhere for larger inputs. The default "auto" solver switches to an
  eigendecomposition of the Gram matrix for large inputs, which is as accurate as the SVD for
  the leading components but loses precision on components far below the leading one.
* With ``center=False`` the "explained variance ratio" is the share of the total second moment
  (sum of squares about the origin), not of the variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_float_matrix, as_float_vector, check_positive_int

__all__ = ["PCAResult", "align_sign", "first_principal_direction", "pca"]


@dataclass(frozen=True)
class PCAResult:
    """Output of ``pca``.

    scores: [n, k] coordinates of the samples on the components.
    components: [k, d] unit-norm principal axes, strongest first.
    explained_variance_ratio: [k] share of total variance along each component.
    mean: [d] the vector subtracted before projecting (zeros when center=False).
    explained_variance: [k] variance along each component (divisor n - 1, as sklearn).
    """

    scores: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    mean: np.ndarray
    explained_variance: np.ndarray

    def transform(self, X) -> np.ndarray:
        """Project new samples X: [m, d] onto the components -> [m, k]."""
        X = as_float_matrix(X, "X")
        if X.shape[1] != self.components.shape[1]:
            raise ValueError(
                f"X has width {X.shape[1]}, components have width {self.components.shape[1]}"
            )
        return (X - self.mean) @ self.components.T


def _flip_signs(Vt: np.ndarray) -> np.ndarray:
    """Signs per row so the largest-|entry| of each row is positive: Vt [k, d] -> [k]."""
    idx = np.argmax(np.abs(Vt), axis=1)
    signs = np.sign(Vt[np.arange(Vt.shape[0]), idx])
    # An all-zero row has sign 0; leave it as it is.
    return np.where(signs == 0.0, 1.0, signs)


# Above this many rows and columns even the QR-preconditioned SVD takes seconds (about 6 s for
# 5000 x 2048 on two cores) while an eigendecomposition of the smaller Gram matrix takes under 2.
_GRAM_MIN_SIZE = 512

_SOLVERS = ("auto", "svd", "gram")


def _top_axes(Xc: np.ndarray, k: int, solver: str) -> tuple[np.ndarray, np.ndarray]:
    """Top-k singular values [k] and right singular vectors [k, d] of Xc, signs normalised."""
    n, d = Xc.shape
    use_gram = solver == "gram" or (solver == "auto" and min(n, d) > _GRAM_MIN_SIZE)
    if use_gram:
        small_side_is_features = d <= n
        G = Xc.T @ Xc if small_side_is_features else Xc @ Xc.T
        evals, evecs = np.linalg.eigh(G)
        top = np.argsort(evals)[::-1][:k]
        S = np.sqrt(np.clip(evals[top], 0.0, None))
        # Axes beyond the numerical rank cannot be recovered from the Gram matrix; the SVD
        # still returns a valid orthonormal completion for them.
        if S[0] > 0.0 and S[-1] > S[0] * 1e-4:
            Vt = evecs[:, top].T if small_side_is_features else (Xc.T @ evecs[:, top] / S).T
            return S, Vt * _flip_signs(Vt)[:, None]
    # SVD of the small triangular factor of a QR gives the same S and right vectors as an SVD
    # of Xc, without LAPACK forming the tall [max(n, d), min(n, d)] singular-vector matrix
    # (several times faster for tall or wide inputs).
    if n >= d:
        R = np.linalg.qr(Xc, mode="r")
        _, S, Vt = np.linalg.svd(R)
    else:
        Q, R = np.linalg.qr(Xc.T)  # Xc = R^T Q^T with Q: [d, n]
        _, S, Wt = np.linalg.svd(R.T)
        Vt = Wt @ Q.T
    S, Vt = S[:k], Vt[:k]
    return S, Vt * _flip_signs(Vt)[:, None]


def _check_solver(solver: str) -> None:
    if solver not in _SOLVERS:
        raise ValueError(f"solver {solver!r} not in {list(_SOLVERS)!r}")


def pca(X, k: int = 3, center: bool = True, solver: str = "auto") -> PCAResult:
    """PCA of X: [n, d], keeping k <= min(n, d) components.

    Returns PCAResult with scores [n, k], components [k, d], explained_variance_ratio [k],
    mean [d] and explained_variance [k]. Input of any real dtype is computed in float64.
    Sign convention: the largest-|loading| entry of every component is positive.

    solver: "svd" (exact; LAPACK SVD of the QR factor of X), "gram" (eigendecomposition of the
    smaller of X^T X and X X^T: much faster for large inputs, accurate for the leading
    components, which are what is kept) or "auto" (gram when both n and d exceed 512). "gram"
    falls back to the SVD when k reaches past the numerical rank of X.
    """
    _check_solver(solver)
    X = as_float_matrix(X, "X")
    k = check_positive_int(k, "k")
    n, d = X.shape
    if k > min(n, d):
        raise ValueError(f"k={k} exceeds min(n, d) = min({n}, {d}) = {min(n, d)}")
    mean = X.mean(axis=0) if center else np.zeros(d)
    Xc = X - mean
    S, Vt = _top_axes(Xc, k, solver)
    sq = S**2
    # The total comes from the data itself, so the ratios stay right whichever solver ran.
    total = float(np.einsum("ij,ij->", Xc, Xc))
    ratio = sq / total if total > 0.0 else np.zeros(k)
    return PCAResult(
        scores=Xc @ Vt.T,
        components=Vt,
        explained_variance_ratio=ratio,
        mean=mean,
        explained_variance=sq / max(n - 1, 1),
    )


def align_sign(direction, D) -> np.ndarray:
    """Flip ``direction`` so the mean projection of the rows of D onto it is >= 0.

    direction: [d], D: [n, d]. Returns a [d] float64 copy (unchanged if the mean projection is
    already >= 0).
    """
    v = as_float_vector(direction, "direction")
    D = as_float_matrix(D, "D")
    if D.shape[1] != v.shape[0]:
        raise ValueError(f"D has width {D.shape[1]}, direction has length {v.shape[0]}")
    return -v if (D @ v).mean() < 0.0 else v


def first_principal_direction(D, center: bool, align: bool = True) -> tuple[np.ndarray, float]:
    """First principal direction of paired differences D: [n, d] (RepE-style control vector).

    center=False: the direction of largest second moment about the origin, which keeps the
    shared offset of the differences (usually what a control vector wants). center=True: the
    direction of largest variance around the mean difference, which captures how the pairs
    disagree rather than what they share.

    Returns (unit direction [d], explained variance ratio of that direction). With align=True
    the sign is set by ``align_sign`` so the differences project positively on average.
    """
    D = as_float_matrix(D, "D", min_rows=2 if center else 1)
    Dc = D - D.mean(axis=0) if center else D
    S, Vt = _top_axes(Dc, 1, "auto")
    direction = Vt[0]
    total = float(np.einsum("ij,ij->", Dc, Dc))
    ratio = float(S[0] ** 2 / total) if total > 0.0 else 0.0
    if align:
        direction = align_sign(direction, D)
    return direction, ratio
