"""The default SAE on the real SmolLM2: trained on its own stored activations, it must beat the
best linear code of its size on records it never saw.

The threshold: an SAE with k = 32 active features per token reconstructs each token from 32
directions of its dictionary. The best reconstruction from any fixed 32 directions is PCA's
(the top 32 principal components of the training tokens). A k-sparse code that cannot beat it
on held-out tokens has learned nothing that a linear projection would not, so the explained
variance of held-out records must exceed PCA-32's on the same records (measured here, ~0.49),
and 0.5. Measured: the default SAE (all 120 records, 15 passes, 143 steps) reaches ~0.65; to keep
within its time budget this test trains the default settings on half the records for half the
default number of tokens (49 steps), which reached 0.6 when measured.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from extraction.datasets import builtin_dir
from extraction.runner import execute
from extraction.sae import defaults
from extraction.sae.train import plan_training, train
from settings.sae import TrainSaeSettings, default_training_tokens
from store import open_store

pytestmark = [pytest.mark.embedded, pytest.mark.slow]


def _split_tokens(store, plan):
    train_rows, held_rows = [], []
    heldout = np.fromiter(plan.heldout, np.int64)
    for sample_idx, token_idx, X in store.iter_token_vectors(plan.run.run_id, "resid_post", 15):
        keep = token_idx > 0
        held = np.isin(sample_idx, heldout) & keep
        train_rows.append(X[keep & ~held])
        held_rows.append(X[held])
    return np.concatenate(train_rows), np.concatenate(held_rows)


def _pca_explained_variance(train_x: np.ndarray, test_x: np.ndarray, k: int) -> float:
    mean = train_x.mean(0)
    _, _, vt = np.linalg.svd(train_x - mean, full_matrices=False)
    basis = vt[:k]
    recon = (test_x - mean) @ basis.T @ basis + mean
    return 1 - ((recon - test_x) ** 2).sum() / ((test_x - test_x.mean(0)) ** 2).sum()


def test_default_sae_on_smollm2_beats_the_best_linear_code_of_its_size(tmp_path):
    root = tmp_path / "store"
    lines = (builtin_dir() / "prompt_responses.jsonl").read_text().splitlines()[:60]
    subset = tmp_path / "prompt_responses.jsonl"  # half the records, every label
    subset.write_text("\n".join(lines) + "\n")
    config = replace(defaults.run_settings(), dataset=str(subset))
    run = execute(config, root, progress=False).manifest
    store = open_store(root)
    run_tokens = plan_training(TrainSaeSettings(run=run.run_id, layer=15), store).train_tokens
    half = default_training_tokens(run_tokens) // 2
    settings = TrainSaeSettings(run=run.run_id, layer=defaults.SAE_LAYER, training_tokens=half)
    plan = plan_training(settings, store)
    card = train(plan, store, progress=False).card
    pca = _pca_explained_variance(*_split_tokens(store, plan), k=settings.k)
    explained = card.metrics["explained_variance"]
    assert 0.4 < pca < 0.6, pca  # the baseline itself, measured on these records
    assert explained > max(pca, 0.5), (explained, pca)
    assert card.metrics["l0"] == pytest.approx(settings.k)
    assert card.metrics["dead_share"] < 0.5
