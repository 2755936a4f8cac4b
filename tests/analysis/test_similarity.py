"""Tests for analysis.similarity: CKA, RSA, best pairs, depth, Procrustes."""

import numpy as np
import pytest

from analysis import (
    best_pairs,
    cka_matrix,
    cosine_matrix,
    linear_cka,
    normalised_depth,
    procrustes_cosine,
    procrustes_cosine_matrix,
    procrustes_fit,
    rsa,
    rsa_matrix,
    similarity,
)
from tests.support.linalg import random_orthogonal


def reference_cka(X, Y):
    """Textbook HSIC form with an explicit centering matrix."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return np.sum(K * L) / (np.linalg.norm(K) * np.linalg.norm(L))


@pytest.mark.parametrize(("n", "d1", "d2"), [(60, 5, 8), (12, 40, 30), (20, 20, 3)])
def test_cka_matches_reference_in_both_regimes(n, d1, d2):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, d1))
    Y = np.tanh(X @ rng.normal(size=(d1, d2))) + 0.3 * rng.normal(size=(n, d2))
    assert linear_cka(X, Y) == pytest.approx(reference_cka(X, Y), rel=1e-10)


def test_cka_invariances_and_noise():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 10)) * np.linspace(1, 4, 10)
    assert linear_cka(X, X) == pytest.approx(1.0)
    Q = random_orthogonal(10, rng)
    assert linear_cka(X, 7.5 * X @ Q + 3.0) == pytest.approx(1.0)
    noise = rng.normal(size=(100, 10))
    assert linear_cka(X, noise) < 0.3
    # Not invariant to arbitrary invertible maps (that would make it useless).
    A = rng.normal(size=(10, 10)) * np.geomspace(0.01, 10, 10)
    assert linear_cka(X, X @ A) < 0.99


def test_cka_float16_and_constant_input():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 6))
    assert linear_cka(X.astype(np.float16), X) == pytest.approx(1.0, abs=1e-4)
    assert linear_cka(np.ones((50, 3)), X) == 0.0


def test_cka_validation():
    with pytest.raises(ValueError, match="same inputs: 5 rows vs 6 rows"):
        linear_cka(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="X needs at least 2 row"):
        linear_cka(np.zeros((1, 2)), np.zeros((1, 2)))


def test_cka_matrix_matches_pairwise():
    rng = np.random.default_rng(2)
    a = [rng.normal(size=(30, d)) for d in (4, 50)]
    b = [rng.normal(size=(30, 6)), a[0] @ random_orthogonal(4, rng)]
    M = cka_matrix(a, b)
    assert M.shape == (2, 2)
    for i in range(2):
        for j in range(2):
            assert M[i, j] == pytest.approx(linear_cka(a[i], b[j]))
    assert M[0, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"layers_b\[0\] has 29 rows, layers_a\[0\] has 30"):
        cka_matrix(a, [np.zeros((29, 2))])
    with pytest.raises(ValueError, match="layers_b is empty"):
        cka_matrix(a, [])


def test_rsa_pearson_and_spearman():
    rng = np.random.default_rng(3)
    C1 = cosine_matrix(rng.normal(size=(6, 10)))
    assert rsa(C1, C1) == pytest.approx(1.0)
    iu = np.triu_indices(6, k=1)
    C2 = cosine_matrix(rng.normal(size=(6, 10)))
    assert rsa(C1, C2) == pytest.approx(np.corrcoef(C1[iu], C2[iu])[0, 1])
    # A monotone transform keeps Spearman at 1 but not Pearson.
    C3 = np.exp(5 * C1)
    assert rsa(C1, C3, method="spearman") == pytest.approx(1.0)
    assert rsa(C1, C3) < 1.0 - 1e-6
    stats = pytest.importorskip("scipy.stats")
    ref = stats.spearmanr(C1[iu], C2[iu]).statistic
    assert rsa(C1, C2, method="spearman") == pytest.approx(ref)


def test_rsa_spearman_ties_and_diagonal_ignored():
    C1 = np.array(
        [[1.0, 0.5, 0.5, 0.1], [0.5, 1, 0.2, 0.2], [0.5, 0.2, 1, 0.3], [0.1, 0.2, 0.3, 1]]
    )
    C2 = C1.copy()
    np.fill_diagonal(C2, -9.0)
    assert rsa(C1, C2, method="spearman") == pytest.approx(1.0)
    # A constant triangle has no correlation to speak of.
    assert rsa(C1, np.eye(4)) == 0.0
    stats = pytest.importorskip("scipy.stats")
    C3 = np.eye(4)
    C3[np.triu_indices(4, k=1)] = [0.2, 0.2, 0.7, 0.2, 0.7, 0.1]
    C3 = np.triu(C3) + np.triu(C3, k=1).T
    iu = np.triu_indices(4, k=1)
    ref = stats.spearmanr(C1[iu], C3[iu]).statistic
    assert rsa(C1, C3, method="spearman") == pytest.approx(ref)


def test_rsa_validation():
    C = np.eye(4)
    with pytest.raises(ValueError, match="method 'kendall' not in"):
        rsa(C, C, method="kendall")
    with pytest.raises(ValueError, match="C2 needs k >= 3 labels"):
        rsa(C, np.eye(2))
    with pytest.raises(ValueError, match="C1 is 4x4 but C2 is 3x3"):
        rsa(C, np.eye(3))
    with pytest.raises(ValueError, match="must be square"):
        rsa(np.zeros((3, 4)), C)


def test_rsa_matrix_matches_pairwise():
    rng = np.random.default_rng(5)
    a = [cosine_matrix(rng.normal(size=(5, 8))) for _ in range(3)]
    b = [cosine_matrix(rng.normal(size=(5, 8))) for _ in range(2)]
    M = rsa_matrix(a, b, method="spearman")
    assert M.shape == (3, 2)
    assert M[2, 1] == pytest.approx(rsa(a[2], b[1], method="spearman"))
    with pytest.raises(ValueError, match=r"mats_b\[0\] has a different number of labels"):
        rsa_matrix(a, [np.eye(4)])


def test_best_pairs():
    M = np.array([[0.1, 0.9, np.nan], [0.9, 0.5, 0.2]])
    assert best_pairs(M, top=3) == [(0, 1, 0.9), (1, 0, 0.9), (1, 1, 0.5)]
    assert len(best_pairs(M, top=100)) == 5
    with pytest.raises(ValueError, match="top must be >= 1, got 0"):
        best_pairs(M, top=0)


def test_normalised_depth():
    np.testing.assert_allclose(normalised_depth(5), [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(normalised_depth(1), [0.0])
    with pytest.raises(ValueError, match="n_layers must be >= 1, got 0"):
        normalised_depth(0)
    with pytest.raises(TypeError, match="n_layers must be an integer, got 2.5"):
        normalised_depth(2.5)


def test_procrustes_recovers_rotation():
    rng = np.random.default_rng(6)
    R_true = random_orthogonal(8, rng)
    A = rng.normal(size=(200, 8))
    B = A @ R_true
    R = procrustes_fit(A, B)
    np.testing.assert_allclose(R, R_true, atol=1e-10)
    np.testing.assert_allclose(R @ R.T, np.eye(8), atol=1e-10)
    assert procrustes_cosine(A, B + 5.0, seed=0) == pytest.approx(1.0)
    noisy = B + 0.1 * rng.normal(size=B.shape)
    assert procrustes_cosine(A.astype(np.float16), noisy, seed=1) > 0.98


def test_procrustes_unrelated_is_low():
    rng = np.random.default_rng(7)
    A = rng.normal(size=(400, 10))
    B = rng.normal(size=(400, 10))
    assert abs(procrustes_cosine(A, B, seed=0)) < 0.2


def test_procrustes_pads_different_widths():
    rng = np.random.default_rng(8)
    A = rng.normal(size=(100, 5))
    padded = np.hstack([A, np.zeros((100, 3))])
    B = padded @ random_orthogonal(8, rng)
    assert procrustes_cosine(A, B, seed=0) == pytest.approx(1.0)
    assert procrustes_cosine(B, A, seed=0) == pytest.approx(1.0)


def test_procrustes_validation():
    with pytest.raises(ValueError, match="same shape, got 4x2 and 4x3"):
        procrustes_fit(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 4 shared rows, got 3"):
        procrustes_cosine(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="10 rows vs 9 rows"):
        procrustes_cosine(np.zeros((10, 2)), np.zeros((9, 2)))


def test_top_span_coordinates_span_what_the_svd_spans():
    """The Gram-matrix shortcut for a low rank gives the SVD's top subspace (up to a rotation
    inside it, which Procrustes absorbs): the same inner products among all coordinates."""
    rng = np.random.default_rng(5)
    for rows, width in ((40, 90), (90, 40)):  # the m x m and the d x d Gram
        X = rng.normal(size=(rows, 12)) @ rng.normal(size=(12, width))
        X += 0.1 * rng.normal(size=X.shape)
        train, test = np.arange(rows // 2), np.arange(rows // 2, rows)
        centred = X[train] - X[train].mean(axis=0)
        _, _, Vt = np.linalg.svd(centred, full_matrices=False)
        held = X[test] - X[train].mean(axis=0)
        fast = similarity._span_coordinates(X, train, test, True, rank=5)
        for got, want in zip(fast, (centred @ Vt[:5].T, held @ Vt[:5].T), strict=True):
            np.testing.assert_allclose(got @ got.T, want @ want.T, atol=1e-8)
        expected = procrustes_cosine_matrix([X], [X[:, ::-1]], rank=5)
        assert expected.shape == (1, 1) and 0.9 < expected[0, 0] <= 1.0
