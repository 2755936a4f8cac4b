"""Run manifest: the provenance record written once per committed run.

A manifest is a plain frozen dataclass that crosses module boundaries (extraction writes it, the
store and the app read it). It validates every field in its constructor (types included: a
manifest is read from files that are copied, synced and shared, so `n_layers: "30"` or
`hooks: 5` must be refused where it is read, not crash a page later) and never does I/O.
`to_json` and `from_dict` are the only serialisation; unknown keys in a file are kept in `extra`
rather than failing, so older readers can open runs written by newer code.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from settings.run import (
    BACKENDS,
    COMPUTE_DTYPES,
    HOOKS,
    MAX_BATCH_SIZE,
    MAX_LAYER_INDEX,
    MAX_LENGTH_LIMIT,
    POSITIONS,
    STORAGE_DTYPES,
    check_bool,
    check_choice,
    check_choices,
    check_int,
    validate_run_id,
)

# Generous bounds: they only keep absurd values (a width of 10**30) from reaching numpy.
MAX_D_MODEL = 1 << 20
MAX_SAMPLES = 1 << 40
MAX_SHORT_TEXT = 2_000  # names, ids, hashes, versions: shown in tables and messages
MAX_LONG_TEXT = 1 << 20  # chat templates and policy notes (the file itself is capped too)

# Fields that are free text (empty allowed); `name`, `model` and `dataset_name` must say something.
_SHORT_TEXT = ("model_source", "architecture", "weights_sha256", "weight_processing",
               "dataset_sha256", "code_version", "created_at", "device")  # fmt: skip
_LONG_TEXT = ("layer_convention", "position_policy")


def _check_str(kind: str, value: object, max_chars: int, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{kind} {value!r:.80} must be text")
    if not empty and not value.strip():
        raise ValueError(f"{kind} must not be empty")
    if len(value) > max_chars:
        raise ValueError(f"{kind} {value[:40]!r}... is too long (over {max_chars} characters)")
    if max_chars <= MAX_SHORT_TEXT and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{kind} {value[:80]!r} has control characters")
    return value


def _check_mapping(kind: str, value: object, check_value) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{kind} {value!r:.80} must be an object")
    for key, item in value.items():
        _check_str(f"{kind} key", key, MAX_SHORT_TEXT)
        check_value(f"{kind}[{key[:40]!r}]", item)
    return value


def _number(kind: str, value: object) -> None:
    if type(value) not in (int, float) or (type(value) is float and not math.isfinite(value)):
        raise ValueError(f"{kind} {value!r:.80} must be a finite number")


def _count(kind: str, value: object) -> None:
    check_int(kind, value, 0, MAX_SAMPLES)


def _text(kind: str, value: object) -> None:
    _check_str(kind, value, MAX_SHORT_TEXT)


def _long_text(kind: str, value: object) -> None:
    _check_str(kind, value, MAX_LONG_TEXT)


def _check_layers(value: object, n_layers: int) -> tuple[int, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise ValueError(f"layers {value!r:.80} must be a list of layer indices")
    if not value:
        raise ValueError("layers must not be empty")
    for layer in value:
        if type(layer) is not int:
            raise ValueError(f"layer {layer!r:.80} in layers must be a whole number")
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} out of range 0..{n_layers - 1}")
    if len(set(value)) != len(value):
        raise ValueError("layers name one layer twice")
    # Sorted: readers return layers in this order and SQL hands rows back ordered by layer.
    return tuple(sorted(value))


def record_from_dict(cls, data: object):
    """A manifest dataclass `cls` from a parsed file: ValueError naming a missing field; keys
    `cls` does not know are kept in its `extra` (so older readers open newer manifests)."""
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        raise ValueError(f"manifest is not a JSON object (it is {kind})")
    known = {f.name: f for f in fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in known}
    unknown = {k: v for k, v in data.items() if k not in known}
    missing = [
        name for name, f in known.items()
        if name not in kwargs and f.default is MISSING and f.default_factory is MISSING
    ]  # fmt: skip
    if missing:
        raise ValueError(f"manifest has no {missing[0]!r}")
    if unknown:
        extra = kwargs.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError(f"extra {extra!r:.80} must be an object")
        kwargs["extra"] = {**extra, **unknown}
    return cls(**kwargs)


class ManifestRecord:
    """What every manifest dataclass shares: JSON out, a parsed file in (`record_from_dict`)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: object):
        """From a parsed manifest file. Raises ValueError naming the field that is wrong."""
        return record_from_dict(cls, data)


def check_extra(extra: object) -> None:
    if not isinstance(extra, dict):
        raise ValueError(f"extra {extra!r:.80} must be an object")


@dataclass(frozen=True)
class RunManifest(ManifestRecord):
    """Provenance of one run. Layer `L` is decoder block `L`, 0-based (see `layer_convention`)."""

    run_id: str
    name: str
    model: str  # what the user asked for: a short name, a Hugging Face id or a folder
    model_source: str  # what was loaded: a resolved local folder or hub id
    architecture: str  # config.model_type, e.g. "llama", "gemma3_text"
    weights_sha256: str
    n_layers: int
    d_model: int
    backend: str  # "hf" or "transformer_lens"
    weight_processing: str  # e.g. "none (raw Hugging Face weights)"
    hooks: tuple[str, ...]
    layers: tuple[int, ...]
    positions: tuple[str, ...]
    dtype: str  # storage dtype of vectors
    dataset_name: str
    dataset_sha256: str
    n_samples: int
    layer_convention: str = (
        "layer L = decoder block L (0-based); resid_pre[L] = input to block L "
        "(= HF hidden_states[L]); resid_post[L] = output of block L (= HF hidden_states[L+1] "
        "except the last block, where HF applies the final norm and we do not); mlp_out/attn_out "
        "= what the block adds to the residual stream"
    )
    position_policy: str = ""
    include_first_token_in_mean: bool = False
    chat_template: str | dict[str, str] | None = None
    max_length: int = 512
    batch_size: int = 16
    device: str = "cpu"
    compute_dtype: str = "float32"
    code_version: str = ""
    created_at: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    row_counts: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        _check_str("name", self.name, MAX_SHORT_TEXT, empty=False)
        _check_str("model", self.model, MAX_SHORT_TEXT, empty=False)
        _check_str("dataset_name", self.dataset_name, MAX_SHORT_TEXT, empty=False)
        for name in _SHORT_TEXT:
            _check_str(name, getattr(self, name), MAX_SHORT_TEXT)
        for name in _LONG_TEXT:
            _check_str(name, getattr(self, name), MAX_LONG_TEXT)
        check_int("n_layers", self.n_layers, 1, MAX_LAYER_INDEX)
        check_int("d_model", self.d_model, 1, MAX_D_MODEL)
        check_int("n_samples", self.n_samples, 0, MAX_SAMPLES)
        check_int("max_length", self.max_length, 1, MAX_LENGTH_LIMIT)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("dtype", self.dtype, STORAGE_DTYPES)
        check_choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        check_bool("include_first_token_in_mean", self.include_first_token_in_mean)
        if isinstance(self.chat_template, dict):  # tokenizers may name several templates
            _check_mapping("chat_template", self.chat_template, _long_text)
        elif self.chat_template is not None:
            _check_str("chat_template", self.chat_template, MAX_LONG_TEXT)
        object.__setattr__(self, "hooks", check_choices("hooks", self.hooks, HOOKS))
        object.__setattr__(self, "positions", check_choices("positions", self.positions, POSITIONS))
        object.__setattr__(self, "layers", _check_layers(self.layers, self.n_layers))
        _check_mapping("timings", self.timings, _number)
        _check_mapping("row_counts", self.row_counts, _count)
        _check_mapping("versions", self.versions, _text)
        check_extra(self.extra)

    @classmethod
    def from_json(cls, text: str) -> RunManifest:
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("manifest is nested too deeply") from None
        return cls.from_dict(data)
