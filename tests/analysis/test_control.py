"""analysis.control: the three repeng methods, their sign rule and figures, on constructed data."""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from analysis import METHODS, control_vectors, layer_vector, random_unit_vectors


def _pairs(n=40, d=12, shift=3.0, seed=0):
    """States of two styles: B = A + shift * e0 + noise, so the second style is higher on e0."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d)) * 2.0
    noise = rng.normal(size=(n, d)) * np.linspace(1.0, 0.2, d)
    B = A + noise
    B[:, 0] += shift
    return A, B


@pytest.mark.parametrize("method", METHODS)
def test_sign_points_from_the_first_style_to_the_second(method):
    A, B = _pairs()
    for first, second, sign in ((A, B, 1.0), (B, A, -1.0)):
        lv = layer_vector(first, second, method)
        assert np.isclose(np.linalg.norm(lv.vector), 1.0)
        if method != "pca_diff":  # pca_diff follows the spread, not the shift (see next test)
            assert sign * lv.vector[0] > 0.9
        projections_first, projections_second = first @ lv.vector, second @ lv.vector
        higher = np.mean(projections_second > projections_first)
        assert higher >= 0.5 and np.isclose(lv.sign_agreement, higher)


def test_a_minority_of_large_pairs_does_not_set_the_sign():
    """repeng counts pairs: 7 pairs slightly up on e0 and 3 far down still point up."""
    A = np.zeros((10, 4))
    B = np.zeros((10, 4))
    B[:7, 0] = 1.0
    B[7:, 0] = -50.0
    B[:, 1] = np.arange(10) * 1e-3  # some spread, so every method is defined
    for method in METHODS:
        lv = layer_vector(A, B, method)
        assert lv.vector[0] > 0 and np.isclose(lv.sign_agreement, 0.7)
    # The mean difference points down; flipped by the rule, its raw norm says so by its sign.
    mean = layer_vector(A, B, "mean_diff")
    assert np.isclose(mean.raw_norm, -np.linalg.norm((B - A).mean(axis=0)))


def test_pca_diff_is_scikit_learns_first_component_of_the_differences():
    A, B = _pairs(seed=3)
    D = B - A
    reference = PCA(n_components=1, svd_solver="full").fit(D)
    lv = layer_vector(A, B, "pca_diff")
    component = reference.components_[0]
    assert np.isclose(abs(lv.vector @ component), 1.0, atol=1e-10)
    assert np.isclose(lv.explained_variance, reference.explained_variance_ratio_[0])


def test_pca_center_is_repengs_midpoint_pca():
    """repeng's pca_center: subtract each pair's midpoint from both states, then a PCA."""
    A, B = _pairs(seed=4)
    H = np.empty((2 * len(A), A.shape[1]))
    H[::2], H[1::2] = A, B  # repeng's order: [positive, negative, ...]
    center = (H[::2] + H[1::2]) / 2
    H[::2] -= center
    H[1::2] -= center
    reference = PCA(n_components=1, svd_solver="full").fit(H)
    lv = layer_vector(A, B, "pca_center")
    assert np.isclose(abs(lv.vector @ reference.components_[0]), 1.0, atol=1e-10)
    assert np.isclose(lv.explained_variance, reference.explained_variance_ratio_[0])


def test_mean_diff_raw_norm_is_the_norm_of_the_mean_difference():
    A, B = _pairs(seed=5)
    lv = layer_vector(A, B, "mean_diff")
    mean = (B - A).mean(axis=0)
    np.testing.assert_allclose(lv.vector, mean / np.linalg.norm(mean))
    assert np.isclose(lv.raw_norm, np.linalg.norm(mean))
    D = B - A
    assert np.isclose(lv.explained_variance, np.sum((D @ lv.vector) ** 2) / np.sum(D * D))


def test_control_vectors_stacks_layers_and_refuses_what_it_cannot_use():
    A, B = _pairs(n=10, d=6)
    stacked = control_vectors(np.stack([A, A * 2]), np.stack([B, B * 2]), "pca_center")
    assert stacked.vectors.shape == (2, 6)
    np.testing.assert_allclose(stacked.vectors[0], stacked.vectors[1], atol=1e-10)
    assert np.isclose(stacked.raw_norm[1], 2 * stacked.raw_norm[0])
    with pytest.raises(ValueError, match="unknown method 'pca'"):
        layer_vector(A, B, "pca")
    with pytest.raises(ValueError, match="identical states"):
        layer_vector(A, A, "pca_center")
    with pytest.raises(ValueError, match="at least 2 pairs"):
        layer_vector(A[:1], B[:1], "mean_diff")
    with pytest.raises(ValueError, match="must line up"):
        layer_vector(A, B[:5], "mean_diff")
    with pytest.raises(ValueError, match="nan or inf"):
        layer_vector(A, B * np.inf, "mean_diff")


def test_random_unit_vectors_are_unit_and_seeded():
    R = random_unit_vectors(5, 300, seed=1)
    np.testing.assert_allclose(np.linalg.norm(R, axis=1), 1.0)
    np.testing.assert_array_equal(R, random_unit_vectors(5, 300, seed=1))
    assert np.abs(R @ R.T - np.eye(5)).max() < 0.3  # nearly orthogonal in 300 dimensions
