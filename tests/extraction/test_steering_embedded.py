"""Steering the real SmolLM2-135M with a style vector from the built-in pairs, against
same-norm random controls; and the real model's readout.

The vector is fitted on the first 24 of the 60 built-in style pairs (`a` plain, `b` slangy) with
`python -m extraction vectors`' own code, at layers 6-12 (`pca_center`, last token,
`resid_post`), and added at those seven layers with strength 0.1 (each layer's addition is 0.1
times that layer's typical residual norm). A control adds, at each layer, a random unit
direction with the same norm (seeds 0-5: six controls). The prompts are four neutral sentence
starts, none of them from the pairs.

Measured here (CPU, float32; greedy and seeded, so the numbers repeat): KL(steered || baseline)
of the next token is 0.35-0.83 nats per prompt, 0.67 on average; the six controls average
0.23-0.38 (0.29 over all six). The test asks for at least 1.5 times the largest control and at
least 2 times their average (measured: 1.8 and 2.3). Why this threshold: a control of the same
norm at the same layers measures what any push of that size does to these prompts, so it is the
right yardstick, and it varies a lot from one random direction to the next (at strength 0.2 the
ratio to single seeds spans 1.2-4.0). Beating all six draws is what a direction with no special
meaning does with probability 1/7; the margins on top make a chance pass less likely still,
while staying below what was measured, so a different BLAS does not flip the result.

Caveats, said plainly. Part of the ratio is geometry, not meaning: the style vectors of
neighbouring layers point alike, so seven additions add up, while seven independent random
directions add in quadrature; and a random direction at one layer moves SmolLM2 *more* than the
style vector (its residual states carry much of their norm in a few massive-activation
dimensions, where the style vector also puts weight and the model is less sensitive). A check of
meaning was tried and is not asserted: the held-out pairs' log-odds of slangy over plain text
(teacher forced) rise by 0.41 nats antisymmetrically ((+0.1 minus -0.1) / 2) with the vector,
but by 0.00-0.29 with three random controls, one of them too close to call.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import TopTokens, readout_directions
from extraction.control import compute_vector_set
from extraction.datasets import builtin_dir
from extraction.loading import load
from extraction.models import resolve
from extraction.runner import execute
from extraction.steering import next_token_logprobs, plan_for
from settings.run import RunSettings
from settings.vectors import VectorSettings
from store import open_store
from tests.support.tiny import write_jsonl

pytestmark = [pytest.mark.embedded, pytest.mark.slow]

FIT_PAIRS = 24
CONTROLS = 6
LAYERS = "6-12"
STRENGTH = 0.1
PROMPTS = ["Yesterday I went to the", "My friend told me that the",
           "The food at that place was", "When I got home I"]  # fmt: skip


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    work = tmp_path_factory.mktemp("style")
    rows = [json.loads(line) for line in (builtin_dir() / "style_pairs.jsonl").open()]
    pair_ids = sorted({r["pair_id"] for r in rows})
    fit = set(pair_ids[:FIT_PAIRS])
    dataset = write_jsonl(work / "style_pairs.jsonl", [r for r in rows if r["pair_id"] in fit])
    resolved = resolve("smollm2-135m")
    loaded = load(resolved, "hf", "cpu")
    settings = RunSettings(model="smollm2-135m", dataset=str(dataset), hooks=("resid_post",),
                           positions=("last",), layers=LAYERS)  # fmt: skip
    root = work / "store"
    run = execute(settings, root, progress=False, loaded=loaded)  # saves the readout too
    set_id, _ = compute_vector_set(root, VectorSettings(run=run.run_id))
    return {"root": root, "loaded": loaded, "set": open_store(root).vector_set(set_id)}


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (np.exp(p) * (p - q)).sum(axis=1)


def test_a_style_vector_moves_smollm2_far_more_than_random_directions_of_its_norm(fitted):
    model, tokenizer = fitted["loaded"].hf_model, fitted["loaded"].tokenizer
    plans = [plan_for(fitted["set"], LAYERS, STRENGTH, seed=seed) for seed in range(CONTROLS)]
    for plan in plans:
        np.testing.assert_allclose(np.linalg.norm(plan.control, axis=1),
                                   np.linalg.norm(plan.steered, axis=1), rtol=1e-6)  # fmt: skip

    def logprobs(plan, variant):
        return next_token_logprobs(model, tokenizer, PROMPTS, plan, variant, chat_template=False)

    base = logprobs(plans[0], "baseline")
    steered = _kl(logprobs(plans[0], "steered"), base).mean()
    controls = np.array([_kl(logprobs(plan, "control"), base).mean() for plan in plans])
    assert steered >= 1.5 * controls.max() and steered >= 2.0 * controls.mean(), (
        steered, controls)  # fmt: skip


def test_the_real_readout_reads_a_token_direction_as_that_token(fitted):
    store = open_store(fitted["root"])
    weights = fitted["set"].manifest.weights_sha256
    readout = store.readout(weights)
    assert (readout.vocab_size, readout.d_model, readout.norm_kind) == (49152, 576, "rms")
    tokenizer = fitted["loaded"].tokenizer
    (cat,) = tokenizer(" cat", add_special_tokens=False)["input_ids"]
    W = fitted["loaded"].hf_model.get_output_embeddings().weight.detach().numpy()
    top = TopTokens(readout_directions(W[[cat]] / np.asarray(readout.gain), readout.gain,
                                       readout.centred), top=3)  # fmt: skip
    for ids, chunk in store.iter_unembedding(weights):
        top.update(ids, chunk)
    assert store.token_texts(weights, top.result().promoted_ids[0][:1]) == [" cat"]
