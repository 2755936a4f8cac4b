"""The runner on tiny models: what it stores equals what the model computes, for every position,
both dtypes, resumed or not."""

from __future__ import annotations

import numpy as np
import pytest

from extraction.runner import execute
from settings.run import RunSettings
from store import open_store
from store.writer import RunWriter
from tests.support.tiny import emotion_rows, reference_hidden_states, write_jsonl


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


ROWS = emotion_rows(per_label=4)


@pytest.fixture(scope="module")
def reference(tiny_models):
    return reference_hidden_states(tiny_models["llama"], [r["text"] for r in ROWS])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_stored_vectors_equal_model_hidden_states(tmp_path, tiny_models, reference, dtype):
    rows = ROWS
    dataset = write_jsonl(tmp_path / "emo.jsonl", rows)
    config = RunSettings(
        model=str(tiny_models["llama"]), dataset=str(dataset), hooks=("resid_pre",),
        positions=("last", "mean", "all"), dtype=dtype, batch_size=5,
    )  # fmt: skip
    result = execute(config, tmp_path / "store", progress=False)
    store = open_store(tmp_path / "store")
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


@pytest.mark.slow  # seconds: an interrupted run and its resume
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


def test_resume_says_why_nothing_was_resumed(tmp_path, tiny_models, capsys):
    dataset = write_jsonl(tmp_path / "emo.jsonl", emotion_rows(per_label=2))
    config = RunSettings(model=str(tiny_models["llama"]), dataset=str(dataset), layers="0,1")
    store_root = tmp_path / "store"
    capsys.readouterr()
    fresh = execute(config, store_root, resume=True, progress=False)
    assert "--resume: nothing to resume, starting a new run: the store has no interrupted run" in (
        capsys.readouterr().err
    )
    (store_root / "runs" / fresh.run_id / "_COMMITTED").unlink()  # as if it had been killed
    plain = execute(config, store_root, progress=False)  # no resume: a new run all the same
    assert plain.run_id != fresh.run_id and plain.resumed_samples == 0

    changed = RunSettings(model=str(tiny_models["llama"]), dataset=str(dataset), layers="0-2",
                          hooks=("resid_post", "mlp_out"), batch_size=3)  # fmt: skip
    other = execute(changed, store_root, resume=True, progress=False)
    err = capsys.readouterr().err
    assert other.run_id != fresh.run_id and other.resumed_samples == 0
    assert (
        "none of the 1 interrupted run(s) has these settings, weights and dataset "
        f"({fresh.run_id} differs in hooks, layers)"
    ) in err  # batch size changes nothing stored, so it is not a difference

    again = execute(config, store_root, resume=True, progress=False)  # same settings: resumed
    assert again.run_id == fresh.run_id and f"resuming {fresh.run_id}" in capsys.readouterr().err
