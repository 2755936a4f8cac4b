"""SAEs on tiny models: training on stored activations, loading back through sae-lens, feature
extraction (batched = one at a time = sae-lens's encode on Hugging Face hidden states), the
checks of an SAE against a model, pretrained releases offline, and JSON in and out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from extraction.__main__ import main
from store import StoreError, open_store
from tests.support.tiny import write_jsonl


def cli(capsys, *args: str) -> tuple[int, list[str]]:
    """`python -m extraction ...` in-process: (exit status, stderr lines)."""
    capsys.readouterr()
    code = main(list(args))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def store_copy(tiny_sae_store, tmp_path) -> Path:
    shutil.copytree(tiny_sae_store["root"], tmp_path / "store")
    return tmp_path / "store"


def stored_tokens(store, run_id: str, layer: int = 2) -> np.ndarray:
    """Every non-first token of the run at resid_post[layer], as training saw them."""
    rows = [X[t > 0] for _, t, X in store.iter_token_vectors(run_id, "resid_post", layer)]
    return np.concatenate(rows)


# -- training ------------------------------------------------------------------------------------
def test_trained_sae_beats_the_zero_and_mean_baselines(tiny_sae_store):
    from sae_lens import SAE

    store = open_store(tiny_sae_store["root"])
    card = store.saes.card("sae-tiny")
    X = torch.from_numpy(stored_tokens(store, tiny_sae_store["run_id"]))
    sae = SAE.load_from_disk(str(store.saes.folder("sae-tiny")))
    with torch.no_grad():
        mse = float(((sae.decode(sae.encode(X)) - X) ** 2).sum(-1).mean())
    mse_zero = float((X**2).sum(-1).mean())
    mse_mean = float(((X - X.mean(0)) ** 2).sum(-1).mean())
    assert mse < 0.6 * mse_mean < mse_zero, (mse, mse_mean, mse_zero)
    metrics = card.metrics  # the card measures the same on held-out records
    assert metrics["mse"] < metrics["mse_mean_baseline"] < metrics["mse_zero_baseline"]
    assert metrics["explained_variance"] > 0.3 and metrics["l0"] == pytest.approx(4.0)
    assert 0 <= metrics["dead_share"] < 1 and metrics["heldout_tokens"] > 0
    assert card.hook_name == "blocks.2.hook_resid_post" and card.run_id == tiny_sae_store["run_id"]


def test_saved_sae_loads_through_sae_lens_and_encodes_identically(tiny_sae_store):
    from sae_lens import SAE, TopKSAE

    store = open_store(tiny_sae_store["root"])
    folder = store.saes.folder("sae-tiny")
    loaded = SAE.load_from_disk(str(folder))
    assert (
        isinstance(loaded, TopKSAE) and loaded.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    )
    X = torch.from_numpy(stored_tokens(store, tiny_sae_store["run_id"])[:200])
    trained = tiny_sae_store["trained"].sae
    with torch.no_grad():
        expected, got = trained.encode(X), loaded.encode(X)
    assert torch.equal(expected > 0, got > 0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert set(json.loads((folder / "cfg.json").read_text())) >= {"d_in", "d_sae", "k"}


def test_train_sae_refuses_runs_it_cannot_train_on(tiny_sae_store, tiny_store, capsys):
    pooled = tiny_store["run_ids"][0]  # last/mean only
    code, err = cli(capsys, "train-sae", "--store", str(tiny_store["root"]), "--run", pooled,
                    "--layer", "1")  # fmt: skip
    assert code == 2 and len(err) == 1 and "make a run with --positions all" in err[0]
    store = str(tiny_sae_store["root"])
    for args, message in [
        (["--layer", "0"], "has no layer 0; it has layers 1, 2"),
        (["--layer", "-1"], "has no layer -1"),
        (["--hook", "mlp_out", "--layer", "2"], "has no hook 'mlp_out'"),
        (["--layer", "2", "--k", "0"], "k 0 must be a whole number"),
        (["--layer", "2", "--name", "sae-tiny"], "SAE 'sae-tiny' already exists"),
    ]:
        code, err = cli(capsys, "train-sae", "--store", store, "--run", "pr-llama", *args)
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert [c.sae_id for c in open_store(store).saes.list()] == ["sae-tiny"]


# -- extraction ----------------------------------------------------------------------------------
def _topk(store, feature_run: str) -> dict[tuple[int, int], tuple[list, list, int]]:
    frame = store.features._query(store.features.manifest(feature_run), "t",
                                  "SELECT * FROM read_parquet($topk)")  # fmt: skip
    return {(r.sample_idx, r.token_idx): (list(r.feature_ids), list(r.activations), r.n_active)
            for r in frame.itertuples()}  # fmt: skip


def _assert_same_topk(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, (ids, values, n_active) in a.items():
        other_ids, other_values, other_n = b[key]
        assert n_active == other_n, key
        np.testing.assert_allclose(values, other_values, rtol=1e-4, atol=1e-6)
        assert ids == other_ids, key


def test_batched_topk_equals_one_at_a_time_and_sae_lens_on_hf_hidden_states(
    tiny_sae_store, tmp_path, capsys
):
    from sae_lens import SAE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = store_copy(tiny_sae_store, tmp_path)
    code, _ = cli(capsys, "sae", "--store", str(root), "--model", tiny_sae_store["model"],
                  "--dataset", str(tiny_sae_store["dataset"]), "--sae", "sae-tiny",
                  "--positions", "all", "--top-k", "5", "--batch-size", "1", "--run-id", "one",
                  "--no-progress")  # fmt: skip
    assert code == 0
    store = open_store(root)
    batched = _topk(store, "feat-all")
    _assert_same_topk(batched, _topk(store, "one"))

    # sae-lens's own encode on Hugging Face's hidden states (resid_post[2] = hidden_states[3])
    tokenizer = AutoTokenizer.from_pretrained(tiny_sae_store["model"])
    model = AutoModelForCausalLM.from_pretrained(tiny_sae_store["model"]).eval()
    sae = SAE.load_from_disk(str(store.saes.folder("sae-tiny")))
    samples = store.features.samples("feat-all")
    expected = {}
    for sample in samples.itertuples():
        ids = tokenizer(sample.prompt)["input_ids"]
        ids += tokenizer(sample.response, add_special_tokens=False)["input_ids"]
        assert sample.answer_start == len(tokenizer(sample.prompt)["input_ids"])
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[3][0]
            acts = sae.encode(hidden)
        top = torch.topk(acts, 5, dim=-1)
        for token, (values, idx) in enumerate(zip(top.values, top.indices, strict=True)):
            fired = values > 0
            expected[(sample.sample_idx, token)] = (
                idx[fired].tolist(),
                values[fired].tolist(),
                int((acts[token] > 0).sum()),
            )
    _assert_same_topk(batched, expected)
    last = _topk(store, "feat-last")  # the last prompt token only, the same numbers
    assert {k[1] for k in last} and all(key[1] == samples.answer_start[key[0]] - 1 for key in last)
    _assert_same_topk(last, {key: expected[key] for key in last})


def _sae_folder(tmp_path: Path, name: str, d_in: int, hook: str, **metadata) -> Path:
    """A sae-lens SAE saved by sae-lens itself (random weights) that reads `hook`."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg = TopKSAEConfig(d_in=d_in, d_sae=16, k=2, metadata=SAEMetadata(hook_name=hook, **metadata))
    folder = tmp_path / name
    TopKSAE(cfg).save_model(folder)
    return folder


@pytest.mark.parametrize(
    ("d_in", "hook", "message"),
    [
        (32, "blocks.1.attn.hook_z", "is not a site this tool captures"),
        (32, "blocks.9.hook_resid_post", "reads blocks.9.hook_resid_post, but model"),
        (48, "blocks.1.hook_resid_post", "reads vectors of width 48"),
    ],
)
def test_hook_layer_and_width_mismatches_stop_before_anything_runs(
    tiny_sae_store, tmp_path, capsys, d_in, hook, message
):
    root = store_copy(tiny_sae_store, tmp_path)
    folder = _sae_folder(tmp_path, "mismatch", d_in, hook)
    code, err = cli(capsys, "sae", "--store", str(root), "--model", tiny_sae_store["model"],
                    "--dataset", str(tiny_sae_store["dataset"]), "--sae", str(folder))  # fmt: skip
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert sorted(p.name for p in (root / "features").iterdir()) == ["feat-all", "feat-last"]


@pytest.mark.parametrize("damage", ["weights", "cfg"])
def test_a_damaged_sae_folder_is_one_error_line(tiny_sae_store, tmp_path, capsys, damage):
    folder = _sae_folder(tmp_path, "broken", 32, "blocks.1.hook_resid_post")
    if damage == "weights":
        (folder / "sae_weights.safetensors").write_bytes(b"\x80\x04pickle, not safetensors")
        message = "cannot load SAE 'broken'"
    else:
        cfg = json.loads((folder / "cfg.json").read_text())
        (folder / "cfg.json").write_text(
            json.dumps(
                {
                    **cfg,
                    "metadata": {
                        "hook_name": "blocks.1.hook_resid_post",
                        "sae_lens_version": "not-a-version",
                    },
                }
            )
        )
        message = "SAE folder 'broken': sae-lens cannot read its cfg.json"
    root = store_copy(tiny_sae_store, tmp_path)
    code, err = cli(capsys, "sae", "--store", str(root), "--model", tiny_sae_store["model"],
                    "--dataset", str(tiny_sae_store["dataset"]), "--sae", str(folder))  # fmt: skip
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in (root / "features").iterdir()) == ["feat-all", "feat-last"]


def test_sae_of_another_model_is_refused(tiny_sae_store, tiny_models, capsys):
    code, err = cli(capsys, "sae", "--store", str(tiny_sae_store["root"]), "--model",
                    str(tiny_models["gemma3"]), "--dataset", str(tiny_sae_store["dataset"]),
                    "--sae", "sae-tiny")  # fmt: skip
    assert code == 2 and len(err) == 1 and "was trained on model" in err[0]


def test_pretrained_release_resolves_through_sae_lens_directory_offline(
    tiny_sae_store, tiny_models, tmp_path, capsys, monkeypatch
):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    base = ["sae", "--store", str(tmp_path / "store"), "--model", str(tiny_models["llama"]),
            "--dataset", str(tiny_sae_store["dataset"]), "--no-progress"]  # fmt: skip
    for args, message in [
        (["--sae", "no-such-release", "--sae-id", "x"], "unknown sae-lens release"),
        (["--sae", "gpt2-small-res-jb", "--sae-id", "blocks.99.hook_resid_pre"],
         "release 'gpt2-small-res-jb' has no SAE id 'blocks.99.hook_resid_pre'; its ids: "),
        (["--sae", "gpt2-small-res-jb", "--sae-id", "blocks.1.hook_resid_pre"],
         "cannot fetch SAE gpt2-small-res-jb/blocks.1.hook_resid_pre from Hugging Face "
         "(repo jbloom/GPT2-Small-SAEs-Reformatted)"),
    ]:  # fmt: skip
        code, err = cli(capsys, *base, *args)
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "store" / "features").exists()

    # The release's files in the local Hugging Face cache, as an online user would have them:
    # sae-lens reads them, and the release's config (center_writing_weights) decides the basis.
    snapshot = tmp_path / "hub" / "models--jbloom--GPT2-Small-SAEs-Reformatted" / "snapshots"
    _sae_folder(snapshot / ("0" * 40), "blocks.1.hook_resid_pre", 32, "blocks.1.hook_resid_pre",
                model_name="gpt2-small")  # fmt: skip
    refs = snapshot.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    release = ["--sae", "gpt2-small-res-jb", "--sae-id", "blocks.1.hook_resid_pre"]
    code, err = cli(capsys, *base, *release)
    assert code == 2 and "rerun with --backend transformer_lens --tl-processing default" in err[0]
    code, err = cli(capsys, *base, *release, "--backend", "transformer_lens",
                    "--tl-processing", "default", "--run-id", "released")  # fmt: skip
    assert code == 0, err
    manifest = open_store(tmp_path / "store").features.manifest("released")
    assert (manifest.sae_source, manifest.sae, manifest.sae_id) == (
        "release",
        "gpt2-small-res-jb",
        "blocks.1.hook_resid_pre",
    )
    exported = open_store(tmp_path / "store").features.export_json("released")
    meta = exported["sae_extraction_metadata"]["layer_1"]
    assert meta["sae_release"] == "gpt2-small-res-jb"
    assert meta["hook_name"] == "blocks.1.hook_resid_pre"


# -- JSON in and out -----------------------------------------------------------------------------
def test_nested_json_in_and_out_keeps_where_each_record_sits(tiny_sae_store, tmp_path, capsys):
    rows = json.loads(
        json.dumps(
            [
                {"prompt": r["prompt"], "response": r["response"]}
                for r in json.loads(
                    "[" + ",".join(tiny_sae_store["dataset"].read_text().splitlines()) + "]"
                )
            ]
        )
    )
    document = {
        "model": "whatever a script wrote",
        "results": [
            {"category": "cooking", "variations": rows[:3]},
            {"category": "travel", "variations": [*rows[-2:], {"prompt": "Hi", "response": 7}]},
        ],
    }  # fmt: skip
    source = tmp_path / "results.json"
    source.write_text(json.dumps(document))
    out = tmp_path / "out.json"
    root = store_copy(tiny_sae_store, tmp_path)
    code, err = cli(capsys, "sae", "--store", str(root), "--model", tiny_sae_store["model"],
                    "--dataset", str(source), "--sae", "sae-tiny", "--top-k", "3",
                    "--json-out", str(out), "--run-id", "nested", "--no-progress")  # fmt: skip
    assert code == 0 and "1 of 6 records could not be used" in err[-1]
    exported = json.loads(out.read_text())
    assert exported["model"] == document["model"]
    samples = open_store(root).features.samples("nested")
    assert list(samples.location) == [
        "results[0].variations[0]",
        "results[0].variations[1]",
        "results[0].variations[2]",
        "results[1].variations[0]",
        "results[1].variations[1]",
        "results[1].variations[2]",
    ]
    assert list(samples.label) == ["cooking"] * 3 + ["travel"] * 3  # from the parent's category
    good = exported["results"][0]["variations"][1]
    layer = good["sae_activations"]["layer_2"]
    assert set(layer) == {"activations", "answer_start_position", "total_tokens", "status"}
    assert layer["status"] == "ok" and list(layer["activations"]) == ["last_token"]
    last = layer["activations"]["last_token"]
    assert 0 < len(last["top_k_features"]) <= 3 and last["num_active_features"] == 4
    assert set(last["top_k_features"][0]) == {"id", "activation"}
    values = [f["activation"] for f in last["top_k_features"]]
    assert values == sorted(values, reverse=True)
    assert layer["total_tokens"] == samples.total_tokens[1] > layer["answer_start_position"]
    bad = exported["results"][1]["variations"][2]["sae_activations"]["layer_2"]
    assert bad["status"] == "error: response is not text" and bad["activations"] == {}
    meta = exported["sae_extraction_metadata"]["layer_2"]
    assert (meta["sae_id"], meta["sae_release"], meta["hook_name"], meta["top_k_features"]) == (
        "sae-tiny",
        None,
        "blocks.2.hook_resid_post",
        3,
    )
    assert meta["provenance"]["feature_run_id"] == "nested"

    # The output is an input again: a second pass adds its layer beside the first one's.
    again = tmp_path / "again.json"
    code, _ = cli(capsys, "sae", "--store", str(root), "--model", tiny_sae_store["model"],
                  "--dataset", str(out), "--sae", "sae-tiny", "--positions", "all",
                  "--json-out", str(again), "--run-id", "again", "--no-progress")  # fmt: skip
    merged = json.loads(again.read_text())["results"][0]["variations"][1]["sae_activations"]
    assert code == 0 and list(merged) == ["layer_2"]
    assert list(merged["layer_2"]["activations"])[:2] == ["token_0", "token_1"]


def test_jsonl_records_without_a_response_read_the_prompt_alone(tiny_sae_store, tmp_path, capsys):
    rows = [{"id": "a", "text": "plain text only", "label": "x"},
            {"id": "b", "prompt": "", "response": "no prompt", "label": "x"}]  # fmt: skip
    dataset = write_jsonl(tmp_path / "plain.jsonl", rows)
    root = store_copy(tiny_sae_store, tmp_path)
    code, _ = cli(capsys, "sae", "--store", str(root), "--model", tiny_sae_store["model"],
                  "--dataset", str(dataset), "--sae", "sae-tiny", "--run-id", "plain",
                  "--no-progress")  # fmt: skip
    samples = open_store(root).features.samples("plain")
    assert code == 0 and list(samples.status) == ["ok", "error: no prompt"]
    assert samples.answer_start[0] == samples.total_tokens[0]  # nothing after the prompt


@pytest.mark.parametrize("buffer_bytes", [None, 1])  # the whole run in memory; a small buffer
def test_training_batches_stream_training_records_only(tiny_sae_store, monkeypatch, buffer_bytes):
    from extraction.sae import train as training
    from settings.sae import TrainSaeSettings

    if buffer_bytes is not None:
        monkeypatch.setattr(training, "BUFFER_BYTES", buffer_bytes)
    store = open_store(tiny_sae_store["root"])
    settings = TrainSaeSettings(run="pr-llama", layer=2, batch_size=64, training_tokens=3_000)
    plan = training.plan_training(settings, store)
    assert plan.heldout and plan.train_tokens > 8 * 64  # so a 1-byte buffer must stream
    batches = list(training.training_batches(plan, store, torch.device("cpu")))
    assert [len(b) for b in batches] == [64] * 47  # ceil(3000 / 64) whole batches
    seen = {tuple(row) for b in batches for row in b.numpy().round(4)}
    held, usable = set(), set()
    for sample_idx, token_idx, X in store.iter_token_vectors(plan.run.run_id, "resid_post", 2):
        for s, t, row in zip(sample_idx, token_idx, X.round(4), strict=True):
            (held if int(s) in plan.heldout else usable).add(tuple(row)) if t > 0 else None
    # Records that share a prefix share its activations: only held-out rows unique to held-out
    # records tell whether one was used.
    assert seen <= usable and not seen & (held - usable) and held - usable
    assert len(seen) > 0.9 * len(usable)  # three passes over ~900 tokens reach nearly all


def test_promoted_tokens_are_the_logit_lens_of_each_decoder_direction(tiny_sae_store):
    """Saved at training time (the app has no torch): each feature's top tokens through the
    model's final norm and unembedding, recomputed here from the saved SAE and the HF model."""
    from sae_lens import SAE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store = open_store(tiny_sae_store["root"])
    model = AutoModelForCausalLM.from_pretrained(tiny_sae_store["model"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_sae_store["model"])
    sae = SAE.load_from_disk(str(store.saes.folder("sae-tiny")), device="cpu")
    with torch.no_grad():
        unit = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
        logits = model.lm_head(model.model.norm(unit))[:, : len(tokenizer)]
    for feature in (0, 17, 63):
        saved = store.saes.promoted_tokens("sae-tiny", feature)
        best = logits[feature].topk(len(saved))
        assert saved["rank"].tolist() == list(range(len(saved))) and len(saved) == 20
        assert saved["token"].tolist() == [tokenizer.decode([int(i)]) for i in best.indices]
        np.testing.assert_allclose(saved["logit"], best.values.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(StoreError, match="is not a feature of SAE 'sae-tiny'"):
        store.saes.promoted_tokens("sae-tiny", 64)


def test_saved_codes_may_differ_only_at_a_tie_with_the_kth_feature():
    from extraction.sae.train import boundary_ties_only

    a = torch.tensor([[3.0, 2.0, 1.0, 0.0], [5.0, 0.0, 4.0, 0.0]])
    assert boundary_ties_only(a, a + 1e-6)
    tie = a.clone()
    tie[0, 2], tie[0, 3] = 0.0, 1.0 + 1e-5  # the k-th feature swapped with one that ties it
    assert boundary_ties_only(a, tie)
    other = a.clone()
    other[1, 0], other[1, 1] = 0.0, 5.0  # the top feature swapped: a different encoding
    assert not boundary_ties_only(a, other)
    assert not boundary_ties_only(a, a * 1.01)  # every value off by 1%
