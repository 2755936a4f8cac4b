"""Control vectors (RepE) from paired states: one unit direction per layer, sign aligned.

Given the states of two styles of the same contents (pair i: ``A[i]`` in the first style,
``B[i]`` in the second), the paired differences are ``D = B - A`` and a layer's control vector is
one of three directions of D, named and defined as in repeng's ``read_representations``:

* ``pca_center``: repeng subtracts each pair's midpoint from both of its states and fits a PCA to
  those rows, ``(A - B) / 2`` and ``(B - A) / 2``. Their mean is zero, so this is the first
  principal axis of D *about the origin* (uncentred): the shared offset of the differences stays.
* ``pca_diff``: repeng fits a PCA (which centres) to D: the first principal axis of D about its
  mean, i.e. the direction along which the pairs *disagree* most. It can be nearly orthogonal to
  the mean difference.
* ``mean_diff``: the mean of D, normalised (difference of means).

Sign, as repeng: project both states of every pair onto the direction and flip it when the first
style projects higher than the second for more pairs than the other way round (a tie is broken by
the mean projection), so the vector points from the first style to the second.

Per layer this module reports, besides the unit vector:

* ``explained_variance``: the share of D's spread along the vector. For the PCA methods it is
  what scikit-learn's ``explained_variance_ratio_[0]`` gives on repeng's input (uncentred
  second moment for ``pca_center``, variance for ``pca_diff``); for ``mean_diff`` the share of the
  uncentred second moment, comparable with ``pca_center``.
* ``raw_norm``: the mean paired difference along the vector, ``mean(D @ v)``, in activation
  units. For ``mean_diff`` it is the norm of the mean difference, negative when the sign rule
  turned the vector against the mean (a few large pairs outweighing most pairs). The vector
  itself is unit.
* ``sign_agreement``: the fraction of pairs whose second state projects higher than the first.

Shapes: A, B [n, d] per layer or [L, n, d] for ``control_vectors``. Results are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_float_matrix, check_seed
from .decomposition import _top_axes

__all__ = [
    "METHODS",
    "ControlVectors",
    "LayerVector",
    "control_vectors",
    "layer_vector",
    "paired_differences",
    "random_unit_vectors",
    "sign_agreement",
]

METHODS = ("pca_center", "pca_diff", "mean_diff")


@dataclass(frozen=True)
class LayerVector:
    """The control vector of one layer: unit ``vector`` [d] and its three figures."""

    vector: np.ndarray
    raw_norm: float
    explained_variance: float
    sign_agreement: float


@dataclass(frozen=True)
class ControlVectors:
    """Control vectors of several layers: vectors [L, d] (unit rows) and figures [L] each."""

    vectors: np.ndarray
    raw_norm: np.ndarray
    explained_variance: np.ndarray
    sign_agreement: np.ndarray


def paired_differences(A, B) -> np.ndarray:
    """D = B - A for states A, B: [n, d] of the same n pairs (row i of each is pair i)."""
    A = as_float_matrix(A, "A")
    B = as_float_matrix(B, "B")
    if A.shape != B.shape:
        raise ValueError(f"A has shape {A.shape} but B has shape {B.shape}: pairs must line up")
    return B - A


def sign_agreement(D, vector) -> float:
    """Fraction of pairs whose difference projects positively on ``vector``. D: [n, d], v: [d]."""
    return float(np.mean(np.asarray(D) @ np.asarray(vector) > 0.0))


def _aligned(D: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``v`` or ``-v``: the second style must project higher for most pairs (repeng's rule)."""
    projections = D @ v
    higher, lower = int(np.sum(projections > 0.0)), int(np.sum(projections < 0.0))
    if lower > higher or (lower == higher and projections.mean() < 0.0):
        return -v
    return v


def layer_vector(A, B, method: str) -> LayerVector:
    """The control vector of one layer from paired states A, B: [n, d] (n >= 2 pairs)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    D = paired_differences(A, B)
    if D.shape[0] < 2:
        raise ValueError(f"need at least 2 pairs, got {D.shape[0]}")
    second_moment = float(np.einsum("ij,ij->", D, D))
    if second_moment == 0.0:
        raise ValueError("every pair has identical states: there is no direction to find")
    if method == "mean_diff":
        mean = D.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm == 0.0:
            raise ValueError("the paired differences average to zero: mean_diff is undefined")
        v = mean / norm
        explained = float(np.sum((D @ v) ** 2) / second_moment)
    else:
        fitted = D - D.mean(axis=0) if method == "pca_diff" else D
        total = float(np.einsum("ij,ij->", fitted, fitted))
        if total == 0.0:  # pca_diff of identical differences: no variance to explain
            raise ValueError("the paired differences are all equal: pca_diff is undefined")
        S, Vt = _top_axes(fitted, 1, "auto")
        v = Vt[0]
        explained = float(S[0] ** 2 / total)
    v = _aligned(D, v)
    return LayerVector(
        vector=v,
        raw_norm=float((D @ v).mean()),
        explained_variance=explained,
        sign_agreement=sign_agreement(D, v),
    )


def control_vectors(A, B, method: str, layer_names=None) -> ControlVectors:
    """Control vectors of every layer. A, B: [L, n, d] paired states (row i = pair i).

    layer_names: [L] what to call each layer in an error (default 0..L-1).
    """
    A, B = np.asarray(A), np.asarray(B)
    if A.ndim != 3 or A.shape != B.shape:
        raise ValueError(f"A and B must both be [L, n, d], got {A.shape} and {B.shape}")
    names = list(range(A.shape[0])) if layer_names is None else list(layer_names)
    layers = []
    for i, name in enumerate(names):
        try:
            layers.append(layer_vector(A[i], B[i], method))
        except ValueError as exc:
            raise ValueError(f"layer {name}: {exc}") from None
    return ControlVectors(
        vectors=np.stack([lv.vector for lv in layers]),
        raw_norm=np.array([lv.raw_norm for lv in layers]),
        explained_variance=np.array([lv.explained_variance for lv in layers]),
        sign_agreement=np.array([lv.sign_agreement for lv in layers]),
    )


def random_unit_vectors(n: int, d: int, seed) -> np.ndarray:
    """n random directions, uniform on the sphere in d dimensions: [n, d] unit rows.

    The control of a steering experiment: in high dimensions a random direction is nearly
    orthogonal to any direction the model uses, so adding it with the same norm shows what an
    addition of that size does by itself.
    """
    rng = check_seed(seed)
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)
