"""Run manifest: the provenance record written once per committed run.

A manifest is a plain frozen dataclass that crosses module boundaries (extraction writes it, the
store and the app read it). It validates in its constructor and never does I/O; `to_json` and
`from_json` are the only serialisation, and unknown keys in a file are kept in `extra` rather than
failing, so older readers can open runs written by newer code.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HOOKS = ("resid_pre", "resid_post", "mlp_out", "attn_out")
POSITIONS = ("last", "mean", "all")
STORAGE_DTYPES = ("float16", "float32")


def validate_run_id(run_id: str) -> str:
    """Return `run_id` if it is safe as a single directory name, else raise ValueError."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise ValueError(
            f"run id {run_id!r} is not valid: use letters, digits, '.', '_' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return run_id


def _check_subset(kind: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    if not values:
        raise ValueError(f"{kind} must not be empty")
    for value in values:
        if value not in allowed:
            raise ValueError(f"unknown {kind[:-1]} {value!r}; choose from {', '.join(allowed)}")


@dataclass(frozen=True)
class RunManifest:
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
    chat_template: str | None = None
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
        _check_subset("hooks", self.hooks, HOOKS)
        _check_subset("positions", self.positions, POSITIONS)
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(
                f"unknown dtype {self.dtype!r}; choose from {', '.join(STORAGE_DTYPES)}"
            )
        if self.backend not in ("hf", "transformer_lens"):
            raise ValueError(f"unknown backend {self.backend!r}; choose from hf, transformer_lens")
        if self.n_layers < 1 or self.d_model < 1:
            raise ValueError(f"n_layers {self.n_layers} and d_model {self.d_model} must be >= 1")
        if not self.layers:
            raise ValueError("layers must not be empty")
        bad = [layer for layer in self.layers if not 0 <= layer < self.n_layers]
        if bad:
            raise ValueError(f"layer {bad[0]} out of range 0..{self.n_layers - 1}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunManifest:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        for key in ("hooks", "layers", "positions"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if unknown:
            kwargs["extra"] = {**kwargs.get("extra", {}), **unknown}
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> RunManifest:
        return cls.from_dict(json.loads(text))
