"""Shared fixtures: tiny models built from configs, and a tiny store made by real extraction."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny import build_store, emotion_rows, pair_rows, tiny_model_dir

HOOKS = ("resid_pre", "resid_post", "mlp_out")


def pytest_collection_modifyitems(items):
    """`embedded` and `browser` tests are `slow` too, so `-m "not slow"` leaves them out."""
    for item in items:
        if item.get_closest_marker("embedded") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: tiny_model_dir(kind, root / kind) for kind in ("llama", "gemma3", "gpt2")}


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> dict:
    """A store with emotions on tiny llama, gemma3 and gpt2, and minimal pairs (with `all`)."""
    root = tmp_path_factory.mktemp("tiny-store")
    work = tmp_path_factory.mktemp("tiny-work")
    common = {"hooks": HOOKS, "positions": ("last", "mean"), "dataset_name": "emotions"}
    run_ids = build_store(
        root,
        work,
        [
            {"kind": "llama", "rows": emotion_rows(), "name": "emo-llama", **common},
            {"kind": "gemma3", "rows": emotion_rows(), "name": "emo-gemma3", **common},
            {"kind": "gpt2", "rows": emotion_rows(), "name": "emo-gpt2", **common},
            {
                "kind": "llama",
                "rows": pair_rows(),
                "name": "pairs-llama",
                "hooks": HOOKS,
                "positions": ("last", "mean", "all"),
                "dataset_name": "minimal_pairs",
            },
        ],
    )
    return {"root": root, "run_ids": run_ids}


@pytest.fixture(scope="session")
def tiny_paired_store(tmp_path_factory) -> dict:
    """A store with one paired run (tiny llama, resid_pre and resid_post, last token) and one
    `pca_center` vector set of it: read-only for tests (copy it to damage it)."""
    from extraction.control import compute_vector_set
    from settings.vectors import VectorSettings

    root = tmp_path_factory.mktemp("tiny-paired-store")
    work = tmp_path_factory.mktemp("tiny-paired-work")
    (run_id,) = build_store(
        root,
        work,
        [{"kind": "llama", "rows": pair_rows(8), "name": "pairs-llama",
          "hooks": ("resid_pre", "resid_post"), "positions": ("last",),
          "dataset_name": "pairs"}],
    )  # fmt: skip
    set_id, _ = compute_vector_set(root, VectorSettings(run=run_id))
    return {"root": root, "run_id": run_id, "set_id": set_id, "model": work / "model-llama"}
