"""Tests for the layer-pair helpers added for the cross-model page.

procrustes_cosine_matrix must agree with procrustes_cosine where the fitted map is unique, recover
a known rotation, and stay well defined when there are fewer fitting rows than dimensions.
centred_label_similarity must remove the shared component of label means.
"""

import numpy as np
import pytest

from analysis import (
    centred_label_similarity,
    cosine_matrix,
    procrustes_cosine,
    procrustes_cosine_matrix,
    rsa,
)
from tests.support.linalg import random_orthogonal


@pytest.mark.parametrize(("d1", "d2"), [(6, 6), (6, 9), (9, 4)])
def test_matches_procrustes_cosine_when_the_map_is_determined(d1, d2):
    rng = np.random.default_rng(d1 * 10 + d2)
    A = [rng.normal(size=(200, d1)) for _ in range(2)]
    B = [np.tanh(A[0] @ rng.normal(size=(d1, d2))) + 0.1 * rng.normal(size=(200, d2))]
    B.append(rng.normal(size=(200, d2)))
    M = procrustes_cosine_matrix(A, B, seed=3)
    assert M.shape == (2, 2)
    for i in range(2):
        for j in range(2):
            assert M[i, j] == pytest.approx(procrustes_cosine(A[i], B[j], seed=3), abs=1e-10)


def test_recovers_a_rotation_even_with_fewer_rows_than_dimensions():
    rng = np.random.default_rng(0)
    # 40 rows in 64 dims, but the data live on 8 dims: the fitting half spans them.
    A = rng.normal(size=(40, 8)) @ rng.normal(size=(8, 64))
    Q = random_orthogonal(64, rng)
    M = procrustes_cosine_matrix([A], [A @ Q + 5.0, rng.normal(size=(40, 64))])
    assert M[0, 0] == pytest.approx(1.0, abs=1e-8)
    assert abs(M[0, 1]) < 0.3


def test_rank_keeps_the_top_principal_subspace():
    rng = np.random.default_rng(6)
    # Two strong directions plus weak noise; a rotation of it matches at rank 2.
    A = rng.normal(size=(60, 2)) @ (10.0 * rng.normal(size=(2, 30))) + 0.01 * rng.normal(
        size=(60, 30)
    )
    Q = random_orthogonal(30, rng)
    M = procrustes_cosine_matrix([A], [A @ Q, rng.normal(size=(60, 30))], rank=2)
    assert M[0, 0] > 0.999
    assert M[0, 1] < 0.9
    with pytest.raises(ValueError, match="rank"):
        procrustes_cosine_matrix([A], [A], rank=0)


def test_rank_deficient_values_are_bounded_and_deterministic():
    rng = np.random.default_rng(1)
    A = [rng.normal(size=(30, 100)) for _ in range(3)]
    B = [rng.normal(size=(30, 120)) for _ in range(2)]
    M1 = procrustes_cosine_matrix(A, B, seed=5)
    M2 = procrustes_cosine_matrix(A, B, seed=5)
    np.testing.assert_array_equal(M1, M2)
    assert np.all(np.abs(M1) <= 1.0)


def test_procrustes_matrix_input_errors():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="layers_a is empty"):
        procrustes_cosine_matrix([], [rng.normal(size=(8, 2))])
    with pytest.raises(ValueError, match="rows"):
        procrustes_cosine_matrix([rng.normal(size=(8, 2))], [rng.normal(size=(9, 2))])
    with pytest.raises(ValueError, match="at least 4"):
        procrustes_cosine_matrix([rng.normal(size=(3, 2))], [rng.normal(size=(3, 2))])


def test_centred_label_similarity_removes_the_shared_component():
    rng = np.random.default_rng(3)
    offsets = rng.normal(size=(4, 16))
    means = 100.0 + offsets  # a huge shared component, as in real activations
    raw = cosine_matrix(means)
    assert raw[np.triu_indices(4, 1)].min() > 0.99
    C = centred_label_similarity(means)
    np.testing.assert_allclose(C, cosine_matrix(offsets - offsets.mean(axis=0)), atol=1e-10)
    # Basis free: a rotation and a different width change nothing.
    Q = random_orthogonal(16, rng)
    rotated = np.pad(means @ Q, ((0, 0), (0, 4)))
    assert rsa(C, centred_label_similarity(rotated)) == pytest.approx(1.0)


def test_cka_matrix_gram_path_matches_linear_cka():
    from analysis import cka_matrix, linear_cka

    rng = np.random.default_rng(4)
    # n below every width takes the stacked-Gram path; one constant layer must give 0.
    A = [rng.normal(size=(20, 50)), np.ones((20, 50))]
    B = [A[0] @ rng.normal(size=(50, 60)), rng.normal(size=(20, 40))]
    M = cka_matrix(A, B)
    for i in range(2):
        for j in range(2):
            assert M[i, j] == pytest.approx(linear_cka(A[i], B[j]), abs=1e-12)
    assert M[1].tolist() == [0.0, 0.0]
