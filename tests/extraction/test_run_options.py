"""Every `extraction run` option the README lists, and the other verbs, checked by their effect:
through the real CLI's `main()` in-process, on the tiny Llama, reading back the committed run.

(`--chat-template` is tested with the generation features, on the real SmolLM2; bad values of
every option are in test_cli.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from extraction.__main__ import main
from store import open_store
from tests.support.tiny import emotion_rows, reference_hidden_states, write_jsonl

ROWS = emotion_rows(per_label=2)  # 6 short texts of different lengths


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("options") / "emo.jsonl", ROWS)


@pytest.fixture(scope="module")
def reference(tiny_models):
    return reference_hidden_states(tiny_models["llama"], [r["text"] for r in ROWS])


@pytest.fixture
def run(tmp_path, tiny_models, dataset, capsys):
    """run(*options) -> (manifest, store) of the one run `extraction run` committed."""

    def go(*options: str, store_name: str = "store"):
        store_root = tmp_path / store_name
        argv = ["run", "--model", str(tiny_models["llama"]), "--dataset", str(dataset),
                "--store", str(store_root), "--no-progress", *options]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        run_id = capsys.readouterr().out.strip().splitlines()[-1]
        store = open_store(store_root)
        return store.manifest(run_id), store

    return go


def test_negative_layer_lists_count_back_from_the_last_block(run):
    manifest, store = run("--layers", "-2,-1")  # a list after a space, as a user types it
    assert manifest.layers == (2, 3)
    assert run("--layers=-1", store_name="other")[0].layers == (3,)
    with pytest.raises(Exception, match="has no layer 1"):
        store.vectors(manifest.run_id, "resid_post", 1, "last")


def test_include_first_token_puts_the_first_token_into_mean(run, reference):
    left_out, store_a = run("--hooks", "resid_pre", "--positions", "mean", store_name="a")
    kept, store_b = run("--hooks", "resid_pre", "--positions", "mean", "--include-first-token",
                        store_name="b")  # fmt: skip
    assert (left_out.include_first_token_in_mean, kept.include_first_token_in_mean) == (
        False,
        True,
    )
    assert "excluding the first token" in left_out.position_policy
    assert "including the first token" in kept.position_policy
    without, _ = store_a.vectors(left_out.run_id, "resid_pre", 2, "mean")
    with_first, _ = store_b.vectors(kept.run_id, "resid_pre", 2, "mean")
    for i, hidden in enumerate(reference):
        np.testing.assert_allclose(without[i], hidden[2][1:].mean(0), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(with_first[i], hidden[2].mean(0), rtol=2e-3, atol=2e-3)


def test_max_length_keeps_the_first_tokens_and_counts_the_cut(run, reference):
    manifest, store = run("--max-length", "4", "--positions", "last,all", "--dtype", "float32")
    samples = store.samples(manifest.run_id)
    lengths = [len(h[0]) for h in reference]
    assert list(samples["n_tokens"]) == [min(n, 4) for n in lengths]
    assert list(samples["truncated"]) == [n > 4 for n in lengths]
    assert manifest.row_counts["truncated_samples"] == sum(n > 4 for n in lengths) > 0
    last, _ = store.vectors(manifest.run_id, "resid_post", 1, "last")
    for i, hidden in enumerate(reference):  # a causal model: the cut text's last state is the
        position = min(lengths[i], 4) - 1  # full text's state at that position
        np.testing.assert_allclose(last[i], hidden[2][position], rtol=1e-4, atol=1e-5)
    tokens, table, _ = store.token_vectors(manifest.run_id, "resid_post", sample_idx=0)
    assert len(table) == min(lengths[0], 4) and tokens.shape[1] == len(table)


def test_compute_dtype_changes_the_arithmetic_not_the_layout(run):
    exact, store_a = run("--dtype", "float32", store_name="a")
    rough, store_b = run("--dtype", "float32", "--compute-dtype", "bfloat16", store_name="b")
    assert (exact.compute_dtype, rough.compute_dtype) == ("float32", "bfloat16")
    a, _ = store_a.vectors(exact.run_id, "resid_post", 3, "last")
    b, _ = store_b.vectors(rough.run_id, "resid_post", 3, "last")
    assert not np.array_equal(a, b)  # bfloat16 keeps ~3 significant digits
    np.testing.assert_allclose(b, a, rtol=0.1, atol=0.1 * np.abs(a).max())


@pytest.mark.slow  # importing TransformerLens takes seconds
def test_transformer_lens_default_processing_is_recorded_truthfully(run):
    hf, store_hf = run("--dtype", "float32", store_name="hf")
    tl, store_tl = run("--dtype", "float32", "--backend", "transformer_lens", "--tl-processing",
                       "default", store_name="tl")  # fmt: skip
    assert (tl.backend, hf.backend) == ("transformer_lens", "hf")
    assert "same basis as Hugging Face" in tl.weight_processing  # RMSNorm: nothing is centred
    assert (
        tl.versions["transformer_lens"].startswith("3.") and "transformer_lens" not in hf.versions
    )
    for layer in (0, 3):
        a, _ = store_hf.vectors(hf.run_id, "resid_post", layer, "mean")
        b, _ = store_tl.vectors(tl.run_id, "resid_post", layer, "mean")
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_batch_size_and_device_change_nothing_stored(run):
    one, store_a = run("--batch-size", "1", "--device", "cpu", "--dtype", "float32",
                       store_name="a")  # fmt: skip
    many, store_b = run("--batch-size", "5", "--dtype", "float32", store_name="b")
    assert (one.batch_size, many.batch_size, one.device) == (1, 5, "cpu")
    for position in ("last", "mean"):  # padding in the batch of 5 is masked out
        a, _ = store_a.vectors(one.run_id, "resid_post", 2, position)
        b, _ = store_b.vectors(many.run_id, "resid_post", 2, position)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_name_names_the_run_and_prefixes_its_id(run):
    manifest, _ = run("--name", "my-first-run")
    assert manifest.name == "my-first-run" and manifest.run_id.startswith("my-first-run-2")


def test_clean_removes_interrupted_runs_only(run, tmp_path, capsys):
    from store.writer import RunWriter

    manifest, _ = run()
    RunWriter.create(tmp_path / "store", "killed-run", {"fingerprint": "x"},
                     d_model=32, dtype="float16").close()  # fmt: skip
    assert main(["clean", "--store", str(tmp_path / "store")]) == 0
    assert capsys.readouterr().out.splitlines() == ["removed killed-run"]
    assert sorted(p.name for p in (tmp_path / "store" / "runs").iterdir()) == [manifest.run_id]


def test_models_lists_the_embedded_models(capsys):
    from extraction.models import EMBEDDED

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        [line.split("\t")[0] for line in lines]
        == list(EMBEDDED)
        == [
            "smollm2-135m",
            "gemma3-270m",
        ]
    )
    assert lines[0].endswith("Apache-2.0") and lines[1].endswith("Gemma terms of use")
