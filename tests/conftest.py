"""Shared fixtures: tiny models built from configs, and a tiny store made by real extraction."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.tiny import (
    build_store,
    emotion_rows,
    pair_rows,
    proposition_rows,
    tiny_model_dir,
    write_jsonl,
)

HOOKS = ("resid_pre", "resid_post", "mlp_out")

pytest_plugins = ["tests.support.s3"]  # s3_server (moto, once per session) and s3_store


def pytest_collection_modifyitems(items):
    """`embedded` and `browser` tests are `slow` too, so `-m "not slow"` leaves them out; so are
    tests on `tiny_sae_store` (it trains an SAE and runs two extractions: about 20 s idle)."""
    for item in items:
        marked = item.get_closest_marker("embedded") or item.get_closest_marker("browser")
        if marked or "tiny_sae_store" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def pytest_configure(config):
    """Torch on one thread, in this process and every process it starts (runs, job workers,
    documented commands, servers), unless OMP_NUM_THREADS says otherwise.

    Two threads on two cores gain little on tiny models, and on a machine that is busy with
    anything else (a browser, a server, a neighbour) they lose a lot: each parallel region
    spins until both threads are scheduled. Measured here on SmolLM2 under load: 3 forward
    passes of 16 x 24 tokens took 2.5 s of CPU on one thread, 11-12.6 s on two, and longer
    wall time too; 16 generated tokens 1.8 s against 19 s. Set before torch is imported.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
def answers_store(tmp_path_factory, tiny_models) -> dict:
    """The tiny Llama answers four A / B pairs (real extraction, `--generate 2`): the
    Propositions page's run."""
    from extraction.runner import execute
    from settings.run import RunSettings

    root = tmp_path_factory.mktemp("answers-store")
    dataset = write_jsonl(tmp_path_factory.mktemp("answers-data") / "propositions.jsonl",
                          proposition_rows())  # fmt: skip
    settings = RunSettings(model=str(tiny_models["llama"]), dataset=str(dataset),
                           name="answers-llama", hooks=("resid_post",), positions=("last",),
                           generate=2, max_new_tokens=3)  # fmt: skip
    return {"root": root, "run_id": execute(settings, root, progress=False).run_id}


@pytest.fixture(scope="session")
def tiny_sae_store(tmp_path_factory) -> dict:
    """A store with an `all` run of prompt + response records on tiny llama (layers 1, 2), an
    SAE trained on layer 2 (`sae-tiny`, 64 features, k 4) and its features on the same records,
    every position (`feat-all`) and the last prompt token (`feat-last`). Read it, never write:
    tests that damage or add copy it first."""
    from extraction.__main__ import main
    from tests.support.tiny import prompt_response_rows, write_jsonl

    root = tmp_path_factory.mktemp("tiny-sae-store")
    work = tmp_path_factory.mktemp("tiny-sae-work")
    dataset = write_jsonl(work / "pr.jsonl", prompt_response_rows())
    store, model = root / "store", str(work / "model-llama")  # the model build_store makes
    run_id = build_store(store, work, [{
        "kind": "llama", "rows": prompt_response_rows(), "name": "pr-llama",
        "hooks": ("resid_post",), "positions": ("all",), "layers": "1,2", "dataset_name": "pr",
    }])[0]  # fmt: skip
    from extraction.sae.train import plan_training, train
    from settings.sae import TrainSaeSettings
    from store import open_store

    settings = TrainSaeSettings(run=run_id, layer=2, d_sae=64, k=4, batch_size=64,
                                training_tokens=6_400, name="sae-tiny", lr=2e-3)  # fmt: skip
    trained = train(plan_training(settings, open_store(store)), open_store(store), progress=False)
    common = ["sae", "--store", str(store), "--model", model, "--dataset", str(dataset),
              "--sae", "sae-tiny", "--top-k", "5", "--no-progress"]  # fmt: skip
    assert main([*common, "--positions", "all", "--name", "feat-all", "--run-id", "feat-all"]) == 0
    assert main([*common, "--name", "feat-last", "--run-id", "feat-last"]) == 0
    return {"root": store, "run_id": run_id, "sae_id": "sae-tiny", "trained": trained,
            "model": model, "dataset": dataset, "work": work}  # fmt: skip


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
