"""The runner on tiny models: what it stores equals what the model computes, for every position,
both dtypes, resumed or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extraction.runner import execute
from settings.run import RunSettings
from store import open_store
from store.writer import RunWriter
from tests.support.tiny import emotion_rows, write_jsonl


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hooks", ("resid_mid",), "unknown hook 'resid_mid'"),
        ("positions", ("first",), "unknown position 'first'"),
        ("dtype", "int8", "unknown dtype 'int8'"),
        ("backend", "jax", "unknown backend 'jax'"),
        ("batch_size", 0, "batch size 0"),
        ("name", "../escape", "run id '../escape' is not valid"),
    ],
)
def test_run_settings_validate(field, value, message):
    with pytest.raises(ValueError, match=message):
        RunSettings(model="m", dataset="d", **{field: value})


def _reference_hidden(model_dir, texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            out.append([h[0].numpy() for h in model(ids, output_hidden_states=True).hidden_states])
    return out


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_stored_vectors_equal_model_hidden_states(tmp_path, tiny_models, dtype):
    rows = emotion_rows(per_label=4)
    dataset = write_jsonl(tmp_path / "emo.jsonl", rows)
    config = RunSettings(
        model=str(tiny_models["llama"]), dataset=str(dataset), hooks=("resid_pre",),
        positions=("last", "mean", "all"), dtype=dtype, batch_size=5,
    )  # fmt: skip
    result = execute(config, tmp_path / "store", progress=False)
    store = open_store(tmp_path / "store")
    reference = _reference_hidden(tiny_models["llama"], [r["text"] for r in rows])
    tolerance = {"rtol": 2e-3, "atol": 2e-3} if dtype == "float16" else {"rtol": 1e-5, "atol": 1e-5}
    for layer in result.manifest.layers:
        last, samples = store.vectors(result.run_id, "resid_pre", layer, "last")
        mean, _ = store.vectors(result.run_id, "resid_pre", layer, "mean")
        assert list(samples["id"]) == [r["id"] for r in rows]
        for i, hidden in enumerate(reference):
            np.testing.assert_allclose(last[i], hidden[layer][-1], **tolerance)
            np.testing.assert_allclose(mean[i], hidden[layer][1:].mean(0), **tolerance)
    tokens, table, _ = store.token_vectors(result.run_id, "resid_pre", sample_idx=2)
    assert tokens.shape == (len(result.manifest.layers), len(table), 32)
    np.testing.assert_allclose(tokens[1], reference[2][1], **tolerance)
    assert "".join(table["token"]).replace("Ġ", " ") == rows[2]["text"]
    assert (
        result.manifest.row_counts["vector_rows"]
        == store.query("SELECT count(*) AS n FROM vectors WHERE run_id = ?", [result.run_id]).frame[
            "n"
        ][0]
    )


def test_resume_continues_without_duplicating_rows(tmp_path, tiny_models):
    rows = emotion_rows(per_label=8)
    dataset = write_jsonl(tmp_path / "emo.jsonl", rows)
    config = RunSettings(model=str(tiny_models["gpt2"]), dataset=str(dataset), batch_size=4)
    store_root = tmp_path / "store"
    full = execute(config, tmp_path / "reference", progress=False)

    # Simulate a run killed after its first parts: run the real writer on a prefix, no commit.
    partial = execute(config, store_root, progress=False, flush_bytes=1)
    run_dir = store_root / "runs" / partial.run_id
    (run_dir / "_COMMITTED").unlink()
    parts = sorted((run_dir / "vectors").glob("part-*.parquet"))
    for part in parts[2:]:
        part.unlink()
    assert open_store(store_root).runs() == []

    resumed = execute(config, store_root, resume=True, progress=False)
    assert resumed.run_id == partial.run_id
    assert resumed.resumed_samples == 8  # two parts of 4 samples survived
    store = open_store(store_root)
    counts = store.query(
        "SELECT count(*) AS n, count(DISTINCT (hook, position, layer, sample_idx)) AS d "
        "FROM vectors WHERE run_id = ?",
        [resumed.run_id],
    ).frame
    assert counts["n"][0] == counts["d"][0] == full.manifest.row_counts["vector_rows"]
    a, _ = store.vectors(resumed.run_id, "resid_post", 1, "mean")
    b, _ = open_store(tmp_path / "reference").vectors(full.run_id, "resid_post", 1, "mean")
    np.testing.assert_array_equal(a, b)


def test_a_live_writer_cannot_be_resumed_twice(tmp_path):
    writer = RunWriter.create(tmp_path, "r1", {"fingerprint": "x"}, d_model=4, dtype="float16")
    with pytest.raises(Exception, match="being written by another process"):
        RunWriter.resume(tmp_path, "r1", d_model=4, dtype="float16")
    writer.close()
    RunWriter.resume(tmp_path, "r1", d_model=4, dtype="float16").close()
