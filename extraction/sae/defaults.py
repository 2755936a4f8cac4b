"""The default SAE of a fresh store: so the Features page has real content on first start.

For SmolLM2 (the embedded model this is sized for) `python -m extraction defaults` adds, after
its other default runs (the model is loaded once more, for these steps only):

1. `default-prompt-responses-all-smollm2-135m`: every token of the built-in prompt_responses
   records (120, ~4,900 tokens) at resid_post layer 15 (the middle of 30 blocks; the pass stops
   there, so it costs half a forward pass);
2. the SAE `default-sae-smollm2-135m` trained on it with the CLI's defaults (2048 features,
   k 32, 15 passes: ~73,000 tokens, 143 steps);
3. `default-features-prompt-responses-smollm2-135m`: its features on the same records, every
   position, top 50.

Each step is skipped when its result exists, so the command stays cheap to repeat. Other models
get no default SAE: one trained SAE shows the workflow, and each costs first-start time.
"""

from __future__ import annotations

import sys
from pathlib import Path

from settings.run import RunSettings
from settings.sae import SaeSettings, TrainSaeSettings
from store import open_store

SAE_MODEL = "smollm2-135m"
SAE_DATASET = "prompt_responses"
SAE_HOOK, SAE_LAYER = "resid_post", 15
RUN_NAME = f"default-prompt-responses-all-{SAE_MODEL}"
SAE_NAME = f"default-sae-{SAE_MODEL}"
FEATURES_NAME = f"default-features-prompt-responses-{SAE_MODEL}"


def _say(message: str) -> None:
    print(f"[defaults] {message}", file=sys.stderr, flush=True)


def run_settings(dataset: str = SAE_DATASET) -> RunSettings:
    return RunSettings(model=SAE_MODEL, dataset=dataset, hooks=(SAE_HOOK,),
                       layers=str(SAE_LAYER), positions=("all",), name=RUN_NAME)  # fmt: skip


def sae_settings(dataset: str = SAE_DATASET) -> SaeSettings:
    return SaeSettings(model=SAE_MODEL, dataset=dataset, sae=SAE_NAME, positions="all",
                       name=FEATURES_NAME)  # fmt: skip


def pending(store_root: Path, models: tuple[str, ...]) -> bool:
    """Whether the default SAE steps still have something to do in this store."""
    if SAE_MODEL not in models:
        return False
    store = open_store(store_root, create=True)
    have_sae = any(card.sae_id == SAE_NAME for card in store.saes.list())
    have_features = any(m.name == FEATURES_NAME for m in store.features.list())
    return not (have_sae and have_features)


def fill_sae_defaults(
    store_root: Path,
    models: tuple[str, ...],
    progress: bool = True,
    dataset: str = SAE_DATASET,
    training: dict | None = None,
) -> None:
    """Run the steps above that are missing (nothing unless SmolLM2 is among `models`).

    `dataset` and `training` (TrainSaeSettings fields such as `d_sae`) are for tests that make
    the same default SAE, under the same names, smaller and in seconds (tests/docs).
    """
    if not pending(store_root, models):
        return
    from extraction.loading import load
    from extraction.models import resolve
    from extraction.runner import execute
    from extraction.sae.extract import extract_features, prepare_sae
    from extraction.sae.train import plan_training, train

    store = open_store(store_root)
    config = run_settings(dataset)
    loaded = load(resolve(SAE_MODEL), config.backend, config.device)
    if not any(card.sae_id == SAE_NAME for card in store.saes.list()):
        runs = [m for m in store.runs() if m.name == RUN_NAME]
        if not runs:
            _say(RUN_NAME)
            runs = [execute(config, store_root, resume=True, progress=progress,
                            loaded=loaded).manifest]  # fmt: skip
        _say(SAE_NAME)
        settings = TrainSaeSettings(run=runs[0].run_id, hook=SAE_HOOK, layer=SAE_LAYER,
                                    name=SAE_NAME, **(training or {}))  # fmt: skip
        train(plan_training(settings, store), store, progress=progress)
    _say(FEATURES_NAME)
    plan = prepare_sae(sae_settings(dataset), store)
    extract_features(plan, store_root, progress=progress, loaded=loaded)
