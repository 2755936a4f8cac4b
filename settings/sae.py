"""SAE settings: the one definition of what SAE training and SAE feature extraction take.

Standard library only, like `settings.run`, so the extraction CLI, the store, the job registry
and the app share it. It holds

* the vocabulary: where a feature run reads features (`SAE_POSITIONS`), and the sae-lens /
  TransformerLens hook names (`blocks.L.hook_resid_post`) that SAE configs use for our sites;
* `TrainSaeSettings` (`python -m extraction train-sae`) and `SaeSettings`
  (`python -m extraction sae`), validated records whose command-line options are built from
  `TRAIN_SAE_OPTIONS` / `SAE_OPTIONS` and written back by `.argv()`, as for `RunSettings`.

Defaults are chosen for a CPU and the embedded SmolLM2 (d_model 576): a TopK SAE of 2048
features (3.5x d_model; training cost grows with the width) with k = 32, trained with Adam at
1e-3 on batches of 512 tokens for 15 passes over the run. Measured on the built-in
prompt_responses run at layer 15 (4.9k tokens, a fifth of the tokens held out): explained
variance 0.63 after 70 steps and 0.67 after 285 at lr 1e-3 / 5e-4, against 0.49 for the best
32-dimensional linear reconstruction (PCA); 1e-3 reaches in 70 steps what 5e-4 reaches in 150.
Every check raises `ValueError` naming the bad value; nothing here does I/O.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from typing import Any

from settings.records import settings_from_dict, settings_to_dict
from settings.run import (
    _DEVICE,
    BACKENDS,
    COMPUTE_DTYPES,
    HOOKS,
    MAX_BATCH_SIZE,
    MAX_LAYER_INDEX,
    MAX_LENGTH_LIMIT,
    TL_PROCESSING,
    RunOption,
    add_option_arguments,
    check_bool,
    check_choice,
    check_int,
    check_text,
    options_argv,
    validate_run_id,
)

# last_prompt: the last token before the response (what the model has read when it answers);
# all: every token of prompt + response.
SAE_POSITIONS = ("last_prompt", "all")
MAX_D_SAE = 1 << 22  # 4M features: far beyond any released SAE, small enough for an int32 id
MAX_TOP_K = 1024
MAX_TRAINING_TOKENS = 10**10
DEFAULT_PASSES = 15
MIN_DEFAULT_TOKENS, MAX_DEFAULT_TOKENS = 50_000, 5_000_000
MAX_SAE_ID_CHARS = 300  # a sae-lens id such as "layer_12/width_16k/average_l0_82"

_TL_HOOK = re.compile(r"^blocks\.(\d{1,4})\.hook_(resid_pre|resid_post|mlp_out|attn_out)$")


def tl_hook_name(hook: str, layer: int) -> str:
    """Our site as sae-lens and TransformerLens name it: ('resid_post', 12) ->
    'blocks.12.hook_resid_post' (the same layer convention: block L, 0-based)."""
    check_choice("hook", hook, HOOKS)
    check_int("layer", layer, 0, MAX_LAYER_INDEX)
    return f"blocks.{layer}.hook_{hook}"


def parse_tl_hook_name(name: object) -> tuple[str, int]:
    """'blocks.12.hook_resid_post' -> ('resid_post', 12); ValueError for any hook we do not
    capture (attention internals, hook_z, MLP inputs, embeddings)."""
    match = _TL_HOOK.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"SAE hook {str(name)[:120]!r} is not a site this tool captures; it reads "
            f"blocks.L.hook_{{{','.join(HOOKS)}}}"
        )
    return match[2], int(match[1])


def default_training_tokens(run_tokens: int) -> int:
    """Tokens to train on when not given: DEFAULT_PASSES passes over the run, clamped."""
    return min(max(DEFAULT_PASSES * run_tokens, MIN_DEFAULT_TOKENS), MAX_DEFAULT_TOKENS)


def _check_float(kind: str, value: object, low: float, high: float) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not low < value <= high:
        raise ValueError(f"{kind} {value!r:.80} must be a number in ({low:g}, {high:g}]")
    return float(value)


def _check_device(value: object) -> None:
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ValueError(f"unknown device {value!r:.80}; use auto, cpu, cuda or cuda:N")


class _Settings:
    """The dict and command-line forms every settings record shares."""

    OPTIONS: tuple[RunOption, ...] = ()
    WHAT = "SAE"  # names the settings in messages: "unknown SAE setting 'x'"

    def to_dict(self) -> dict[str, Any]:
        return settings_to_dict(self)

    @classmethod
    def from_dict(cls, data: object):
        """From a record on disk (job.json): unknown or missing keys are errors."""
        return settings_from_dict(cls, data, cls.WHAT)

    def argv(self) -> tuple[str, ...]:
        """The options of the command that ask for exactly these settings."""
        return options_argv(self, self.OPTIONS)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_option_arguments(parser, cls.OPTIONS, cls)

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        return cls(**{option.field: getattr(args, option.field) for option in cls.OPTIONS})


@dataclass(frozen=True)
class TrainSaeSettings(_Settings):
    """What one SAE training is asked to do (`python -m extraction train-sae`).

    `run` is a run id (or an unambiguous prefix) of an `all`-positions run; `layer` may count
    back from the end (-1 = last). `training_tokens` None means: `DEFAULT_PASSES` passes over
    the run's tokens, at least 50,000 and at most 5,000,000 tokens.
    """

    run: str
    layer: int
    hook: str = "resid_post"
    d_sae: int = 2048
    k: int = 32
    training_tokens: int | None = None
    batch_size: int = 512
    lr: float = 1e-3
    seed: int = 0
    include_first_token: bool = False
    name: str | None = None
    device: str = "auto"
    WHAT = "SAE training"

    def __post_init__(self) -> None:
        check_text("run", self.run)
        check_int("layer", self.layer, -MAX_LAYER_INDEX, MAX_LAYER_INDEX)
        check_choice("hook", self.hook, HOOKS)
        check_int("d_sae", self.d_sae, 2, MAX_D_SAE)
        check_int("k", self.k, 1, min(self.d_sae, MAX_TOP_K))
        if self.training_tokens is not None:
            check_int("training tokens", self.training_tokens, 1, MAX_TRAINING_TOKENS)
        check_int("batch size", self.batch_size, 1, 1 << 20)
        _check_float("learning rate", self.lr, 0.0, 1.0)
        check_int("seed", self.seed, 0, 2**31 - 1)
        check_bool("include_first_token", self.include_first_token)
        if self.name is not None:
            validate_run_id(self.name)
        _check_device(self.device)


TrainSaeSettings.OPTIONS = (
    RunOption("run", "an all-positions run id (or an unambiguous prefix) to train on",
              required=True),
    RunOption("layer", "the layer to train on (-1 = last)", "int", required=True),
    RunOption("hook", f"the site: {', '.join(HOOKS)}"),
    RunOption("d_sae", "number of SAE features", "int"),
    RunOption("k", "active features per token (TopK SAE)", "int"),
    RunOption("training_tokens", "tokens to train on in all (default: 15 passes over the "
              "run, 50k..5M)", "int"),
    RunOption("batch_size", "tokens per training step", "int"),
    RunOption("lr", "Adam learning rate", "float"),
    RunOption("seed", "random seed (initial weights, shuffling, held-out split)", "int"),
    RunOption("include_first_token", "train on each sample's first token too (off: it is an "
              "attention sink with huge activations that would dominate the loss)", "flag"),
    RunOption("name", "an id for the SAE (letters, digits, . _ -)"),
    RunOption("device", "auto, cpu, cuda, cuda:N or mps"),
)  # fmt: skip


@dataclass(frozen=True)
class SaeSettings(_Settings):
    """What one SAE feature extraction is asked to do (`python -m extraction sae`).

    `sae` is a folder in sae-lens's format, an SAE id (or prefix) of the store, or, with
    `sae_id`, a sae-lens release name. Records are prompt + response, run with teacher forcing.
    """

    model: str
    dataset: str
    sae: str
    sae_id: str | None = None
    positions: str = "last_prompt"
    top_k: int = 50
    batch_size: int = 16
    max_length: int = 512
    chat_template: bool = False
    backend: str = "hf"
    tl_processing: str = "none"
    name: str | None = None
    device: str = "auto"
    compute_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_text("model", self.model)
        check_text("dataset", self.dataset)
        check_text("sae", self.sae)
        if self.sae_id is not None:
            check_text("sae id", self.sae_id, MAX_SAE_ID_CHARS)
        check_choice("positions", self.positions, SAE_POSITIONS)
        check_int("top k", self.top_k, 1, MAX_TOP_K)
        check_int("batch size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_int("max length", self.max_length, 2, MAX_LENGTH_LIMIT)
        check_bool("chat_template", self.chat_template)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("TransformerLens processing", self.tl_processing, TL_PROCESSING)
        if self.name is not None:
            validate_run_id(self.name)
        _check_device(self.device)
        check_choice("compute dtype", self.compute_dtype, COMPUTE_DTYPES)


SaeSettings.OPTIONS = (
    RunOption("model", "an embedded name, a local folder with config.json, or an HF id",
              required=True),
    RunOption("dataset", "prompt + response records: a .jsonl/.csv file, a .json file "
              "(records may sit nested, e.g. results[].variations[]) or a built-in name",
              required=True),
    RunOption("sae", "an SAE folder (sae-lens format), an SAE id of the store, or a sae-lens "
              "release (with --sae-id)", required=True),
    RunOption("sae_id", "the SAE's id within a sae-lens release"),
    RunOption("positions", f"{' or '.join(SAE_POSITIONS)}: the last prompt token, or every "
              "token"),
    RunOption("top_k", "features kept per position", "int"),
    RunOption("batch_size", f"records per forward pass (1..{MAX_BATCH_SIZE})", "int"),
    RunOption("max_length", "tokens per record; longer responses are cut", "int"),
    RunOption("chat_template", "wrap prompt and response as a user and an assistant turn",
              "flag"),
    RunOption("backend", f"{', '.join(BACKENDS)}"),
    RunOption("tl_processing", f"TransformerLens weight processing: {', '.join(TL_PROCESSING)}"),
    RunOption("name", "a name for the feature run (letters, digits, . _ -)"),
    RunOption("device", "auto, cpu, cuda, cuda:N or mps"),
    RunOption("compute_dtype", f"dtype of the forward pass: {', '.join(COMPUTE_DTYPES)}"),
)  # fmt: skip
