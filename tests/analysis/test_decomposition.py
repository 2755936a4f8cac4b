"""Tests for analysis.decomposition: PCA against sklearn, control-vector directions."""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from analysis import align_sign, first_principal_direction, pca


def match_signs(ours, ref):
    """Flip each row of ref to agree in sign with the matching row of ours."""
    signs = np.sign(np.sum(ours * ref, axis=1))
    return ref * signs[:, None]


@pytest.mark.parametrize("solver", ["svd", "gram"])
@pytest.mark.parametrize(("n", "d", "k"), [(50, 8, 3), (10, 30, 5), (25, 40, 24), (60, 60, 10)])
def test_pca_matches_sklearn_up_to_sign(n, d, k, solver):
    rng = np.random.default_rng(n + d)
    # Anisotropic data so the components are well separated.
    X = rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d) + 2.0
    res = pca(X, k=k, solver=solver)
    ref = PCA(n_components=k, svd_solver="full").fit(X)
    np.testing.assert_allclose(res.explained_variance_ratio, ref.explained_variance_ratio_)
    np.testing.assert_allclose(res.explained_variance, ref.explained_variance_)
    np.testing.assert_allclose(res.mean, ref.mean_)
    comps = match_signs(res.components, ref.components_)
    np.testing.assert_allclose(res.components, comps, atol=1e-8)
    ref_scores = ref.transform(X)
    np.testing.assert_allclose(res.scores, match_signs(res.scores.T, ref_scores.T).T, atol=1e-8)
    np.testing.assert_allclose(res.transform(X), res.scores, atol=1e-10)


def test_pca_sign_convention_is_deterministic():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 6))
    res = pca(X, k=4)
    idx = np.argmax(np.abs(res.components), axis=1)
    assert np.all(res.components[np.arange(4), idx] > 0)
    # Flipping the data flips no sign in the output convention.
    res_neg = pca(-X, k=4)
    np.testing.assert_allclose(res_neg.components, res.components, atol=1e-10)
    np.testing.assert_allclose(res_neg.scores, -res.scores, atol=1e-10)


def test_pca_uncentered_and_float16():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5)) + 10.0
    res = pca(X, k=2, center=False)
    np.testing.assert_array_equal(res.mean, np.zeros(5))
    # Without centering the first axis points at the big shared offset.
    assert res.components[0] @ (np.ones(5) / np.sqrt(5)) > 0.99
    res16 = pca(X.astype(np.float16), k=2)
    assert res16.scores.dtype == np.float64
    np.testing.assert_allclose(
        res16.explained_variance_ratio, pca(X, k=2).explained_variance_ratio, atol=0.02
    )


def test_pca_validation():
    with pytest.raises(ValueError, match=r"k=6 exceeds min\(n, d\) = min\(10, 5\) = 5"):
        pca(np.zeros((10, 5)), k=6)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        pca(np.zeros((10, 5)), k=0)
    with pytest.raises(ValueError, match="X must be 2-D"):
        pca(np.zeros(10), k=1)
    with pytest.raises(ValueError, match="solver 'arpack' not in"):
        pca(np.zeros((10, 5)), solver="arpack")


def test_pca_gram_falls_back_past_the_rank():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 3)) @ rng.normal(size=(3, 10))  # rank 3
    res = pca(X, k=5, solver="gram")
    np.testing.assert_allclose(res.components @ res.components.T, np.eye(5), atol=1e-10)
    assert res.explained_variance_ratio[:3].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(res.explained_variance_ratio[3:], 0.0, atol=1e-12)


def test_pca_auto_solver_on_large_input_matches_svd():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(600, 520)) * np.geomspace(10.0, 0.1, 520)
    auto, exact = pca(X, k=4), pca(X, k=4, solver="svd")
    np.testing.assert_allclose(auto.components, exact.components, atol=1e-8)
    np.testing.assert_allclose(auto.explained_variance_ratio, exact.explained_variance_ratio)


def test_first_principal_direction_recovers_shared_difference():
    rng = np.random.default_rng(2)
    d = 20
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    # Differences all point along u with varying magnitude, plus small noise.
    D = rng.uniform(1.0, 3.0, size=(60, 1)) * u + 0.05 * rng.normal(size=(60, d))
    direction, ratio = first_principal_direction(D, center=False)
    assert np.linalg.norm(direction) == pytest.approx(1.0)
    assert direction @ u > 0.99  # aligned sign, not just |cos|
    assert ratio > 0.95
    # Centered: the shared offset is removed, but the magnitude variation still lies along u.
    direction_c, ratio_c = first_principal_direction(D, center=True)
    assert direction_c @ u > 0.95
    assert ratio_c < ratio
    np.testing.assert_allclose(
        first_principal_direction(-D, center=False)[0], -direction, atol=1e-10
    )


def test_align_sign():
    D = np.array([[1.0, 0.0], [2.0, 1.0]])
    np.testing.assert_array_equal(align_sign([-1.0, 0.0], D), [1.0, -0.0])
    np.testing.assert_array_equal(align_sign([1.0, 0.0], D), [1.0, 0.0])
    with pytest.raises(ValueError, match="D has width 2, direction has length 3"):
        align_sign([1.0, 0.0, 0.0], D)
