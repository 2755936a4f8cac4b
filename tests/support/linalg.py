"""Small linear-algebra helpers shared by the analysis tests."""

from __future__ import annotations

import numpy as np


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A random [d, d] orthogonal matrix."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    # Fixing the signs by diag(r) makes q Haar-distributed rather than biased.
    return q * np.sign(np.diag(r))
