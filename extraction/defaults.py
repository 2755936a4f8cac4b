"""The default runs that the README's first command puts in an empty store.

Each (model, dataset) pair is one run named `default-<dataset>-<model>`; a pair whose run is
already committed is skipped and an interrupted one is resumed, so the command is cheap to repeat.
Each model is loaded once for all of its datasets. The chat model (SmolLM2-135M-Instruct) also
answers the propositions (`default-propositions-answers-<model>`, `--generate 3`), so the
Propositions page has answers on first start.
"""

from __future__ import annotations

import sys
from pathlib import Path

from extraction.runner import execute
from settings.run import ANSWER_TOKENS_POOLED, ANSWERING_MODELS, RunSettings
from store import open_store

DEFAULT_DATASETS = ("emotions", "minimal_pairs", "propositions")
DEFAULT_HOOKS = ("resid_pre", "resid_post", "mlp_out")
DEFAULT_POSITIONS = ("last", "mean")
# The 24 propositions in one batch: generation pays per step, so one batch of 24 answers in half
# the time of a batch of 16 and one of 8.
ANSWER_BATCH_SIZE = 32


def default_configs(models: tuple[str, ...]) -> list[RunSettings]:
    """The default runs, grouped by model (each model is loaded once)."""
    configs = []
    for model in models:
        common = dict(model=model, hooks=DEFAULT_HOOKS, layers="all", positions=DEFAULT_POSITIONS)
        for dataset in DEFAULT_DATASETS:
            name = f"default-{dataset}-{model}".replace("_", "-")
            configs.append(RunSettings(dataset=dataset, name=name, **common))
        if model in ANSWERING_MODELS:
            configs.append(
                RunSettings(
                    dataset="propositions",
                    name=f"default-propositions-answers-{model}",
                    generate=ANSWER_TOKENS_POOLED,
                    batch_size=ANSWER_BATCH_SIZE,
                    **common,
                )
            )
    return configs


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
