"""The default runs that the README's first command puts in an empty store.

Each (model, dataset) pair is one run named `default-<dataset>-<model>`; a pair whose run is
already committed is skipped and an interrupted one is resumed, so the command is cheap to repeat.
Each model is loaded once for all of its datasets.
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

    store = open_store(store_root, create=True)
    existing = {m.name for m in store.runs()}
    todo = [c for c in default_configs(models) if c.name not in existing]
    if not todo:
        print(f"[defaults] all default runs already in {store_root}", file=sys.stderr)
        return []
    created, loaded = [], {}
    for config in todo:
        print(f"[defaults] {config.name}", file=sys.stderr, flush=True)
        if config.model not in loaded:
            loaded.clear()  # one model in memory at a time
            loaded[config.model] = load(resolve(config.model), config.backend, config.device)
        result = execute(
            config, store_root, resume=True, progress=progress, loaded=loaded[config.model]
        )
        created.append(result.run_id)
    return created
