"""Run settings: the one definition of what an extraction run can be asked for.

Standard library only (no torch, no streamlit, no duckdb), so every layer imports it: the
extraction CLI and runner, the store (manifests, snapshot layer lists), the job registry and the
New run page. It holds

* the vocabulary: hook sites, pooled positions, storage and compute dtypes, backends;
* the layer grammar (`all`, `5`, `0,4,8`, `10-20`, `-1`) and its resolution against a model;
* run ids: what a safe id is, and how a new one is made;
* `RunSettings`, the validated record of one run's options, with its command-line form: the
  argparse options of `python -m extraction run` are built from `RUN_OPTIONS`, and
  `RunSettings.argv()` writes the same options back, so the CLI, the job registry and the tests
  cannot drift apart.

Every check raises `ValueError` naming the bad value; nothing here does I/O.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from settings.records import settings_from_dict, settings_to_dict

HOOKS = ("resid_pre", "resid_post", "mlp_out", "attn_out")
POSITIONS = ("last", "mean", "all", "answer_mean")
POOLED_POSITIONS = ("last", "mean")
# `answer_mean`: the mean over the first N answer states of a generation run (`--generate N`).
ANSWER_POSITION = "answer_mean"
# Which states of an answer `answer_mean` pools (see extraction.answer_states):
# producing = the states that produce answer tokens 1..N (the last prompt position, then answer
# tokens 1..N-1), as generate(output_hidden_states=True) returns them per step;
# own = the answer tokens' own positions 1..N.
ANSWER_STATES = ("producing", "own")
# The default runs' answering models (those with a chat template) and the answer tokens they pool:
# `python -m extraction defaults` makes these, and the Propositions page suggests them.
ANSWERING_MODELS = ("smollm2-135m",)
ANSWER_TOKENS_POOLED = 3
# Positions stored with one row per token; every other position has one row per sample (and so
# gets per-label summaries at commit, see store.summaries).
TOKEN_POSITIONS = ("all",)
STORAGE_DTYPES = ("float16", "float32")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
BACKENDS = ("hf", "transformer_lens")
TL_PROCESSING = ("none", "default")
# `--device-map`: accelerate's placements, one device, or a .json file {module name: device}
# (devices: a GPU number, cuda:N, cpu, mps or disk; see extraction.loading.device_map_of).
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
QUANTIZE = ("8bit", "4bit")

RUN_ID_MAX = 128
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LAYERS_HELP = "all, 5, 0,4,8, 10-20 or -1 (last)"
# Bounds that keep a hostile layer spec ('0-999999999', 100 KB of commas) from costing memory.
MAX_LAYER_SPEC_CHARS = 400
MAX_LAYER_INDEX = 4096
_LAYER_PART = re.compile(r"(-?\d{1,5})(?:-(\d{1,5}))?")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
MAX_TEXT_CHARS = 500
MAX_BATCH_SIZE = 4096
MAX_LENGTH_LIMIT = 1_000_000
MAX_GENERATE = 256
MAX_NEW_TOKENS = 4096
MAX_TEMPERATURE = 100.0
MAX_SEED = 2**31 - 1


# -- run ids -------------------------------------------------------------------------------------
def validate_run_id(run_id: object) -> str:
    """Return `run_id` if it is safe as a single directory name, else raise ValueError."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        shown = run_id[:80] if isinstance(run_id, str) else run_id
        raise ValueError(
            f"run id {shown!r} is not valid: use letters, digits, '.', '_' and '-' "
            f"(at most {RUN_ID_MAX}, starting with a letter or digit)"
        )
    return run_id


def safe_base(text: str) -> str:
    """`text` made into the start of a run id: runs of other characters become '-'."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._").replace("..", ".")
    return base[:80] or "run"


def new_run_id(base: str, now: datetime | None = None) -> str:
    """`<base>-<UTC stamp>-<random hex>`: unique, sortable by time, safe as a folder name."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return validate_run_id(f"{safe_base(base)[:100]}-{stamp}-{os.urandom(3).hex()}")


# -- layers --------------------------------------------------------------------------------------
def parse_layer_spec(spec: object) -> tuple[int, ...] | None:
    """`all` -> None; otherwise the listed layers in order, negatives kept (-1 = last).

    Ranges `a-b` need 0 <= a <= b. Raises ValueError for anything else, so a spec is refused
    where it is typed (CLI, job queue, snapshot), not after a model has loaded.
    """
    if not isinstance(spec, str):
        raise ValueError(f"layers {spec!r} must be text: {LAYERS_HELP}")
    text = spec.replace(" ", "")
    if len(text) > MAX_LAYER_SPEC_CHARS:
        raise ValueError(f"layers {spec[:40]!r}... is too long (over {MAX_LAYER_SPEC_CHARS})")
    if text == "all":
        return None
    layers: list[int] = []
    for part in text.split(","):
        match = _LAYER_PART.fullmatch(part)
        if not match:
            raise ValueError(f"bad layer {part!r} in {spec!r}; use {LAYERS_HELP}")
        start = int(match[1])
        end = int(match[2]) if match[2] else start
        if match[2] and not 0 <= start <= end:
            raise ValueError(f"bad layer range {part!r} in {spec!r}: use low-high, e.g. 10-20")
        if max(abs(start), end) > MAX_LAYER_INDEX:
            raise ValueError(f"layer {part!r} in {spec!r} is beyond {MAX_LAYER_INDEX}")
        layers.extend(range(start, end + 1))
    return tuple(layers)


def resolve_layers(spec: str | tuple[int, ...] | None, n_layers: int) -> tuple[int, ...]:
    """Layer indices of a model with `n_layers` blocks: sorted, unique, negatives counted back."""
    wanted = parse_layer_spec(spec) if isinstance(spec, str) else spec
    if wanted is None:
        return tuple(range(n_layers))
    resolved = set()
    for layer in wanted:
        actual = layer + n_layers if layer < 0 else layer
        if not 0 <= actual < n_layers:
            raise ValueError(f"layer {layer} out of range 0..{n_layers - 1} (or -{n_layers}..-1)")
        resolved.add(actual)
    return tuple(sorted(resolved))


_NEGATIVE_VALUE = re.compile(r"-\d")


def join_option_values(argv: list[str], flags: tuple[str, ...] | list[str]) -> list[str]:
    """`--layers -1,0` -> `--layers=-1,0` for each of `flags`, before argparse sees it.

    argparse reads a value that starts with '-' and is not a plain negative number (`-1,0`,
    `-2-3`) as an unknown option and refuses it; joined with '=', it is a value. Only values
    that start with '-' and a digit are joined, and nothing after a bare `--`.
    """
    out: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            out.extend(args[index:])
            break
        following = args[index + 1] if index + 1 < len(args) else None
        if arg in flags and following is not None and _NEGATIVE_VALUE.match(following):
            out.append(f"{arg}={following}")
            index += 2
            continue
        out.append(arg)
        index += 1
    return out


def describe_layers(layers: tuple[int, ...] | list[int]) -> str:
    """`0..5, 8, 17` for messages: consecutive runs collapsed, gaps kept visible."""
    parts, run = [], []
    for layer in sorted(layers):
        if run and layer == run[-1] + 1:
            run.append(layer)
            continue
        if run:
            parts.append(f"{run[0]}..{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
        run = [layer]
    if run:
        parts.append(f"{run[0]}..{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
    return ", ".join(parts) or "none"


# -- checks --------------------------------------------------------------------------------------
def check_text(kind: str, value: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind} {value!r:.80} is empty")
    if len(value) > max_chars or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{kind} {value[:80]!r} is too long or has control characters")
    return value


def check_choices(kind: str, values: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A non-empty tuple of known names, without repeats (`kind` is plural: 'hooks')."""
    if isinstance(values, str) or not isinstance(values, tuple | list):
        raise ValueError(f"{kind} {values!r:.80} must be a list of names")
    if not values:
        raise ValueError(f"{kind} must not be empty; choose from {', '.join(allowed)}")
    for value in values:
        if value not in allowed:
            raise ValueError(f"unknown {kind[:-1]} {value!r:.80}; choose from {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{kind} {', '.join(values)} name one twice")
    return tuple(values)


def check_choice(kind: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r:.80}; choose from {', '.join(allowed)}")
    return value  # type: ignore[return-value]


def check_int(kind: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{kind} {value!r:.80} must be a whole number in {low}..{high}")
    return value


def check_float(kind: str, value: object, low: float, high: float) -> float:
    if type(value) not in (int, float) or not low <= value <= high:  # nan fails both comparisons
        raise ValueError(f"{kind} {value!r:.80} must be a number in {low:g}..{high:g}")
    return float(value)


def check_bool(kind: str, value: object) -> bool:
    if type(value) is not bool:
        raise ValueError(f"{kind} {value!r:.80} must be true or false")
    return value


# -- the settings of one run ---------------------------------------------------------------------
@dataclass(frozen=True)
class RunSettings:
    """What one extraction run is asked to do. Validates every field; does no I/O.

    Layers stay a spec (`all`, `-1`, ...) until a model says how many it has
    (`resolve_layers`). `model` is an embedded name, a local folder or a Hugging Face id;
    `dataset` a built-in name or a file path: whether they exist is for the runner to find out.
    """

    model: str
    dataset: str
    hooks: tuple[str, ...] = ("resid_post",)
    layers: str = "all"
    positions: tuple[str, ...] = POOLED_POSITIONS
    dtype: str = "float16"
    backend: str = "hf"
    tl_processing: str = "none"
    batch_size: int = 16
    max_length: int = 512
    include_first_token: bool = False
    chat_template: bool = False
    name: str | None = None
    device: str = "auto"
    compute_dtype: str = "float32"
    generate: int = 0
    max_new_tokens: int = 32
    temperature: float = 0.0
    seed: int = 0
    answer_states: str = "producing"
    device_map: str | None = None
    quantize: str | None = None

    def __post_init__(self) -> None:
        check_text("model", self.model)
        check_text("dataset", self.dataset)
        object.__setattr__(self, "hooks", check_choices("hooks", self.hooks, HOOKS))
        object.__setattr__(self, "positions", check_choices("positions", self.positions, POSITIONS))
        parse_layer_spec(self.layers)
        object.__setattr__(self, "layers", self.layers.replace(" ", ""))
        check_choice("dtype", self.dtype, STORAGE_DTYPES)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("TransformerLens processing", self.tl_processing, TL_PROCESSING)
        check_int("batch size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_int("max length", self.max_length, 2, MAX_LENGTH_LIMIT)
        check_bool("include_first_token", self.include_first_token)
        check_bool("chat_template", self.chat_template)
        if self.name is not None:
            validate_run_id(self.name)
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ValueError(f"unknown device {self.device!r:.80}; use auto, cpu, cuda or cuda:N")
        check_choice("compute dtype", self.compute_dtype, COMPUTE_DTYPES)
        self._check_generation()
        self._check_placement()

    def _check_placement(self) -> None:
        """`--device-map` and `--quantize`: known forms only (the file is read when loading)."""
        if self.device_map is not None:
            check_text("device map", self.device_map)
            known = self.device_map in DEVICE_MAPS or _DEVICE.match(self.device_map)
            if not known and not self.device_map.endswith(".json"):
                raise ValueError(
                    f"device map {self.device_map!r:.80} is not {', '.join(DEVICE_MAPS)}, a "
                    "device (cpu, cuda:N) or a .json file of {module: device}"
                )
            if self.backend != "hf":
                raise ValueError(f"--device-map needs --backend hf, not {self.backend!r}")
        if self.quantize is not None:
            check_choice("quantization", self.quantize, QUANTIZE)
            if self.backend != "hf":
                raise ValueError(f"--quantize needs --backend hf, not {self.backend!r}")

    def _check_generation(self) -> None:
        """`--generate N` and its options: only together, and only where they make sense."""
        check_int("generate", self.generate, 0, MAX_GENERATE)
        check_int("max new tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        object.__setattr__(
            self, "temperature", check_float("temperature", self.temperature, 0, MAX_TEMPERATURE)
        )
        check_int("seed", self.seed, 0, MAX_SEED)
        check_choice("answer states", self.answer_states, ANSWER_STATES)
        if not self.generate:
            if ANSWER_POSITION in self.positions:
                raise ValueError(
                    f"position {ANSWER_POSITION!r} needs --generate N (how many answer tokens "
                    "to pool)"
                )
            defaults = {f.name: f.default for f in fields(RunSettings)}
            for name in GENERATION_FIELDS[1:]:
                if getattr(self, name) != defaults[name]:
                    flag = "--" + name.replace("_", "-")
                    raise ValueError(f"{flag} {getattr(self, name)!r:.80} needs --generate N")
            return
        if self.backend != "hf":
            raise ValueError(f"--generate needs --backend hf, not {self.backend!r}")
        if "all" in self.positions:
            raise ValueError("position 'all' cannot be combined with --generate")
        needed = self.generate + (1 if self.answer_states == "own" else 0)
        if self.max_new_tokens < needed:
            why = (
                " (the state of answer token N is computed while producing token N+1)"
                if self.answer_states == "own"
                else ""
            )
            raise ValueError(
                f"max new tokens {self.max_new_tokens} is too few to pool {self.generate} answer "
                f"states with answer states {self.answer_states!r}: use at least {needed}{why}"
            )
        if ANSWER_POSITION not in self.positions:  # --generate N asks for the position
            object.__setattr__(self, "positions", (*self.positions, ANSWER_POSITION))

    def to_dict(self) -> dict[str, Any]:
        return settings_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> RunSettings:
        """From a record on disk (job.json, config.json): unknown or missing keys are errors."""
        return settings_from_dict(cls, data, "run")

    def argv(self) -> tuple[str, ...]:
        """The options of `python -m extraction run` that ask for exactly these settings.

        Only non-default values are written, each as `--flag=value` (so a value starting with
        '-', such as layers `-1`, is never read as an option).
        """
        return options_argv(self, RUN_OPTIONS)


@dataclass(frozen=True)
class RunOption:
    """One `python -m extraction run` option, bound to a RunSettings field."""

    field: str
    help: str
    kind: str = "text"  # text, list, int, float, flag
    required: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def render(self, value: Any) -> list[str]:
        if self.kind == "flag":
            return [self.flag] if value else []
        if value is None:
            return []
        text = ",".join(value) if self.kind == "list" else str(value)
        return [f"{self.flag}={text}"]


RUN_OPTIONS = (
    RunOption("model", "an embedded name, a local folder with config.json, or an HF id",
              required=True),
    RunOption("dataset", "a .jsonl/.csv file or a built-in name", required=True),
    RunOption("hooks", f"comma-separated: {', '.join(HOOKS)}", "list"),
    RunOption("layers", LAYERS_HELP),
    RunOption("positions", f"comma-separated: {', '.join(POSITIONS)}", "list"),
    RunOption("dtype", f"storage dtype: {', '.join(STORAGE_DTYPES)}"),
    RunOption("backend", f"{', '.join(BACKENDS)}"),
    RunOption("tl_processing", f"TransformerLens weight processing: {', '.join(TL_PROCESSING)}"),
    RunOption("batch_size", f"samples per forward pass (1..{MAX_BATCH_SIZE})", "int"),
    RunOption("max_length", "tokens per sample; longer samples are truncated", "int"),
    RunOption("include_first_token", "include the first token in `mean` (off: it is an "
              "attention sink whose huge activations dominate a plain mean)", "flag"),
    RunOption("chat_template", "wrap each text as a user turn of the model's chat template",
              "flag"),
    RunOption("name", "a name for the run (letters, digits, . _ -)"),
    RunOption("device", "auto, cpu, cuda, cuda:N or mps"),
    RunOption("compute_dtype", f"dtype of the forward pass: {', '.join(COMPUTE_DTYPES)}"),
    RunOption("generate", "answer each prompt (through the chat template when the tokenizer has "
              f"one) and store {ANSWER_POSITION!r}: the mean of the first N answer states per hook "
              "and layer; 0: no answers", "int"),
    RunOption("max_new_tokens", "with --generate: longest answer, in tokens", "int"),
    RunOption("temperature", "with --generate: 0 is greedy; above 0 samples, seeded per sample",
              "float"),
    RunOption("seed", "with --generate and a temperature: the sampling seed", "int"),
    RunOption("answer_states", "with --generate: which states answer_mean pools: producing (the "
              "states that produce answer tokens 1..N: the last prompt position, then answer "
              "tokens 1..N-1) or own (answer tokens 1..N at their own positions)"),
    RunOption("device_map", "spread the model over devices with accelerate: "
              f"{', '.join(DEVICE_MAPS)}, one device, or a .json file of {{module: device}} "
              "(cpu, a GPU, disk for offload); replaces --device"),
    RunOption("quantize", f"load the weights quantised with bitsandbytes: {', '.join(QUANTIZE)} "
              "(needs a CUDA GPU)"),
)  # fmt: skip

# The RunSettings fields of `--generate N`; the first switches generation on.
GENERATION_FIELDS = ("generate", "max_new_tokens", "temperature", "seed", "answer_states")


def parse_names(value: str) -> tuple[str, ...]:
    """`a, b,c` -> ('a', 'b', 'c'): the comma-separated list form of the command lines."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def options_argv(settings: Any, options: tuple[RunOption, ...]) -> tuple[str, ...]:
    """The command-line options that ask for exactly `settings` (a settings dataclass whose
    fields `options` name): required ones always, the others only where not the default."""
    defaults = {f.name: f.default for f in fields(settings)}
    args = []
    for option in options:
        value = getattr(settings, option.field)
        if option.required or value != defaults[option.field]:
            args.extend(option.render(value))
    return tuple(args)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one argparse option per RunSettings field; defaults come from RunSettings."""
    add_option_arguments(parser, RUN_OPTIONS, RunSettings)


def add_option_arguments(
    parser: argparse.ArgumentParser, options: tuple[RunOption, ...], settings_cls: type
) -> None:
    """Add one argparse option per field that `options` name; defaults from `settings_cls`."""
    defaults = {f.name: f.default for f in fields(settings_cls)}
    for option in options:
        default = defaults[option.field]
        if option.kind == "flag":
            parser.add_argument(option.flag, action="store_true", help=option.help)
            continue
        kind = {"list": parse_names, "int": int, "float": float, "text": str}[option.kind]
        shown = ",".join(default) if option.kind == "list" else default
        help_text = option.help + ("" if option.required or default is None else f" [{shown}]")
        parser.add_argument(
            option.flag,
            type=kind,
            required=option.required,
            default=None if option.required else default,
            help=help_text,
        )


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    return RunSettings(**{option.field: getattr(args, option.field) for option in RUN_OPTIONS})
