"""compare_layers: the cross-model heatmaps from one centred Gram matrix per layer.

Its Gram formulation must equal the general functions it replaces on the page (cka_matrix,
procrustes_cosine_matrix, best_per_row, cka_chance, procrustes_chance) within float rounding,
on shapes that take it (n below the widths, a small rank) and on shapes that do not; and its
pieces must equal the pieces they stand for."""

import numpy as np
import pytest

from analysis import (
    best_per_row,
    cka_chance,
    cka_matrix,
    compare_layers,
    procrustes_chance,
    procrustes_cosine_matrix,
)
from analysis import similarity as sim
from tests.support.linalg import random_orthogonal


def layers(n=48, widths_a=(60, 64, 60), widths_b=(70, 66), seed=0):
    """Related layers: a shared low-rank signal, rotated and noised per layer, plus an offset
    (activations share a large mean) and a layer of rank 2 (fewer directions than the rank)."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 6)) * 3

    def layer(d):
        signal = np.pad(Z, ((0, 0), (0, d - 6))) @ random_orthogonal(d, rng)
        return signal + rng.normal(size=(n, d)) + 20.0

    A = [layer(d) for d in widths_a]
    B = [layer(d) for d in widths_b]
    B.append(rng.normal(size=(n, 2)) @ rng.normal(size=(2, 68)))
    return A, B


def by_parts(A, B, rank, shuffles, seed, split_seed):
    """What the page computed before: each function on its own."""
    cka = cka_matrix(A, B)
    proc = procrustes_cosine_matrix(A, B, seed=split_seed, rank=rank)
    cb, pb = best_per_row(cka), best_per_row(proc)
    cc = cka_chance(A, B, list(enumerate(cb)), shuffles, seed)
    pc = procrustes_chance(A, B, list(enumerate(pb)), shuffles, seed, split_seed, rank=rank)
    return cka, proc, cb, pb, cc, pc


@pytest.mark.parametrize(("rank", "seed", "split_seed"), [(5, 0, 0), (3, 4, 7), (8, 1, 2)])
def test_gram_form_equals_the_functions_one_by_one(rank, seed, split_seed, monkeypatch):
    A, B = layers(seed=rank)
    monkeypatch.setattr(sim, "_compare_layers_by_parts", None)  # the Gram form must serve
    got = compare_layers(A, B, rank=rank, shuffles=4, seed=seed, split_seed=split_seed)
    cka, proc, cb, pb, cc, pc = by_parts(A, B, rank, 4, seed, split_seed)
    np.testing.assert_allclose(got.cka, cka, atol=1e-12)
    np.testing.assert_allclose(got.procrustes, proc, atol=1e-10)
    assert got.cka_best.tolist() == cb.tolist() and got.procrustes_best.tolist() == pb.tolist()
    np.testing.assert_allclose(got.cka_chance, cc, atol=1e-12)
    np.testing.assert_allclose(got.procrustes_chance, pc, atol=1e-10)
    assert got.procrustes.max() > 0.5  # the shared signal shows: not a comparison of noise


@pytest.mark.parametrize("shape", ["n above the widths", "no rank", "float16 input"])
def test_every_shape_equals_the_functions(shape):
    rng = np.random.default_rng(3)
    if shape == "n above the widths":
        A, B = [rng.normal(size=(80, 12)) for _ in range(2)], [rng.normal(size=(80, 10))]
        rank = 3
    else:
        A, B = layers(n=40)
        rank = None if shape == "no rank" else 4
        if shape == "float16 input":  # as the page hands them over
            A, B = [X.astype(np.float16) for X in A], [X.astype(np.float16) for X in B]
    got = compare_layers(A, B, rank=rank, shuffles=3, seed=5)
    cka, proc, cb, pb, cc, pc = by_parts(A, B, rank, 3, 5, 0)
    for have, want in zip(
        (got.cka, got.procrustes, got.cka_chance, got.procrustes_chance), (cka, proc, cc, pc),
        strict=True,
    ):  # fmt: skip
        np.testing.assert_allclose(have, want, atol=1e-10)
    assert got.cka_best.tolist() == cb.tolist() and got.procrustes_best.tolist() == pb.tolist()


def test_a_constant_layer_scores_zero_where_the_general_functions_fail():
    rng = np.random.default_rng(1)
    A = [rng.normal(size=(40, 50)), np.ones((40, 50))]
    B = [A[0] @ rng.normal(size=(50, 60)), np.full((40, 60), 2.0)]
    got = compare_layers(A, B, rank=4, shuffles=3)
    assert got.cka[1].tolist() == [0.0, 0.0] and got.cka[:, 1].tolist() == [0.0, 0.0]
    assert got.procrustes[1].tolist() == [0.0, 0.0] and got.procrustes[:, 1].tolist() == [0.0, 0.0]
    assert got.cka[0, 0] > 0.5 and np.isfinite(got.procrustes_chance).all()
    # 0 / 0 in the span of a constant layer:
    with pytest.raises(np.linalg.LinAlgError), np.errstate(invalid="ignore"):
        procrustes_cosine_matrix(A, B, rank=4)


def test_span_coordinates_from_the_gram_equal_those_from_the_rows():
    A, B = layers(n=40)
    X = A[0]
    split = np.random.default_rng(2).permutation(40)
    train, test = split[:20], split[20:]
    want_train, want_test = sim._span_coordinates(X, train, test, True, 4)
    ((got_train, got_test),) = sim._gram_span_coordinates(
        sim._centred_grams([X]), [X.shape[1]], train, test, 4
    )
    # The same subspace, up to the signs eigh gives its vectors: compare inner products.
    np.testing.assert_allclose(got_train @ got_train.T, want_train @ want_train.T, atol=1e-9)
    np.testing.assert_allclose(got_test @ got_train.T, want_test @ want_train.T, atol=1e-9)


def test_the_cosine_table_equals_the_pairwise_alignment_with_mixed_widths():
    rng = np.random.default_rng(4)
    prep_a = [(rng.normal(size=(20, w)), rng.normal(size=(20, w))) for w in (4, 2, 4)]
    prep_b = [(rng.normal(size=(20, w)), rng.normal(size=(20, w))) for w in (3, 4)]
    prep_b[1][1][5] = 0.0  # a held-out row of norm 0 scores 0
    cells = [(i, j) for i in range(3) for j in range(2)] + [(1, 0), (0, 1)]
    np.testing.assert_allclose(
        sim._aligned_cosine_table(prep_a, prep_b, cells),
        sim._aligned_cosines(prep_a, prep_b, cells),
        atol=1e-12,
    )


def test_compare_layers_input_errors():
    X = np.zeros((6, 3))
    with pytest.raises(ValueError, match="layers_b is empty"):
        compare_layers([X], [])
    with pytest.raises(ValueError, match="rows"):
        compare_layers([X], [np.zeros((5, 3))])
    with pytest.raises(ValueError, match="at least 4"):
        compare_layers([X[:3]], [X[:3]])
    with pytest.raises(ValueError, match="rank"):
        compare_layers([X], [X], rank=0)
