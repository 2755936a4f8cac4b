"""The real SmolLM2-135M-Instruct answering through its chat template: `--chat-template` works
(transformers 5 returns a BatchEncoding), and a batched `--generate 3` run stores the answers and
states a hand-written `generate(output_hidden_states=True)` gives one prompt at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extraction.datasets import load_dataset
from extraction.loading import load
from extraction.models import resolve
from extraction.runner import execute
from settings.run import RunSettings
from store import open_store
from tests.support.tiny import write_jsonl

pytestmark = pytest.mark.embedded

LAYERS = (0, 14, 29)


@pytest.fixture(scope="module")
def smollm2():
    return load(resolve("smollm2-135m"), "hf", "cpu")


@pytest.fixture(scope="module")
def propositions(tmp_path_factory):
    samples = load_dataset("propositions").samples[2:4]  # one pair, two prompt lengths
    rows = [{"id": s.id, "text": s.text, "label": s.label} for s in samples]
    return write_jsonl(tmp_path_factory.mktemp("data") / "props2.jsonl", rows), rows


def _hand_written(loaded, text: str, max_new_tokens: int):
    tokenizer, model = loaded.tokenizer, loaded.hf_model
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )["input_ids"]  # fmt: skip
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                             output_hidden_states=True, return_dict_in_generate=True)  # fmt: skip
    return ids[0].tolist(), out.sequences[0, ids.shape[1] :].tolist(), out.hidden_states


def test_smollm2_answers_through_its_chat_template(tmp_path, smollm2, propositions):
    dataset, rows = propositions
    common = dict(model="smollm2-135m", dataset=str(dataset), hooks=("resid_pre", "resid_post"),
                  layers=",".join(map(str, LAYERS)), dtype="float32", device="cpu")  # fmt: skip
    plain = execute(RunSettings(**common, chat_template=True, positions=("last",)),
                    tmp_path / "s", progress=False, loaded=smollm2)  # fmt: skip
    answered = execute(RunSettings(**common, generate=3, max_new_tokens=4, batch_size=2),
                       tmp_path / "s", progress=False, loaded=smollm2)  # fmt: skip
    store = open_store(tmp_path / "s")
    assert answered.manifest.generation["prompt_format"] == "chat template"
    assert "<|im_start|>" in plain.manifest.chat_template
    prompt_last, samples_plain, _ = store.layer_vectors(plain.run_id, "resid_pre", "last")
    pooled, samples, _ = store.layer_vectors(answered.run_id, "resid_pre", "answer_mean")
    pooled_post, _, _ = store.layer_vectors(answered.run_id, "resid_post", "answer_mean")
    for i, row in enumerate(rows):
        prompt, answer, hidden = _hand_written(smollm2, row["text"], 4)
        assert samples_plain["n_tokens"][i] == samples["n_tokens"][i] == len(prompt)
        assert i == 0 or len(prompt) != samples["n_tokens"][0]  # the batch is padded
        assert list(samples["answer_token_ids"][i]) == answer
        assert samples["answer"][i] == smollm2.tokenizer.decode(
            list(samples["answer_token_ids"][i]), skip_special_tokens=True
        )
        assert samples["answer"][i].strip()  # it really talks
        for j, layer in enumerate(LAYERS):
            reference = torch.stack([hidden[s][layer][0, -1] for s in range(3)]).mean(0).numpy()
            scale = np.abs(reference).max()
            np.testing.assert_allclose(pooled[j, i], reference, rtol=1e-3, atol=1e-3 * scale)
            start = hidden[0][layer][0, -1].numpy()
            np.testing.assert_allclose(prompt_last[j, i], start, rtol=1e-3, atol=1e-3 * scale)
            if layer + 1 < len(hidden[0]) - 1:  # the last block's resid_post has no final norm
                after = torch.stack([hidden[s][layer + 1][0, -1] for s in range(3)]).mean(0)
                np.testing.assert_allclose(
                    pooled_post[j, i], after.numpy(), rtol=1e-3, atol=1e-3 * np.abs(after).max()
                )
