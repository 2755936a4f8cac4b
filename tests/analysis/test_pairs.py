"""Tests for analysis.pairs: minimal-pair differences, dimension ranking, token maps."""

import numpy as np
import pytest

from analysis import (
    DimensionStats,
    PairSums,
    dimension_consistency,
    dimension_stats,
    mean_abs_difference,
    pair_cosines,
    pair_differences,
    pair_layer,
    pair_sums,
    per_category_mean_abs,
    rank_dimensions,
    relative_difference,
    relative_projection,
    sign_agreement_chance,
    token_difference_map,
)


def test_differences_and_magnitudes():
    A = np.array([[1.0, 0.0], [0.0, 2.0]])
    B = np.array([[1.0, 3.0], [0.0, 0.0]])
    np.testing.assert_array_equal(pair_differences(A, B), [[0.0, 3.0], [0.0, -2.0]])
    assert mean_abs_difference(A, B) == pytest.approx(5.0 / 4.0)
    # mean ||B-A|| = 2.5; mean of (||A||+||B||)/2 = ((1+sqrt(10))/2 + (2+0)/2)/2
    expected = 2.5 / (((1 + np.sqrt(10)) / 2 + 1.0) / 2)
    assert relative_difference(A, B) == pytest.approx(expected)
    assert relative_difference(np.zeros((2, 3)), np.zeros((2, 3))) == 0.0


def test_relative_difference_is_scale_free():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(10, 4)), rng.normal(size=(10, 4))
    assert relative_difference(100 * A, 100 * B) == pytest.approx(relative_difference(A, B))
    assert relative_difference(A, A) == 0.0


def test_per_category_mean_abs():
    A = np.zeros((4, 2))
    B = np.array([[1.0, 1.0], [3.0, 3.0], [0.0, 2.0], [0.0, 0.0]])
    out = per_category_mean_abs(A, B, ["noun", "noun", "verb", "adj"])
    assert out == {"adj": 0.0, "noun": 2.0, "verb": 1.0}
    with pytest.raises(ValueError, match="categories has length 3 but there are 4 rows"):
        per_category_mean_abs(A, B, ["a", "b", "c"])


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="same shape, got 3x2 and 3x4"):
        pair_differences(np.zeros((3, 2)), np.zeros((3, 4)))


def test_dimension_consistency_finds_planted_dimensions():
    rng = np.random.default_rng(1)
    p, d = 80, 30
    A = rng.normal(size=(p, d)) * np.linspace(1.0, 5.0, d)
    B = A + 0.05 * rng.normal(size=(p, d))
    B[:, 7] += 2.0  # consistent, large relative to its spread
    B[:, 29] += rng.choice([-3.0, 3.0], size=p)  # big change but the dimension varies a lot
    B[:, 12] = A[:, 12]  # untouched
    stats = dimension_consistency(A, B)
    assert isinstance(stats, DimensionStats)
    assert stats.mean_abs.shape == stats.std.shape == stats.score.shape == (d,)
    idx, vals = rank_dimensions(stats, k=2, largest=True)
    assert idx.tolist() == [7, 29]
    assert vals[0] >= vals[1]
    low_idx, low_vals = rank_dimensions(stats, k=1, largest=False)
    assert low_idx.tolist() == [12] and low_vals[0] == 0.0
    assert rank_dimensions(stats, k=100)[0].shape == (d,)


def test_dimension_consistency_constant_dimensions():
    A = np.array([[1.0, 5.0, 0.0], [2.0, 5.0, 0.0]])
    B = np.array([[1.0, 6.0, 0.0], [2.0, 6.0, 0.0]])
    stats = dimension_consistency(A, B)
    assert stats.score[1] == np.inf
    assert stats.score[2] == 0.0 and stats.score[0] == 0.0
    assert rank_dimensions(stats, k=1)[0].tolist() == [1]


def test_dimension_consistency_validation():
    with pytest.raises(ValueError, match="A needs at least 2 row"):
        dimension_consistency(np.zeros((1, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        rank_dimensions(dimension_consistency(np.eye(3), np.eye(3)[::-1]), k=0)
    with pytest.raises(TypeError, match="stats must be a DimensionStats"):
        rank_dimensions(np.zeros(3))


def test_token_difference_map():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(3, 5, 4)).astype(np.float16)
    B = A.copy()
    B[1, 2] += np.float16(2.0)
    M = token_difference_map(A, B)
    assert M.shape == (3, 5) and M.dtype == np.float64
    expected = np.zeros((3, 5))
    expected[1, 2] = 4.0  # ||(2, 2, 2, 2)||
    np.testing.assert_allclose(M, expected, atol=1e-2)
    with pytest.raises(
        ValueError, match=r"same \[L, t, d\] shape, got \(3, 5, 4\) and \(3, 6, 4\)"
    ):
        token_difference_map(A, np.zeros((3, 6, 4)))
    with pytest.raises(ValueError, match="A must be 3-D"):
        token_difference_map(np.zeros((5, 4)), np.zeros((5, 4)))


def test_float16_pairs():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(20, 8))
    B = A + 1.0
    assert mean_abs_difference(A.astype(np.float16), B.astype(np.float16)) == pytest.approx(
        1.0, abs=1e-2
    )


def test_pair_cosines():
    A = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    B = np.array([[0.0, 3.0], [2.0, 2.0], [1.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(pair_cosines(A, B), [0.0, 1.0, 0.0, -1.0])
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    expected = [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(X, Y, strict=True)]
    np.testing.assert_allclose(pair_cosines(X, 3.0 * Y), expected)
    with pytest.raises(ValueError, match="aligned pairs of the same shape"):
        pair_cosines(X, Y[:4])
    with pytest.raises(ValueError, match="A contains nan or inf"):
        pair_cosines(np.full((1, 2), np.inf), np.ones((1, 2)))


# -- signed change, sign agreement and sums over groups -----------------------------------------
def test_signed_change_and_sign_agreement_on_constructed_pairs():
    A = np.zeros((4, 3))
    # dim 0: every pair +1; dim 1: three pairs +2, one -6 (mean 0, two signs);
    # dim 2: one pair +4, three -1 (mean +0.25: only one pair has the mean's sign).
    B = np.array([[1, 2, 4], [1, 2, -1], [1, 2, -1], [1, -6, -1]], float)
    stats = dimension_consistency(A, B)
    np.testing.assert_allclose(stats.mean_change, [1.0, 0.0, 0.25])
    np.testing.assert_allclose(stats.agreement, [1.0, 0.0, 0.25])
    np.testing.assert_allclose(stats.mean_abs, [1.0, 3.0, 1.75])  # unsigned beside signed


def test_sums_over_groups_give_the_statistics_of_their_union():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(12, 5)) * [1, 10, 0.1, 1, 1] + [0, 50, 0, -3, 0]
    B = A + rng.normal(size=(12, 5))
    groups = np.array([0, 1, 2] * 4)
    sums = pair_sums(A, B, groups, n_groups=4)  # group 3 has no pair
    assert sums.n.tolist() == [4, 4, 4, 0]
    whole, direct = dimension_stats(sums.total()), dimension_consistency(A, B)
    for field in ("mean_abs", "std", "score", "mean_change", "agreement"):
        np.testing.assert_allclose(getattr(whole, field), getattr(direct, field), rtol=1e-9)
    union = dimension_stats(sums.take([0, 2]).total())
    direct = dimension_consistency(A[groups != 1], B[groups != 1])
    np.testing.assert_allclose(union.score, direct.score, rtol=1e-9)
    np.testing.assert_allclose(union.agreement, direct.agreement)
    assert np.isnan(dimension_stats(sums).score[3]).all()  # an empty group says nothing
    layered = PairSums.stack([sums, sums])  # [L=2, g, d]
    assert dimension_stats(layered.take([0, 1], axis=1).total(axis=1)).score.shape == (2, 5)


def test_sums_keep_constant_dimensions_exact():
    A = np.tile([3.0, 7.0], (5, 1))
    B = A + [0.0, 1.0]
    stats = dimension_stats(pair_sums(A, B, np.zeros(5, int), 1).total())
    assert stats.score.tolist() == [0.0, np.inf]


def test_pair_sums_validation():
    A = np.zeros((3, 2))
    with pytest.raises(ValueError, match="groups must lie in 0..1"):
        pair_sums(A, A, np.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="integers"):
        pair_sums(A, A, np.array([0.0, 1.0, 1.0]), 2)


def test_pair_layer_equals_each_statistic_computed_on_its_own():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(9, 6)).astype(np.float16)
    B = (A + rng.normal(size=(9, 6))).astype(np.float16)
    B[:, 2] = A[:, 2]  # a dimension the edit leaves alone
    groups = np.array([0, 1, 1, 0, 2, 2, 0, 1, 0])
    found = pair_layer(A, B, groups, 3)
    direct, sums = dimension_consistency(A, B), pair_sums(A, B, groups, 3)
    for field in ("mean_abs", "std", "score", "mean_change", "agreement"):
        np.testing.assert_array_equal(getattr(found.stats, field), getattr(direct, field))
    for field in ("n", "abs_diff", "diff", "positive", "negative", "a", "a_sq", "b", "b_sq"):
        np.testing.assert_array_equal(getattr(found.sums, field), getattr(sums, field))
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    np.testing.assert_array_equal(found.distance, np.linalg.norm(B64 - A64, axis=1))
    np.testing.assert_array_equal(found.pair_abs, np.abs(B64 - A64).mean(axis=1))
    scale = 0.5 * (np.linalg.norm(A64, axis=1) + np.linalg.norm(B64, axis=1))
    np.testing.assert_array_equal(found.scale, scale)
    with pytest.raises(ValueError, match="groups must lie in 0..1"):
        pair_layer(A, B, groups, 2)
    with pytest.raises(ValueError, match="at least 2"):
        pair_layer(A[:1], B[:1], groups[:1], 3)


def test_sign_agreement_chance():
    assert sign_agreement_chance(1) == 1.0
    assert sign_agreement_chance(2) == pytest.approx(0.75)
    assert sign_agreement_chance(3) == pytest.approx(0.75)  # 3/3 w.p. 1/4, 2/3 w.p. 3/4
    assert sign_agreement_chance(400) == pytest.approx(0.5 + 0.4 / 20, abs=0.002)
    rng = np.random.default_rng(0)
    flips = rng.integers(0, 2, size=(20000, 9)).sum(axis=1)
    simulated = np.maximum(flips, 9 - flips).mean() / 9
    assert sign_agreement_chance(9) == pytest.approx(simulated, abs=0.005)


def test_relative_projection_puts_baseline_at_0_and_target_at_1():
    rng = np.random.default_rng(1)
    base, target = rng.normal(size=(30, 4)) + 100.0, rng.normal(size=(20, 4)) + 103.0
    origin = base.mean(axis=0)
    v = target.mean(axis=0) - origin
    assert relative_projection(base, origin, v).mean() == pytest.approx(0.0, abs=1e-9)
    assert relative_projection(target, origin, v).mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="all zeros"):
        relative_projection(base, origin, np.zeros(4))
