"""What a control-vector computation and a steering request can be asked for (standard library).

* `VectorSettings`: `python -m extraction vectors` - which paired run, which method, which hook
  and layers. The command line is built from it (`add_vector_arguments`, `argv()`), so the CLI,
  the app's job for it and the tests cannot drift apart.
* `SteerSettings`: `python -m extraction steer` and the app's steering worker - a prompt, a
  vector set, the layers it is added at and a strength (in units of each layer's typical
  residual norm), how many tokens to generate and the seed of the random control.

Every check raises ValueError naming the bad value; nothing here does I/O.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields
from typing import Any

from settings.records import settings_from_dict, settings_to_dict
from settings.run import (
    LAYERS_HELP,
    check_bool,
    check_choice,
    check_int,
    parse_layer_spec,
    validate_run_id,
)

# The definitions are analysis.control's (repeng's); the names live here so that the CLI, the
# job registry and the pages share them without importing numpy.
METHODS = ("pca_center", "pca_diff", "mean_diff")
METHOD_HELP = {
    "pca_center": "first principal component of the paired differences, uncentred",
    "pca_diff": "first principal component of the paired differences, centred",
    "mean_diff": "mean of the paired differences",
}
# Residual-stream sites only: a vector read there is added back at the same site when steering.
VECTOR_HOOKS = ("resid_post", "resid_pre")
MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 512
MAX_STRENGTH = 100.0


def _argv(record, defaults) -> tuple[str, ...]:
    """`--field=value` for every field that is required or differs from its default."""
    args = []
    for f in fields(record):
        value = getattr(record, f.name)
        if value is None or (f.name in defaults and value == defaults[f.name]):
            continue
        if isinstance(value, bool):
            args.extend([f"--{f.name.replace('_', '-')}"] if value else [])
        else:
            args.append(f"--{f.name.replace('_', '-')}={value}")
    return tuple(args)


@dataclass(frozen=True)
class VectorSettings:
    """One control-vector computation. `run` is a run id of the store (checked by the caller)."""

    run: str
    method: str = "pca_center"
    hook: str = "resid_post"
    layers: str = "all"
    name: str | None = None

    def __post_init__(self) -> None:
        validate_run_id(self.run)
        check_choice("method", self.method, METHODS)
        check_choice("hook", self.hook, VECTOR_HOOKS)
        parse_layer_spec(self.layers)
        object.__setattr__(self, "layers", self.layers.replace(" ", ""))
        if self.name is not None:
            validate_run_id(self.name)

    def to_dict(self) -> dict[str, Any]:
        return settings_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> VectorSettings:
        return settings_from_dict(cls, data, "vectors")

    def argv(self) -> tuple[str, ...]:
        """The options of `python -m extraction vectors` that ask for exactly these settings."""
        return _argv(self, {f.name: f.default for f in fields(VectorSettings) if f.name != "run"})


def add_vector_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a paired run: its id or a unique prefix")
    parser.add_argument("--method", default="pca_center", help=", ".join(
        f"{name} ({text})" for name, text in METHOD_HELP.items()) + " [pca_center]")  # fmt: skip
    parser.add_argument("--hook", default="resid_post",
                        help=f"{', '.join(VECTOR_HOOKS)} [resid_post]")  # fmt: skip
    parser.add_argument("--layers", default="all", help=LAYERS_HELP + " [all]")
    parser.add_argument("--name", help="a name for the vector set (letters, digits, . _ -)")


def check_strength(value: object) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or abs(value) > MAX_STRENGTH:
        raise ValueError(
            f"strength {value!r:.40} must be a number in -{MAX_STRENGTH:g}..{MAX_STRENGTH:g}"
        )
    return float(value)


@dataclass(frozen=True)
class SteerSettings:
    """One steering request: generate from `prompt` with vector set `vector_set` added at
    `layers` (a layer spec, resolved against the set's layers) with `strength` times each
    layer's typical residual norm, next to the baseline and a random direction of the same norm.
    """

    prompt: str
    vector_set: str
    layers: str = "all"
    strength: float = 1.0
    max_new_tokens: int = 40
    seed: int = 0
    chat_template: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("prompt is empty")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is too long (over {MAX_PROMPT_CHARS} characters)")
        if "\x00" in self.prompt:
            raise ValueError("prompt has a NUL character")
        validate_run_id(self.vector_set)
        parse_layer_spec(self.layers)
        object.__setattr__(self, "layers", self.layers.replace(" ", ""))
        object.__setattr__(self, "strength", check_strength(self.strength))
        check_int("max new tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        check_int("seed", self.seed, 0, 2**32 - 1)
        check_bool("chat_template", self.chat_template)

    def to_dict(self) -> dict[str, Any]:
        return settings_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> SteerSettings:
        return settings_from_dict(cls, data, "steer")


def add_steer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="what to answer")
    parser.add_argument("--vector-set", required=True, help="a vector set id or unique prefix")
    parser.add_argument("--layers", default="all",
                        help=LAYERS_HELP + " of the vector set's layers [all]")  # fmt: skip
    parser.add_argument("--strength", type=float, default=1.0,
                        help="times each layer's typical residual norm; negative steers toward "
                        "the first style [1.0]")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=40, help="[40]")
    parser.add_argument("--seed", type=int, default=0, help="of the random control [0]")
    parser.add_argument("--no-chat-template", action="store_true",
                        help="plain text even when the model has a chat template")  # fmt: skip


def steer_settings_from_args(args: argparse.Namespace, vector_set: str) -> SteerSettings:
    return SteerSettings(
        prompt=args.prompt, vector_set=vector_set, layers=args.layers, strength=args.strength,
        max_new_tokens=args.max_new_tokens, seed=args.seed,
        chat_template=not args.no_chat_template,
    )  # fmt: skip
