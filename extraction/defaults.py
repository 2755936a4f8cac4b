"""The default runs that the README's first command puts in an empty store.

Each (model, dataset) pair is one run named `default-<dataset>-<model>`; a pair whose run is
already committed is skipped and an interrupted one is resumed, so the command is cheap to repeat.
Each model is loaded once for all of its datasets.

One more run keeps every token (position `all`) of the minimal pairs on the first model, with
`resid_post` only: it makes the Read API's `token_vectors` and the Pairs page's per-token view work
on a fresh store. It is named `default-minimal-pairs-tokens-<model>`, so the other defaults' names
stay unambiguous prefixes of their run ids.

The chat model (SmolLM2-135M-Instruct, `settings.run.ANSWERING_MODELS`) also answers the
propositions (`default-propositions-answers-<model>`, `--generate 3`), so the Propositions page
has answers on first start.

And SmolLM2 gets a last-token `resid_post` run of the built-in `style_pairs`
(`default-style-pairs-smollm2-135m`), so a control vector can be extracted on first start
(`python -m extraction vectors`, or the Vectors page). It is made just before the first model's
tokens run, so it is never the newest paired run a page opens by default.
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
TOKENS_DATASET = "minimal_pairs"
TOKENS_HOOKS = ("resid_post",)
TOKENS_POSITIONS = ("all",)
# The 24 propositions in one batch: generation pays per step, so one batch of 24 answers in half
# the time of a batch of 16 and one of 8.
ANSWER_BATCH_SIZE = 32


STYLE_MODELS = ("smollm2-135m",)
STYLE_DATASET = "style_pairs"


def style_configs(models: tuple[str, ...]) -> list[RunSettings]:
    """The paired style run control vectors are made from (last token, every layer)."""
    return [
        RunSettings(
            model=model,
            dataset=STYLE_DATASET,
            hooks=("resid_post",),
            layers="all",
            positions=("last",),
            name=f"default-style-pairs-{model}",
        )  # fmt: skip
        for model in models
        if model in STYLE_MODELS
    ]


def default_configs(models: tuple[str, ...]) -> list[RunSettings]:
    """The default runs for `models`, in the order they are made.

    The first model's runs come last (listings are newest first, so it leads them), its tokens
    run just before its pooled runs: the Pairs page opens the newest minimal-pairs run, which
    must have a pooled position, and finds the tokens run for its per-token view.
    """

    def run(model: str, dataset: str, hooks, positions, kind: str = "") -> RunSettings:
        name = f"default-{dataset}{kind}-{model}".replace("_", "-")
        return RunSettings(model=model, dataset=dataset, hooks=hooks, layers="all",
                           positions=positions, name=name)  # fmt: skip

    def pooled(model: str) -> list[RunSettings]:
        return [run(model, d, DEFAULT_HOOKS, DEFAULT_POSITIONS) for d in DEFAULT_DATASETS]

    def answers(model: str) -> list[RunSettings]:
        if model not in ANSWERING_MODELS:
            return []
        name = f"default-propositions-answers-{model}"
        config = RunSettings(
            model=model, dataset="propositions", hooks=DEFAULT_HOOKS, layers="all",
            positions=DEFAULT_POSITIONS, name=name, generate=ANSWER_TOKENS_POOLED,
            batch_size=ANSWER_BATCH_SIZE,
        )  # fmt: skip
        return [config]

    if not models:
        return []
    tokens = run(models[0], TOKENS_DATASET, TOKENS_HOOKS, TOKENS_POSITIONS, "-tokens")
    others = [c for model in reversed(models[1:]) for c in [*answers(model), *pooled(model)]]
    return [*others, *answers(models[0]), *style_configs(models), tokens, *pooled(models[0])]


def fill_defaults(store_root: Path, configs: list[RunSettings], progress: bool = True) -> list[str]:
    """Make each of `configs` (normally `default_configs(models)`) whose name the store lacks."""
    from extraction.loading import load
    from extraction.models import resolve
    from store.writer import list_uncommitted

    store = open_store(store_root, create=True)
    existing = {m.name for m in store.runs()}
    todo = [c for c in configs if c.name not in existing]
    if not todo:
        print(f"[defaults] all default runs already in {store_root}", file=sys.stderr)
        return []
    created, loaded = [], {}
    for config in todo:
        print(f"[defaults] {config.name}", file=sys.stderr, flush=True)
        if config.model not in loaded:
            loaded.clear()  # one model in memory at a time
            loaded[config.model] = load(resolve(config.model), config.backend, config.device)
        # Resume only when there is something to resume: a fresh store is filled quietly.
        resume = bool(list_uncommitted(Path(store_root)))
        # Only the style run saves its model's readout (the Vectors page's words of the style
        # vector): Gemma-3-270M's alone would add 336 MB that nothing on first start reads.
        result = execute(
            config, store_root, resume=resume, progress=progress, loaded=loaded[config.model],
            readout=config.dataset == STYLE_DATASET,
        )  # fmt: skip
        created.append(result.run_id)
    return created
