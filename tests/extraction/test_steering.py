"""Steering hooks on tiny Llama, Gemma 3 and GPT-2 models: strength 0 is the baseline bit for
bit, hooks leave with an error, resid_pre[L+1] is resid_post[L], and the batched three-way
generation matches one row at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extraction.architectures import architecture_for, decoder_blocks
from extraction.steering import (
    added_to_residual,
    check_model,
    generate_rows,
    plan_for,
    prompt_ids,
    steer,
)
from settings.vectors import SteerSettings
from store.vectorsets import VectorSet, VectorSetManifest
from tests.support.tiny import _tokenizer, tiny_model

KINDS = ("llama", "gemma3", "gpt2")


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    return tiny_model(request.param).eval()


def _vector_set(model, hook="resid_post", seed=0) -> VectorSet:
    n_layers = len(decoder_blocks(model, architecture_for(model)))
    d = model.config.hidden_size
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_layers, d))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    manifest = VectorSetManifest(
        set_id="test-set", name="test-set", run_id="test-run", model="tiny",
        architecture=model.config.model_type, weights_sha256="x", n_layers=n_layers, d_model=d,
        hook=hook, method="pca_center", layers=tuple(range(n_layers)), dataset_name="pairs",
        dataset_sha256="y", n_pairs=4, first_label="plain", second_label="slangy",
    )  # fmt: skip
    ones = np.ones(n_layers)
    return VectorSet(manifest, manifest.layers, vectors.astype(np.float32), ones, ones * 0.5,
                     ones, ones * 2.0)  # fmt: skip


def _no_hooks_left(model) -> bool:
    return all(
        not module._forward_hooks and not module._forward_pre_hooks for module in model.modules()
    )


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits


@pytest.mark.slow  # seconds: generates with and without hooks
def test_strength_zero_reproduces_the_baseline_exactly(model, tokenizer):
    ids = prompt_ids(tokenizer, "The cat sat on the mat.")
    plain = _logits(model, ids)
    plan = plan_for(_vector_set(model), "all", 0.0, seed=1)
    with added_to_residual(model, "resid_post", plan.additions(("steered",))):
        steered = _logits(model, ids)
    assert torch.equal(plain, steered)
    result = steer(model, tokenizer, _vector_set(model),
                   SteerSettings(prompt="hello", vector_set="test-set", strength=0.0,
                                 max_new_tokens=6))  # fmt: skip
    alone = generate_rows(model, tokenizer, prompt_ids(tokenizer, "hello"), 1, 6)[0]
    assert result.answers["baseline"] == tokenizer.decode(alone, skip_special_tokens=True)
    assert len(set(result.answers.values())) == 1  # steered and control equal the baseline
    assert _no_hooks_left(model)


def test_a_strong_vector_changes_the_logits_and_the_control_has_its_norm(model, tokenizer):
    ids = prompt_ids(tokenizer, "The cat sat on the mat.")
    vector_set = _vector_set(model)
    plan = plan_for(vector_set, "1", 4.0, seed=1)
    np.testing.assert_allclose(np.linalg.norm(plan.steered, axis=1), 4.0 * 2.0)
    np.testing.assert_allclose(np.linalg.norm(plan.control, axis=1), 4.0 * 2.0)
    plain = _logits(model, ids)
    for variant in ("steered", "control"):
        with added_to_residual(model, "resid_post", plan.additions((variant,))):
            assert not torch.allclose(_logits(model, ids), plain)


def test_resid_pre_of_the_next_layer_is_resid_post_of_this_one(model, tokenizer):
    ids = prompt_ids(tokenizer, "Steering hooks agree.")
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with added_to_residual(model, "resid_post", {0: vector}):
        post = _logits(model, ids)
    with added_to_residual(model, "resid_pre", {1: vector}):
        pre = _logits(model, ids)
    torch.testing.assert_close(post, pre, rtol=1e-5, atol=1e-5)


def test_hooks_are_gone_after_an_error_inside_generation(model, tokenizer):
    plan = plan_for(_vector_set(model), "all", 1.0, seed=0)
    too_big = torch.tensor([[model.config.vocab_size + 5]])  # an embedding lookup that fails
    with pytest.raises(IndexError), added_to_residual(model, "resid_post", plan.additions()):
        model.generate(input_ids=too_big, max_new_tokens=3, do_sample=False)
    assert _no_hooks_left(model)
    with pytest.raises(RuntimeError, match="boom"), added_to_residual(model, "resid_pre",
                                                                     plan.additions()):  # fmt: skip
        raise RuntimeError("boom")
    assert _no_hooks_left(model)


@pytest.mark.slow  # seconds: every row generated alone too
def test_batched_rows_equal_one_row_at_a_time(model, tokenizer):
    vector_set = _vector_set(model)
    request = SteerSettings(prompt="Good morning", vector_set="test-set", layers="0,1",
                            strength=3.0, max_new_tokens=5, seed=7)  # fmt: skip
    result = steer(model, tokenizer, vector_set, request)
    plan = plan_for(vector_set, "0,1", 3.0, seed=7)
    ids = prompt_ids(tokenizer, "Good morning")
    for variant in ("steered", "control"):
        with added_to_residual(model, "resid_post", plan.additions((variant,))):
            alone = generate_rows(model, tokenizer, ids, 1, 5)[0]
        assert result.answers[variant] == tokenizer.decode(alone, skip_special_tokens=True)
    assert result.layers == (0, 1) and result.strength == 3.0


def test_plans_and_models_that_do_not_fit_are_refused(model):
    vector_set = _vector_set(model)
    partial = VectorSet(
        vector_set.manifest.__class__(**{**vector_set.manifest.__dict__, "layers": (0, 1)}),
        (0, 1), vector_set.vectors[:2], *(np.ones(2),) * 4,
    )  # fmt: skip
    with pytest.raises(ValueError, match="has no layers 2"):
        plan_for(partial, "2", 1.0, seed=0)
    with pytest.raises(ValueError, match="out of range"):
        plan_for(partial, "99", 1.0, seed=0)
    other = tiny_model("gpt2" if model.config.model_type != "gpt2" else "llama")
    with pytest.raises(ValueError, match="this model has"):
        check_model(vector_set, other)
    hooks = added_to_residual(model, "mlp_out", {})
    with pytest.raises(ValueError, match="cannot steer at 'mlp_out'"), hooks:
        pass
