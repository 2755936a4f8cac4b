"""Tests for analysis.directions: means, directions, streaming, cosines, stability, AUC."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analysis import (
    MeanAccumulator,
    auc,
    bootstrap_stability,
    cosine,
    cosine_matrix,
    diff_of_means,
    direction_norms,
    direction_norms_by_layer,
    directions_from_means,
    held_out_layers,
    label_directions,
    label_means,
    one_vs_rest_means,
    project,
    projection_separability,
    projection_separability_layers,
    split_half_stability,
    split_half_stability_layers,
    typical_norm,
)


def planted(n_per=100, d=32, strength=3.0, seed=0):
    """Two labels; 'joy' is 'neutral' shifted by strength * a known unit direction."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    base = rng.normal(size=(n_per, d))
    target = rng.normal(size=(n_per, d)) + strength * u
    X = np.vstack([base, target])
    labels = np.array(["neutral"] * n_per + ["joy"] * n_per)
    return X, labels, u


def test_label_means_match_numpy_and_are_sorted():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 5))
    labels = rng.choice(["c", "a", "b"], size=30)
    uniq, means, counts = label_means(X, labels)
    assert uniq == ["a", "b", "c"]
    for i, lab in enumerate(uniq):
        np.testing.assert_allclose(means[i], X[labels == lab].mean(axis=0))
        assert counts[i] == np.sum(labels == lab)


def test_diff_of_means_recovers_planted_direction():
    X, labels, u = planted(n_per=200, strength=6.0)
    d = diff_of_means(X, labels, "joy", "neutral")
    assert cosine(d, u) > 0.99
    # Norm of the direction is about the planted strength.
    assert direction_norms(d)[1] == pytest.approx(6.0, rel=0.1)


def test_label_directions_covers_every_non_baseline_label():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 4))
    labels = np.repeat([0, 1, 2, 3], 10)
    dirs = label_directions(X, labels, baseline=0)
    assert list(dirs) == [1, 2, 3]
    np.testing.assert_allclose(dirs[2], X[20:30].mean(0) - X[:10].mean(0))


def test_directions_from_means_per_layer_match_diff_of_means():
    # [L, k, d] means of three layers: every layer's direction equals diff_of_means on its X.
    rng = np.random.default_rng(3)
    labels = np.repeat(["anger", "joy", "neutral"], 8)
    layers = [rng.normal(size=(24, 5)) + i for i in range(3)]
    means = np.stack([label_means(X, labels)[1] for X in layers])
    D = directions_from_means(means, ["anger", "joy", "neutral"], ["joy", "anger"], "neutral")
    assert D.shape == (3, 2, 5) and D.dtype == np.float64
    for li, X in enumerate(layers):
        np.testing.assert_allclose(D[li, 0], diff_of_means(X, labels, "joy", "neutral"))
        np.testing.assert_allclose(D[li, 1], diff_of_means(X, labels, "anger", "neutral"))
    # One layer: [k, d] -> [m, d]; float16 means are computed in float64.
    one = directions_from_means(means[0].astype(np.float16), ["a", "j", "n"], ["j"], "n")
    assert one.shape == (1, 5) and one.dtype == np.float64
    assert directions_from_means(means, ["a", "j", "n"], [], "n").shape == (3, 0, 5)


def test_directions_from_means_keeps_a_missing_label_to_its_layer():
    means = np.array([[[1.0, 2.0], [0.0, 0.0]], [[np.nan, np.nan], [1.0, 1.0]]])  # [2, 2, 2]
    D = directions_from_means(means, ["t", "b"], ["t"], "b")
    np.testing.assert_array_equal(D[0, 0], [1.0, 2.0])
    assert np.isnan(D[1, 0]).all()


def test_directions_from_means_refuses_what_it_cannot_line_up():
    means = np.zeros((4, 3, 2))
    with pytest.raises(ValueError, match="3 label rows but 2 labels"):
        directions_from_means(means, ["a", "b"], ["a"], "b")
    with pytest.raises(ValueError, match="labels repeat"):
        directions_from_means(means, ["a", "a", "b"], ["a"], "b")
    with pytest.raises(ValueError, match="target label 'z'"):
        directions_from_means(means, ["a", "b", "c"], ["z"], "b")
    with pytest.raises(ValueError, match="baseline label 'z'"):
        directions_from_means(means, ["a", "b", "c"], [], "z")
    with pytest.raises(ValueError, match="same label 'b'"):
        directions_from_means(means, ["a", "b", "c"], ["b"], "b")
    with pytest.raises(ValueError, match=r"\[\.\.\., k, d\]"):
        directions_from_means(np.zeros(3), ["a", "b", "c"], ["a"], "b")
    with pytest.raises(ValueError, match="real numbers"):
        directions_from_means(np.full((3, 2), "x"), ["a", "b", "c"], ["a"], "b")


def test_missing_labels_are_named():
    X, labels, _ = planted(n_per=5, d=3)
    with pytest.raises(
        ValueError, match=r"baseline label 'anger' not in labels \['joy', 'neutral'\]"
    ):
        diff_of_means(X, labels, "joy", "anger")
    with pytest.raises(ValueError, match="target label 'fear'"):
        diff_of_means(X, labels, "fear", "neutral")
    with pytest.raises(ValueError, match="same label 'joy'"):
        diff_of_means(X, labels, "joy", "joy")
    with pytest.raises(ValueError, match="baseline label 'x'"):
        label_directions(X, labels, "x")


def test_shape_validation():
    with pytest.raises(ValueError, match="X must be 2-D"):
        label_means(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="labels has length 3 but there are 4 rows"):
        label_means(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="nan or inf"):
        label_means(np.array([[np.inf, 0.0]]), ["a"])
    with pytest.raises(ValueError, match="dtype"):
        label_means(np.array([["a", "b"]]), ["a"])


def test_accumulator_chunks_equal_one_shot():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(503, 16)).astype(np.float32)
    labels = rng.choice(["a", "b", "c"], size=503)
    acc = MeanAccumulator()
    for start in range(0, 503, 37):
        acc.update(X[start : start + 37], labels[start : start + 37])
    uniq, means, counts = acc.means()
    X64 = X.astype(np.float64)
    assert uniq == ["a", "b", "c"]
    for i, lab in enumerate(uniq):
        np.testing.assert_allclose(means[i], X64[labels == lab].mean(0), atol=1e-12)
    _, ref_means, ref_counts = label_means(X, labels)
    np.testing.assert_allclose(means, ref_means, atol=1e-12)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(
        acc.diff_of_means("b", "a"), diff_of_means(X, labels, "b", "a"), atol=1e-12
    )
    assert acc.typical_norm() == pytest.approx(typical_norm(X))
    st = acc.stats()
    np.testing.assert_allclose(st.sum_sq_norms[0], np.sum(X64[labels == "a"] ** 2))
    _, var = acc.within_label_variance()
    ref_var = ((X64[labels == "c"] - X64[labels == "c"].mean(0)) ** 2).sum(1).mean()
    assert var[2] == pytest.approx(ref_var)


def test_accumulator_merge_equals_single_pass_and_leaves_inputs():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(100, 6))
    labels = rng.choice([1, 2, 3], size=100)
    left = MeanAccumulator().update(X[:60], labels[:60])
    right = MeanAccumulator().update(X[60:], labels[60:])
    n_left = left.n_samples
    merged = left.merge(right)
    assert left.n_samples == n_left
    whole = MeanAccumulator().update(X, labels)
    np.testing.assert_allclose(merged.stats().sums, whole.stats().sums)
    dirs_m, dirs_w = merged.label_directions(1), whole.label_directions(1)
    assert list(dirs_m) == [2, 3]
    np.testing.assert_allclose(dirs_m[3], dirs_w[3])


def test_accumulator_validation():
    acc = MeanAccumulator()
    with pytest.raises(ValueError, match="accumulator is empty"):
        acc.means()
    acc.update(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="width 4, accumulator has width 3"):
        acc.update(np.zeros((1, 4)), ["a"])
    with pytest.raises(ValueError, match="cannot merge accumulators of width 3 and 5"):
        acc.merge(MeanAccumulator(5))
    with pytest.raises(ValueError, match="target label 'z'"):
        acc.diff_of_means("z", "a")
    # An empty chunk is a no-op.
    acc.update(np.zeros((0, 3)), [])
    assert acc.n_samples == 2


def test_norms_and_typical_norm():
    l1, l2 = direction_norms([3.0, -4.0])
    assert (l1, l2) == (7.0, 5.0)
    D = np.array([[3.0, -4.0], [0.0, 0.0], [1.0, 1.0]])
    L1, L2 = direction_norms_by_layer(D)
    np.testing.assert_allclose(L1, [7.0, 0.0, 2.0])
    np.testing.assert_allclose(L2, [5.0, 0.0, np.sqrt(2.0)])
    assert typical_norm(np.array([[3.0, 4.0], [0.0, 1.0]])) == pytest.approx(3.0)


def test_cosine_matrix_handles_zero_rows():
    V = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [-3.0, 0.0]])
    C = cosine_matrix(V)
    assert not np.isnan(C).any()
    np.testing.assert_allclose(np.diag(C), [1.0, 1.0, 0.0, 1.0])
    assert C[0, 3] == pytest.approx(-1.0)
    assert C[0, 1] == pytest.approx(0.0)
    assert np.all(C[2] == 0.0) and np.all(C[:, 2] == 0.0)
    np.testing.assert_allclose(C, C.T)
    assert cosine([0.0, 0.0], [1.0, 2.0]) == 0.0
    with pytest.raises(ValueError, match="b has length 3, expected 2"):
        cosine([1.0, 0.0], [1.0, 0.0, 0.0])


def test_project_onto_unit_direction():
    X = np.array([[1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_allclose(project(X, [0.0, 5.0]), [2.0, -1.0])
    with pytest.raises(ValueError, match="all zeros"):
        project(X, [0.0, 0.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    # Few distinct values force many ties, within and across classes.
    pos = rng.integers(0, 5, size=37).astype(float)
    neg = rng.integers(0, 4, size=23).astype(float)
    y = np.r_[np.ones(37), np.zeros(23)]
    assert auc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]))


def test_auc_extremes():
    assert auc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auc([0.0], [1.0]) == 0.0
    assert auc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="scores_neg must not be empty"):
        auc([1.0], [])


def test_separability_high_on_separable_and_chance_on_noise():
    X, labels, _ = planted(n_per=100, d=20, strength=6.0)
    a, acc = projection_separability(X, labels, "joy", "neutral", seed=0)
    assert a > 0.99 and acc > 0.95
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(400, 20))
    noise_labels = np.repeat(["a", "b"], 200)
    a, acc = projection_separability(noise, noise_labels, "a", "b", seed=0)
    assert abs(a - 0.5) < 0.1 and abs(acc - 0.5) < 0.1


def test_separability_is_deterministic_and_needs_two_samples():
    X, labels, _ = planted(n_per=20, d=8, strength=1.0)
    assert projection_separability(X, labels, "joy", "neutral", seed=3) == (
        projection_separability(X, labels, "joy", "neutral", seed=3)
    )
    with pytest.raises(ValueError, match="target label 'x' has 1 sample"):
        projection_separability(np.zeros((3, 2)), ["x", "y", "y"], "x", "y")


def test_split_half_stability_signal_vs_noise():
    X, labels, _ = planted(n_per=60, d=50, strength=10.0)
    mean, std = split_half_stability(X, labels, "joy", "neutral", n_splits=20, seed=0)
    assert mean > 0.9 and std < 0.05
    rng = np.random.default_rng(6)
    noise = rng.normal(size=(120, 50))
    nl = np.repeat(["a", "b"], 60)
    mean, std = split_half_stability(noise, nl, "a", "b", n_splits=20, seed=0)
    assert abs(mean) < 0.25
    b_sig, _ = bootstrap_stability(X, labels, "joy", "neutral", n_boot=30, seed=0)
    b_noise, _ = bootstrap_stability(noise, nl, "a", "b", n_boot=30, seed=0)
    assert b_sig > 0.95 and b_noise < 0.85


def test_layer_batched_statistics_equal_one_layer_at_a_time():
    rng = np.random.default_rng(11)
    labels = np.repeat(["a", "b", "c"], [9, 12, 7])
    X = rng.normal(size=(4, len(labels), 6)).astype(np.float16)  # any dtype; layers differ
    X[:, labels == "b"] += np.arange(4)[:, None, None].astype(np.float16)
    means, stds = split_half_stability_layers(X, labels, "b", "a", n_splits=7, seed=3)
    aucs, accuracies = projection_separability_layers(X, labels, "c", "a", seed=4)
    for layer in range(4):
        assert (means[layer], stds[layer]) == pytest.approx(
            split_half_stability(X[layer], labels, "b", "a", n_splits=7, seed=3), abs=1e-12
        )
        assert (aucs[layer], accuracies[layer]) == pytest.approx(
            projection_separability(X[layer], labels, "c", "a", seed=4), abs=1e-12
        )
    with pytest.raises(ValueError, match="layers, n, d"):
        split_half_stability_layers(X[0], labels, "b", "a")
    with pytest.raises(ValueError, match="target label 'c' has 1 sample"):
        projection_separability_layers(X[:, :22], labels[:22], "c", "a")


def test_held_out_layers_equal_the_one_pair_statistics():
    rng = np.random.default_rng(12)
    labels = rng.permutation(np.repeat(["a", "b", "c", "d"], [9, 12, 7, 1]))  # interleaved
    X = rng.normal(size=(3, len(labels), 5)).astype(np.float16)
    X[:, labels == "b"] += np.arange(3)[:, None, None].astype(np.float16)
    found = held_out_layers(X, labels, ["b", "c", "d"], "a", n_splits=6, seed=2)
    rest = held_out_layers(X, labels, ["a", "b"], None, n_splits=6, seed=2)
    for layer in range(3):
        for i, target in enumerate(["b", "c"]):
            expected = split_half_stability(X[layer], labels, target, "a", 6, seed=2)
            expected += projection_separability(X[layer], labels, target, "a", seed=2)
            assert tuple(found[i, layer]) == pytest.approx(expected, abs=1e-12)
        for i, target in enumerate(["a", "b"]):  # one vs rest: the others relabelled
            relabelled = np.where(labels == target, target, "rest")
            expected = split_half_stability(X[layer], relabelled, target, "rest", 6, seed=2)
            expected += projection_separability(X[layer], relabelled, target, "rest", seed=2)
            assert tuple(rest[i, layer]) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(found[2]).all()  # "d" has one sample
    X[1, np.flatnonzero(labels == "c")[3], 2] = np.inf  # a non-finite row: nan for its label
    broken = held_out_layers(X, labels, ["b", "c"], "a", n_splits=6, seed=2)
    assert np.isnan(broken[1]).all() and np.array_equal(broken[0], found[0])


def test_stability_validation():
    X, labels, _ = planted(n_per=5, d=3)
    with pytest.raises(ValueError, match="n_splits must be >= 1, got 0"):
        split_half_stability(X, labels, "joy", "neutral", n_splits=0)
    with pytest.raises(TypeError, match="seed must be an int or numpy Generator, got 'abc'"):
        split_half_stability(X, labels, "joy", "neutral", seed="abc")


def test_float16_input():
    X, labels, u = planted(n_per=100, d=16, strength=4.0)
    X16 = X.astype(np.float16)
    d16 = diff_of_means(X16, labels, "joy", "neutral")
    assert d16.dtype == np.float64
    assert cosine(d16, u) > 0.98
    a, _ = projection_separability(X16, labels, "joy", "neutral")
    assert a > 0.95
    assert typical_norm(X16) == pytest.approx(typical_norm(X), rel=1e-3)
    overflow = np.array([[np.inf, 1.0]], dtype=np.float16)  # how float16 overflow looks
    with pytest.raises(ValueError, match="nan or inf"):
        typical_norm(overflow)


def test_one_vs_rest_baseline_is_the_mean_of_every_other_sample():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 3))
    labels = np.array(["a"] * 4 + ["b"] * 6 + ["c"] * 10)
    uniq, means, counts = label_means(X, labels)
    rest = one_vs_rest_means(means, counts)
    for j, label in enumerate(uniq):
        np.testing.assert_allclose(rest[j], X[labels != label].mean(axis=0))
    layered = np.stack([means, means + 1.0])  # [L, k, d]
    layered[1, 0] = np.nan  # label a absent in layer 1: the others' mean leaves it out
    out = one_vs_rest_means(layered, counts)
    np.testing.assert_allclose(out[1, 1], X[labels == "c"].mean(axis=0) + 1.0)
    assert out.shape == (2, 3, 3)
    with pytest.raises(ValueError, match="k >= 2"):
        one_vs_rest_means(means[:1], counts[:1])
