"""Shared input validation and small numeric helpers for the analysis package.

Private module: the public functions in ``directions``, ``decomposition``, ``similarity`` and
``pairs`` call these so every one of them rejects bad input the same way: a ``ValueError`` naming
the offending argument and value, or a ``TypeError`` (also naming it) when an argument is not even
the right kind of object, e.g. ``seed="abc"`` or ``k=2.5``.

Caveats: ``as_float_matrix`` copies its input to float64. Functions that must cope with very
large inputs (``label_means``, ``typical_norm``) avoid it and work in row chunks instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Rows converted to float64 at a time by the chunked helpers; 8192 x 4096 float64 is 256 MiB.
CHUNK_ROWS = 8192


def _describe_shape(a: np.ndarray) -> str:
    return "x".join(str(s) for s in a.shape) or "scalar"


def check_numeric(a: np.ndarray, name: str) -> None:
    """Raise unless ``a`` holds real numbers (bool, complex and object arrays are refused)."""
    if a.dtype == bool or not (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    ):
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")


def as_matrix(X, name: str, min_rows: int = 1) -> np.ndarray:
    """Validate a 2-D numeric array without copying or converting it.

    X: [n, d] with n >= min_rows and d >= 1. Returns ``np.asarray(X)``.
    """
    a = np.asarray(X)
    check_numeric(a, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {_describe_shape(a)}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got {a.shape[0]}")
    if a.shape[1] < 1:
        raise ValueError(f"{name} needs at least 1 column, got shape {_describe_shape(a)}")
    return a


def require_finite(a: np.ndarray, name: str) -> None:
    """Raise if ``a`` contains nan or inf (float16 overflow shows up as inf)."""
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains nan or inf values")


def as_float_matrix(X, name: str, min_rows: int = 1) -> np.ndarray:
    """Validate and copy a 2-D numeric array to float64. X: [n, d] -> [n, d] float64."""
    a = as_matrix(X, name, min_rows=min_rows).astype(np.float64, copy=True)
    require_finite(a, name)
    return a


def as_float_vector(v, name: str, length: int | None = None) -> np.ndarray:
    """Validate and copy a 1-D numeric array to float64. v: [d] -> [d] float64."""
    a = np.asarray(v)
    check_numeric(a, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {_describe_shape(a)}")
    if a.shape[0] < 1:
        raise ValueError(f"{name} must not be empty")
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} has length {a.shape[0]}, expected {length}")
    a = a.astype(np.float64, copy=True)
    require_finite(a, name)
    return a


def as_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    """Validate a 1-D label array aligned with n rows. labels: [n] -> [n]."""
    a = np.asarray(labels)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {_describe_shape(a)}")
    if a.shape[0] != n:
        raise ValueError(f"{name} has length {a.shape[0]} but there are {n} rows")
    return a


def require_label(value, present: Sequence, role: str) -> None:
    """Raise unless ``value`` is one of ``present`` (python-native label values)."""
    if value not in present:
        raise ValueError(f"{role} label {value!r} not in labels {list(present)!r}")


def check_seed(seed) -> np.random.Generator:
    """Turn a seed into a numpy Generator; ints and Generators are accepted."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Raise unless ``value`` is an int >= minimum; returns it as a python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (as scipy's ``method='average'``).

    x: [n] -> [n] float64.
    """
    x = np.asarray(x)
    n = x.shape[0]
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # A new tie group starts wherever the sorted value changes.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], n] - 1
    group_rank = (starts + ends) / 2.0 + 1.0
    group_of_sorted = np.repeat(np.arange(starts.shape[0]), ends - starts + 1)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = group_rank[group_of_sorted]
    return ranks


def row_norms(X: np.ndarray) -> np.ndarray:
    """L2 norm of every row, computed in float64 a chunk of rows at a time. X: [n, d] -> [n]."""
    out = np.empty(X.shape[0], dtype=np.float64)
    for start in range(0, X.shape[0], CHUNK_ROWS):
        chunk = np.asarray(X[start : start + CHUNK_ROWS], dtype=np.float64)
        out[start : start + chunk.shape[0]] = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
    return out
