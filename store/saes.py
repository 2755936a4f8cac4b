"""SAEs in the store: `STORE/saes/<sae_id>/`, in sae-lens's on-disk format plus our card.

An SAE folder holds what sae-lens's `SAE.load_from_disk(folder)` reads (`cfg.json`,
`sae_weights.safetensors`) and our `manifest.json` (`SaeCard`, the SAE's card: the model, run,
hook and layer it was trained on, its training settings and its quality: reconstruction
explained variance, L0, dead-feature share), the tokens each feature's decoder direction
promotes (`promoted_tokens.parquet`, optional: see extraction.sae.readout), and becomes
visible when its `_COMMITTED` marker is written, last.

Read strictly, as runs are (`store.catalog`): a folder that is not an SAE id, a symbolic link, or
whose card is missing, too large, not JSON, does not validate or names another id is listed by
`SaeShelf.damaged()` with a one-line reason and never raises; so is one whose `cfg.json` or
weights do not match the card (`check`). The weights are parsed here without torch and without
the safetensors package (the hosted app has neither): the header is bounded and every tensor's
dtype, shape and byte range is checked against the file before a row is read.

Caveat: a checked SAE can still hold garbage numbers; nothing here proves it was trained well,
the card's metrics say how well it reconstructed what it was trained on.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from settings.run import (
    HOOKS,
    MAX_LAYER_INDEX,
    check_choice,
    check_int,
    validate_run_id,
)
from settings.sae import MAX_D_SAE, MAX_TOP_K, tl_hook_name
from store import layout
from store.atomic import atomic_write_bytes, atomic_write_text, fsync_dir, read_regular
from store.catalog import CatalogKind
from store.errors import StoreError, one_line
from store.fs import refuse_local_only
from store.manifest import (
    MAX_D_MODEL,
    MAX_SHORT_TEXT,
    ManifestRecord,
    RunManifest,
    _check_mapping,
    _check_str,
    _number,
    _text,
    check_extra,
)
from store.shelf import Shelf, id_check
from store.writer import write_progress_file

CFG_MAX_BYTES = 1 << 20
HEADER_MAX_BYTES = 1 << 20  # a safetensors header of an SAE lists four or five tensors
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
METRICS = ("explained_variance", "l0", "dead_share")
PROMOTED_MAX_BYTES = 64 << 20
MAX_PROMOTED = 50  # tokens kept per feature
# feature, rank (0 = most promoted), token text, its logit from the unit decoder direction
PROMOTED_SCHEMA = pa.schema(
    [("feature", pa.int32()), ("rank", pa.int16()), ("token", pa.string()),
     ("logit", pa.float32())]
)  # fmt: skip


def _json_value(kind: str, value: object) -> None:
    """A flat value of a card's `training` table: text, a finite number, true/false or null."""
    if value is None or type(value) is bool:
        return
    if isinstance(value, str):
        _check_str(kind, value, MAX_SHORT_TEXT)
        return
    _number(kind, value)


@dataclass(frozen=True)
class SaeCard(ManifestRecord):
    """Provenance and quality of one SAE this tool trained. Validates every field; no I/O.

    `metrics` holds at least `explained_variance` (1 - residual / total variance on held-out
    tokens), `l0` (mean active features per token) and `dead_share` (share of features that
    never fired on the held-out tokens).
    """

    sae_id: str
    model: str
    model_source: str
    model_architecture: str
    weights_sha256: str
    n_layers: int
    d_model: int
    backend: str
    weight_processing: str
    hook: str
    layer: int
    d_sae: int
    k: int
    run_id: str
    dataset_name: str
    dataset_sha256: str
    sae_architecture: str = "topk"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: str = ""
    code_version: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_run_id(self.sae_id)
        validate_run_id(self.run_id)
        for name in ("model", "dataset_name"):
            _check_str(name, getattr(self, name), MAX_SHORT_TEXT, empty=False)
        for name in ("model_source", "model_architecture", "weights_sha256", "backend",
                     "weight_processing", "dataset_sha256", "sae_architecture", "created_at",
                     "code_version"):  # fmt: skip
            _check_str(name, getattr(self, name), MAX_SHORT_TEXT)
        check_int("n_layers", self.n_layers, 1, MAX_LAYER_INDEX)
        check_int("d_model", self.d_model, 1, MAX_D_MODEL)
        check_choice("hook", self.hook, HOOKS)
        check_int("layer", self.layer, 0, self.n_layers - 1)
        check_int("d_sae", self.d_sae, 2, MAX_D_SAE)
        check_int("k", self.k, 1, min(self.d_sae, MAX_TOP_K))
        _check_mapping("training", self.training, _json_value)
        _check_mapping("metrics", self.metrics, _number)
        missing = [name for name in METRICS if name not in self.metrics]
        if missing:
            raise ValueError(f"metrics has no {missing[0]!r}")
        _check_mapping("timings", self.timings, _number)
        _check_mapping("versions", self.versions, _text)
        check_extra(self.extra)

    @property
    def hook_name(self) -> str:
        return tl_hook_name(self.hook, self.layer)


def training_site(run: RunManifest, hook: str, layer: int) -> int:
    """The layer an SAE of `hook`/`layer` (-1 = last) trains on in `run`: ValueError naming
    what is missing if the run did not store every token of that site."""
    what = f"run {run.run_id!r}"
    if "all" not in run.positions:
        raise ValueError(
            f"{what} stored only {', '.join(run.positions)} positions; an SAE trains on every "
            f"token: make a run with --positions all --hooks {hook} --layers {layer}"
        )
    if hook not in run.hooks:
        raise ValueError(f"{what} has no hook {hook!r}; it has {', '.join(run.hooks)}")
    resolved = layer + run.n_layers if layer < 0 else layer
    if resolved not in run.layers:
        listed = ", ".join(map(str, run.layers[:12])) + (", ..." if len(run.layers) > 12 else "")
        raise ValueError(f"{what} has no layer {layer}; it has layers {listed}")
    return resolved


SAES = CatalogKind("saes", "SAE", id_check("SAE"), SaeCard.from_dict, lambda card: card.sae_id)


# -- the weights file, read without torch -------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of a safetensors file, checked against the file's size (ValueError naming
    what is wrong). Reads only the header, at most HEADER_MAX_BYTES; never follows a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("is not a regular file")
        head = os.pread(fd, 8, 0)
        if len(head) < 8:
            raise ValueError("is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > HEADER_MAX_BYTES or 8 + length > info.st_size:
            raise ValueError(f"has a header of {length} bytes, beyond the file or the limit")
        raw = os.pread(fd, length, 8)
    finally:
        os.close(fd)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("has a header that is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("has a header that is not a JSON object")
    data_start, data_size = 8 + length, info.st_size - 8 - length
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"describes tensor {name[:40]!r} without dtype, shape, offsets"
            ) from None
        if dtype not in _DTYPES:
            raise ValueError(f"holds tensor {name[:40]!r} of dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"gives tensor {name[:40]!r} a bad shape")
        if type(begin) is not int or type(end) is not int or not 0 <= begin <= end <= data_size:
            raise ValueError(f"places tensor {name[:40]!r} outside the file")
        if end - begin != math.prod(shape) * _DTYPES[dtype].itemsize:
            raise ValueError(f"gives tensor {name[:40]!r} a byte size that does not fit its shape")
        tensors[name] = TensorInfo(dtype, tuple(shape), data_start + begin, data_start + end)
    return tensors


def read_rows(path: Path, tensor: TensorInfo, rows: list[int]) -> np.ndarray:
    """Rows of a 2-D tensor as float32 [len(rows), columns] (BF16 widened exactly)."""
    width = tensor.shape[1]
    itemsize = _DTYPES[tensor.dtype].itemsize
    out = np.empty((len(rows), width), np.float32)
    with open(path, "rb") as handle:
        for index, row in enumerate(rows):
            handle.seek(tensor.start + row * width * itemsize)
            values = np.frombuffer(handle.read(width * itemsize), _DTYPES[tensor.dtype])
            if tensor.dtype == "BF16":
                values = (values.astype(np.uint32) << 16).view(np.float32)
            out[index] = values
    return out


def _sae_problem(folder: Path, card: SaeCard) -> str | None:
    """Why the sae-lens files of an SAE folder do not match its card, or None."""
    try:
        cfg = json.loads(read_regular(folder / layout.SAE_CFG, CFG_MAX_BYTES))
    except FileNotFoundError:
        return f"it has no {layout.SAE_CFG}"
    except (OSError, ValueError, RecursionError) as exc:
        return f"{layout.SAE_CFG} cannot be read ({one_line(exc, 120)})"
    if not isinstance(cfg, dict):
        return f"{layout.SAE_CFG} is not a JSON object"
    if cfg.get("d_in") != card.d_model or cfg.get("d_sae") != card.d_sae:
        return (
            f"{layout.SAE_CFG} says d_in {str(cfg.get('d_in'))[:20]}, d_sae "
            f"{str(cfg.get('d_sae'))[:20]}; the card says {card.d_model}, {card.d_sae}"
        )
    metadata = cfg.get("metadata")
    hook = metadata.get("hook_name") if isinstance(metadata, dict) else None
    if hook != card.hook_name:
        return f"{layout.SAE_CFG} names hook {str(hook)[:80]!r}; the card says {card.hook_name!r}"
    try:
        tensors = read_safetensors_header(folder / layout.SAE_WEIGHTS)
    except FileNotFoundError:
        return f"it has no {layout.SAE_WEIGHTS}"
    except OSError as exc:
        return f"{layout.SAE_WEIGHTS} cannot be read ({exc.strerror or type(exc).__name__})"
    except ValueError as exc:
        return f"{layout.SAE_WEIGHTS} {exc}"
    expected = {"W_dec": (card.d_sae, card.d_model), "W_enc": (card.d_model, card.d_sae),
                "b_dec": (card.d_model,), "b_enc": (card.d_sae,)}  # fmt: skip
    for name, shape in expected.items():
        if name not in tensors:
            return f"{layout.SAE_WEIGHTS} has no tensor {name}"
        if tensors[name].shape != shape:
            return f"{layout.SAE_WEIGHTS} holds {name} of shape {list(tensors[name].shape)}"
    return None


class SaeShelf(Shelf):
    """The SAEs of one store directory: listing (strict, cached per folder), checks, reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, SAES)

    def files(self, card: SaeCard) -> list[Path]:
        folder = layout.sae_dir(self.root, card.sae_id)
        return [folder / layout.SAE_CFG, folder / layout.SAE_WEIGHTS]

    def problem(self, card: SaeCard) -> str | None:
        return _sae_problem(layout.sae_dir(self.root, card.sae_id), card)

    def card(self, name: str) -> SaeCard:
        """The card of a healthy SAE, by id or unambiguous prefix; StoreError otherwise."""
        return self.get(name)

    def folder(self, name: str) -> Path:
        """The folder of a healthy SAE (for sae-lens's loader in the extraction process)."""
        return layout.sae_dir(self.root, self.card(name).sae_id)

    def decoder_rows(self, name: str, feature_ids: list[int]) -> np.ndarray:
        """Decoder directions of some features: float32 [len(feature_ids), d_model]."""
        card = self.card(name)
        bad = [f for f in feature_ids if type(f) is not int or not 0 <= f < card.d_sae]
        if bad:
            raise StoreError(f"feature {bad[0]!r:.40} is not a feature of SAE {card.sae_id!r}")
        path = layout.sae_dir(self.root, card.sae_id) / layout.SAE_WEIGHTS
        try:
            return read_rows(path, read_safetensors_header(path)["W_dec"], list(feature_ids))
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(
                f"SAE {card.sae_id!r}: cannot read its decoder ({one_line(exc)})"
            ) from None

    def promoted_tokens(self, name: str, feature: int) -> pd.DataFrame:
        """The tokens a feature's decoder direction promotes most through the model's
        unembedding (saved at training time): rank, token, logit. StoreError if the SAE has
        none saved (an SAE trained elsewhere, or whose model could not be loaded) or the file
        is damaged; the reason is one line."""
        card = self.card(name)
        if type(feature) is not int or not 0 <= feature < card.d_sae:
            raise StoreError(f"feature {feature!r:.40} is not a feature of SAE {card.sae_id!r}")
        path = layout.sae_dir(self.root, card.sae_id) / layout.SAE_PROMOTED
        try:
            raw = read_regular(path, PROMOTED_MAX_BYTES)
        except FileNotFoundError:
            raise StoreError(f"SAE {card.sae_id!r} has no promoted tokens saved") from None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
            raise StoreError(
                f"SAE {card.sae_id!r}: cannot read its promoted tokens ({reason})"
            ) from None
        try:
            table = pq.read_table(pa.BufferReader(raw), filters=[("feature", "=", feature)])
            if not table.schema.equals(PROMOTED_SCHEMA):
                raise ValueError("its columns are not feature, rank, token, logit")
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise StoreError(
                f"SAE {card.sae_id!r}: cannot read its promoted tokens ({one_line(exc, 120)})"
            ) from None
        frame = table.to_pandas().sort_values("rank").head(MAX_PROMOTED)
        return frame[["rank", "token", "logit"]].reset_index(drop=True)


def promoted_table(top_ids: np.ndarray, logits: np.ndarray, tokens: Mapping[int, str]) -> pa.Table:
    """The promoted-tokens table from top token ids [d_sae, n] (best first), their logits
    [d_sae, n] and the text of each of those token ids."""
    d_sae, n = top_ids.shape
    return pa.table(
        {
            "feature": np.repeat(np.arange(d_sae, dtype=np.int32), n),
            "rank": np.tile(np.arange(n, dtype=np.int16), d_sae),
            "token": [tokens[int(i)] for i in top_ids.reshape(-1)],
            "logit": logits.reshape(-1).astype(np.float32),
        },
        schema=PROMOTED_SCHEMA,
    )


class SaeWriter:
    """Writes one SAE folder: the caller saves sae-lens's files into `folder`, then `commit`."""

    def __init__(self, root: Path, sae_id: str) -> None:
        self.root = Path(root)
        self.sae_id = validate_run_id(sae_id)
        self.folder = layout.sae_dir(self.root, sae_id)
        self._lock: Any = None

    @classmethod
    def create(cls, root: Path, sae_id: str) -> SaeWriter:
        refuse_local_only(root, "saes")
        writer = cls(root, sae_id)
        if writer.folder.exists() or writer.folder.is_symlink():
            raise StoreError(f"SAE {sae_id!r} already exists in this store")
        try:
            writer.folder.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(
                f"cannot write SAE {sae_id!r} into store {str(root)!r}: {exc.strerror or exc}"
            ) from None
        # Held while training, so `extraction clean` does not remove a folder being written.
        writer._lock = open(writer.folder / ".lock", "a+")  # noqa: SIM115
        fcntl.flock(writer._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return writer

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def write_progress(self, done: int, total: int) -> None:
        write_progress_file(self.folder, done, total, unit="steps")

    def write_promoted(self, table: pa.Table) -> None:
        """Save the promoted tokens of every feature (`promoted_table`) beside the weights."""
        if not table.schema.equals(PROMOTED_SCHEMA):
            raise ValueError("promoted tokens must have columns feature, rank, token, logit")
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        atomic_write_bytes(self.folder / layout.SAE_PROMOTED, sink.getvalue().to_pybytes())

    def commit(self, card: SaeCard) -> None:
        """Check the saved files against the card, write it, then the marker: now visible."""
        if card.sae_id != self.sae_id:
            raise ValueError(f"card SAE id {card.sae_id!r} != writer's {self.sae_id!r}")
        problem = _sae_problem(self.folder, card)
        if problem:
            raise StoreError(f"SAE {self.sae_id!r} was not saved whole: {problem}")
        atomic_write_text(layout.manifest_path(self.folder), card.to_json())
        atomic_write_text(layout.marker_path(self.folder), card.created_at or "committed")
        fsync_dir(self.folder)
        self.close()
