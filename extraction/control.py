"""`python -m extraction vectors`: control vectors from a paired run, stored as a vector set.

Reads a committed run of a paired dataset (every `pair_id` has one side `a` and one side `b`,
e.g. the built-in `style_pairs`: `a` plain, `b` slangy) at its last token, per layer, and
computes one control vector per layer with `analysis.control` (repeng's `pca_center`,
`pca_diff` or `mean_diff`; sign so that side b projects higher for most pairs), plus each
layer's typical residual norm (the steering scale). The result is a new vector set
(`store.vectorsets`) with its provenance.

No torch: this imports numpy, pyarrow and the store only, so it runs anywhere the app does and
finishes in about a second. Asking again for a set that exists (same run, method, hook and
layers) returns the existing one unless a new id is given.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import control_vectors
from extraction.provenance import code_version, light_versions
from settings.run import describe_layers, new_run_id, resolve_layers, validate_run_id
from settings.vectors import VectorSettings
from store import open_store
from store.fs import is_uri
from store.vectorsets import VectorSetManifest, write_vector_set


def pair_rows(samples: pd.DataFrame, run_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (into the run's samples, in sample order) of side a and side b per pair.

    ValueError naming the problem when the run is not of a paired dataset.
    """
    if "pair_id" not in samples or "side" not in samples:
        raise ValueError(f"run {run_id!r} is not of a paired dataset (no pair_id and side)")
    rows: dict[str, dict[str, int]] = {}
    for row, (pair, side) in enumerate(zip(samples["pair_id"], samples["side"], strict=True)):
        if isinstance(pair, str) and pair and side in ("a", "b"):
            rows.setdefault(pair, {})[side] = row
    complete = [(sides["a"], sides["b"]) for sides in rows.values() if len(sides) == 2]
    if not complete:
        raise ValueError(f"run {run_id!r} is not of a paired dataset (no pair_id with sides a, b)")
    if len(complete) < 2:
        raise ValueError(f"run {run_id!r} has 1 complete pair; control vectors need at least 2")
    first, second = zip(*complete, strict=True)
    return np.asarray(first), np.asarray(second)


def _common_label(samples: pd.DataFrame, rows: np.ndarray, side: str) -> str:
    labels = [str(x) for x in samples["label"].to_numpy()[rows] if isinstance(x, str) and x]
    return Counter(labels).most_common(1)[0][0] if labels else f"side {side}"


def _existing(store, settings: VectorSettings, run_id: str, layers: tuple[int, ...]) -> str | None:
    wanted = (run_id, settings.method, settings.hook, layers)
    for m in store.vector_sets():
        if (m.run_id, m.method, m.hook, m.layers) == wanted:
            return m.set_id
    return None


def compute_vector_set(
    store_root: str | Path, settings: VectorSettings, set_id: str | None = None
) -> tuple[str, bool]:
    """Compute and store a vector set; returns (set id, whether it was made now).

    `set_id` presets the id (the app's job registry knows it up front); without it an existing
    set with the same run, method, hook and layers is returned instead of a new one.
    """
    store = open_store(store_root)
    run_id = store.resolve_run_id(settings.run)
    run = store.manifest(run_id)
    if settings.hook not in run.hooks:
        raise ValueError(
            f"run {run_id!r} has no hook {settings.hook!r}; it has {', '.join(run.hooks)}"
        )
    if "last" not in run.positions:
        raise ValueError(f"run {run_id!r} has no 'last' position: rerun it with --positions last")
    # `all`: every layer the run has (which may be fewer than the model's)
    layers = (
        run.layers if settings.layers == "all" else resolve_layers(settings.layers, run.n_layers)
    )
    missing = [layer for layer in layers if layer not in run.layers]
    if missing:
        raise ValueError(
            f"run {run_id!r} has no layers {describe_layers(missing)}; it has "
            f"{describe_layers(run.layers)}"
        )
    if set_id is None:
        found = _existing(store, settings, run_id, layers)
        if found:
            return found, False
    open_store(store_root, writable=True)  # before the work: a read-only store fails here
    samples = store.samples(run_id)
    first, second = pair_rows(samples, run_id)
    X, _, layers_read = store.layer_vectors(run_id, settings.hook, "last", layers)
    result = control_vectors(X[:, first], X[:, second], settings.method, layers_read)
    both = np.concatenate([first, second])
    typical = np.linalg.norm(X[:, both].astype(np.float64), axis=2).mean(axis=1)
    base = settings.name or f"{settings.method}-{run.name}"
    set_id = validate_run_id(set_id) if set_id else new_run_id(base)
    manifest = VectorSetManifest(
        set_id=set_id,
        name=settings.name or set_id,
        run_id=run_id,
        model=run.model,
        architecture=run.architecture,
        weights_sha256=run.weights_sha256,
        n_layers=run.n_layers,
        d_model=run.d_model,
        hook=settings.hook,
        method=settings.method,
        layers=tuple(layers_read),
        dataset_name=run.dataset_name,
        dataset_sha256=run.dataset_sha256,
        n_pairs=len(first),
        first_label=_common_label(samples, first, "a"),
        second_label=_common_label(samples, second, "b"),
        code_version=code_version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        versions=light_versions(),
    )
    figures = {
        "raw_norm": result.raw_norm,
        "explained_variance": result.explained_variance,
        "sign_agreement": result.sign_agreement,
        "typical_norm": typical,
    }
    write_vector_set(store_root if is_uri(store_root) else Path(store_root), manifest,
                     result.vectors, figures)  # fmt: skip
    return set_id, True
