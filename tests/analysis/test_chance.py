"""Best match per row and chance levels from shuffled samples (the cross-model heatmaps).

A chance level must sit well below the real value when the two sides share structure, and near
it when they do not; the fast per-cell versions must equal the definition (`shuffled_chance`)."""

import numpy as np
import pytest

from analysis import (
    best_per_row,
    cka_chance,
    linear_cka,
    procrustes_chance,
    procrustes_cosine_matrix,
    shuffled_chance,
)
from tests.support.linalg import random_orthogonal


def test_best_per_row_is_the_argmax_of_each_row():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(7, 5))
    assert best_per_row(M).tolist() == M.argmax(axis=1).tolist()
    M[2] = np.nan
    M[3, :] = 0.5  # a tie goes to the first column
    M[4, 1] = np.nan
    got = best_per_row(M)
    assert got[2] == -1 and got[3] == 0
    assert got[4] == int(np.nanargmax(M[4]))
    with pytest.raises(ValueError, match="2-D"):
        best_per_row(np.zeros(3))


def related(n=120, d1=20, d2=24, noise=0.3, seed=0):
    """X and Y: the same n inputs seen through a rotation of a shared low-rank signal."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 6)) @ rng.normal(size=(6, d1)) * 3
    X = Z + rng.normal(size=(n, d1))
    Y = np.pad(Z, ((0, 0), (0, d2 - d1))) @ random_orthogonal(d2, rng) + noise * rng.normal(
        size=(n, d2)
    )
    return X, Y


def procrustes(X, Y):
    return procrustes_cosine_matrix([X], [Y], rank=8)[0, 0]


@pytest.mark.parametrize("measure", [linear_cka, procrustes])
def test_chance_is_below_the_real_value_on_structured_data_and_near_it_on_shuffled(measure):
    X, Y = related()
    real = measure(X, Y)
    chance = shuffled_chance(X, Y, measure, shuffles=5, seed=1)
    assert chance.shape == (5,)
    assert real > 0.8 and chance.max() < real - 0.4
    # Y already out of order: its real value is itself a chance value.
    Y_shuffled = Y[np.random.default_rng(7).permutation(len(Y))]
    unrelated = measure(X, Y_shuffled)
    chance = shuffled_chance(X, Y_shuffled, measure, shuffles=5, seed=1)
    assert abs(unrelated - chance.mean()) < 4 * chance.std() + 0.05


def test_cka_chance_is_high_when_samples_are_few_for_the_width():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(12, 200)), rng.normal(size=(12, 300))
    assert shuffled_chance(X, Y, linear_cka, shuffles=5).mean() > 0.5  # the biased floor


def test_fast_cell_chances_equal_the_definition():
    rng = np.random.default_rng(5)
    A = [related(seed=s)[0] for s in range(3)]
    B = [related(seed=s)[1] for s in range(2)] + [rng.normal(size=(120, 24))]
    cells = [(0, 0), (2, 1), (1, 2), (0, 0)]
    fast = cka_chance(A, B, cells, shuffles=4, seed=9)
    for c, (i, j) in enumerate(cells):
        slow = shuffled_chance(A[i], B[j], linear_cka, shuffles=4, seed=9)
        np.testing.assert_allclose(fast[c], slow, atol=1e-9)
    fast = procrustes_chance(A, B, cells, shuffles=3, seed=2, rank=8)
    for c, (i, j) in enumerate(cells):
        slow = shuffled_chance(A[i], B[j], procrustes, shuffles=3, seed=2)
        np.testing.assert_allclose(fast[c], slow, atol=1e-9)


def test_chance_input_errors():
    X = np.zeros((6, 3))
    with pytest.raises(ValueError, match="outside"):
        cka_chance([X], [X], [(0, 1)])
    with pytest.raises(ValueError, match="same rows"):
        cka_chance([X], [np.zeros((5, 3))], [(0, 0)])
    with pytest.raises(TypeError, match="shuffles"):
        shuffled_chance(X, X, linear_cka, shuffles=1.5)
    assert cka_chance([X], [X], []).shape == (0, 5)
