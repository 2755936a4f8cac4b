"""The default runs that the README's first command puts in an empty store.

Each (model, dataset) pair is one run named `default-<dataset>-<model>`; a pair whose run is
already committed is skipped and an interrupted one is resumed, so the command is cheap to repeat.
Each model is loaded once for all of its datasets. SmolLM2 also gets a default SAE and its
features on the prompt_responses records (extraction.sae.defaults), for the Features page.
"""

from __future__ import annotations

import sys
from pathlib import Path

from extraction.runner import execute
from settings.run import RunSettings
from store import open_store

DEFAULT_DATASETS = ("emotions", "minimal_pairs", "propositions")
DEFAULT_HOOKS = ("resid_pre", "resid_post", "mlp_out")
DEFAULT_POSITIONS = ("last", "mean")


def default_configs(models: tuple[str, ...]) -> list[RunSettings]:
    return [
        RunSettings(
            model=model,
            dataset=dataset,
            hooks=DEFAULT_HOOKS,
            layers="all",
            positions=DEFAULT_POSITIONS,
            name=f"default-{dataset}-{model}".replace("_", "-"),
        )
        for model in models
        for dataset in DEFAULT_DATASETS
    ]


def fill_defaults(store_root: Path, models: tuple[str, ...], progress: bool = True) -> list[str]:
    from extraction.loading import load
    from extraction.models import resolve
    from extraction.sae.defaults import fill_sae_defaults, pending

    store = open_store(store_root, create=True)
    existing = {m.name for m in store.runs()}
    todo = [c for c in default_configs(models) if c.name not in existing]
    if not todo and not any(pending(store_root, model) for model in models):
        print(f"[defaults] all default runs already in {store_root}", file=sys.stderr)
        return []
    created = []
    for model in models:  # one model in memory at a time, loaded once for all its runs
        mine = [c for c in todo if c.model == model]
        if not mine and not pending(store_root, model):
            continue
        first = mine[0] if mine else RunSettings(model=model, dataset=DEFAULT_DATASETS[0])
        loaded = load(resolve(model), first.backend, first.device)
        for config in mine:
            print(f"[defaults] {config.name}", file=sys.stderr, flush=True)
            result = execute(config, store_root, resume=True, progress=progress, loaded=loaded)
            created.append(result.run_id)
        # The default SAE and its features (extraction.sae.defaults), for SmolLM2 only.
        fill_sae_defaults(Path(store_root), model, loaded, progress)
        del loaded
    return created
