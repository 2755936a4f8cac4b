"""One extraction run, end to end: validate, load, batch, capture, stream to the store, commit.

Everything that can be checked cheaply (hooks, positions, dtype, dataset, model name, layers) is
checked before the store is touched, so bad input leaves nothing behind. Samples are sorted by
length before batching (less padding), processed in that order, and stored by dataset index.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from extraction.capture import CaptureSpec, make_batch
from extraction.datasets import Dataset, load_dataset
from extraction.models import resolve
from store import RunManifest, RunWriter, open_store
from store.manifest import HOOKS, POSITIONS, STORAGE_DTYPES, validate_run_id
from store.writer import list_uncommitted

BACKENDS = ("hf", "transformer_lens")


@dataclass(frozen=True)
class RunConfig:
    """What the user asked for. Validates its fields; layers are checked once the model loads."""

    model: str
    dataset: str
    hooks: tuple[str, ...] = ("resid_post",)
    layers: str = "all"
    positions: tuple[str, ...] = ("last", "mean")
    dtype: str = "float16"
    backend: str = "hf"
    batch_size: int = 16
    max_length: int = 512
    include_first_token: bool = False
    chat_template: bool = False
    name: str | None = None
    device: str = "auto"
    compute_dtype: str = "float32"
    tl_processing: str = "none"

    def __post_init__(self) -> None:
        for hook in self.hooks:
            if hook not in HOOKS:
                raise ValueError(f"unknown hook {hook!r}; choose from {', '.join(HOOKS)}")
        for position in self.positions:
            if position not in POSITIONS:
                raise ValueError(
                    f"unknown position {position!r}; choose from {', '.join(POSITIONS)}"
                )
        if not self.hooks or not self.positions:
            raise ValueError("hooks and positions must not be empty")
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(
                f"unknown dtype {self.dtype!r}; choose from {', '.join(STORAGE_DTYPES)}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch size {self.batch_size} must be >= 1")
        if self.max_length < 2:
            raise ValueError(f"max length {self.max_length} must be >= 2")
        if self.name is not None:
            validate_run_id(self.name)
        parse_layers(self.layers, None)


def parse_layers(spec: str, n_layers: int | None) -> tuple[int, ...]:
    """'all', '5', '0,4,8', '10-20' or negative indices ('-1' = last). Checks range if n_layers."""
    spec = spec.strip()
    if spec == "all":
        return tuple(range(n_layers)) if n_layers else ()
    layers: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"(-?\d+)(?:-(\d+))?", part.strip())
        if not match or (match[2] and int(match[2]) < int(match[1])):
            raise ValueError(f"bad layer spec {part!r} in {spec!r}; use all, 5, 0,4,8, 10-20 or -1")
        start = int(match[1])
        layers.extend(range(start, (int(match[2]) if match[2] else start) + 1))
    if n_layers is None:
        return tuple(layers)
    resolved = set()
    for layer in layers:
        actual = layer + n_layers if layer < 0 else layer
        if not 0 <= actual < n_layers:
            raise ValueError(f"layer {layer} out of range 0..{n_layers - 1}")
        resolved.add(actual)
    return tuple(sorted(resolved))


def code_version() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _log(message: str) -> None:
    print(f"[extraction] {message}", file=sys.stderr, flush=True)


def _fingerprint(config: RunConfig, weights: str, dataset: Dataset, layers: tuple[int, ...]) -> str:
    fields = {**asdict(config), "layers": layers, "weights": weights, "dataset": dataset.sha256}
    for volatile in ("name", "device", "batch_size"):
        fields.pop(volatile)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _tokenize(tokenizer, dataset: Dataset, config: RunConfig) -> tuple[list[list[int]], list[bool]]:
    token_lists, truncated = [], []
    for sample in dataset.samples:
        if config.chat_template:
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError(f"model {config.model!r} has no chat template")
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": sample.text}],
                add_generation_prompt=True,
                tokenize=True,
            )
            ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
        else:
            ids = tokenizer(sample.text)["input_ids"]
        truncated.append(len(ids) > config.max_length)
        token_lists.append(list(ids[: config.max_length]))
    return token_lists, truncated


def _samples_table(run_id: str, dataset: Dataset, lengths: list[int], truncated: list[bool]):
    rows = [asdict(s) for s in dataset.samples]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    return pa.table(
        {
            "sample_idx": pa.array(np.arange(len(rows), dtype=np.int32)),
            "run_id": pa.array([run_id] * len(rows), pa.string()),
            **{key: pa.array(values, pa.string()) for key, values in columns.items()},
            "n_tokens": pa.array(np.asarray(lengths, dtype=np.int32)),
            "truncated": pa.array(truncated, pa.bool_()),
        }
    )


def _find_resumable(store_root: Path, fingerprint: str) -> str | None:
    for run_path in reversed(list_uncommitted(store_root)):
        config_file = run_path / "config.json"
        if (
            config_file.is_file()
            and json.loads(config_file.read_text()).get("fingerprint") == fingerprint
        ):
            return run_path.name
    return None


@dataclass
class RunResult:
    run_id: str
    manifest: RunManifest
    resumed_samples: int = 0
    warnings: list[str] = field(default_factory=list)


def execute(
    config: RunConfig,
    store_root: str | Path,
    resume: bool = False,
    progress: bool = True,
    loaded=None,
    flush_bytes: int | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Run one extraction into `store_root`. `loaded` reuses an already-loaded model.

    `run_id` presets the new run's id (the app's job registry knows it before the run starts).
    """
    from tqdm import tqdm

    from extraction.loading import load, model_layer_count, pick_device

    started = time.perf_counter()
    dataset = load_dataset(config.dataset)
    resolved = resolve(config.model)
    # Check the layers and the device before spending time on the weights.
    parse_layers(config.layers, model_layer_count(resolved))
    pick_device(config.device)
    if loaded is None:
        loaded = load(
            resolved, config.backend, config.device, config.compute_dtype, config.tl_processing
        )
    backend, tokenizer = loaded.backend, loaded.tokenizer
    layers = parse_layers(config.layers, backend.n_layers)
    spec = CaptureSpec(config.hooks, layers, config.positions, config.include_first_token)
    backend.validate(spec)
    token_lists, truncated = _tokenize(tokenizer, dataset, config)
    load_seconds = time.perf_counter() - started

    store_root = Path(store_root)
    open_store(store_root, create=True)
    fingerprint = _fingerprint(config, resolved.weights_sha256, dataset, layers)
    writer_options = {"d_model": backend.d_model, "dtype": config.dtype}
    if flush_bytes:
        writer_options["flush_bytes"] = flush_bytes
    if run_id is not None and resume:
        raise ValueError("a preset run id cannot be combined with resume")
    preset, run_id = run_id, (_find_resumable(store_root, fingerprint) if resume else None)
    if run_id:
        writer = RunWriter.resume(store_root, run_id, **writer_options)
        _log(f"resuming {run_id}: {len(writer.done_samples)} of {len(dataset)} samples stored")
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        base = config.name or f"{dataset.name}-{resolved.name.split('/')[-1]}"
        run_id = validate_run_id(preset or f"{base}-{stamp}-{os.urandom(2).hex()}"[:128])
        writer = RunWriter.create(
            store_root,
            run_id,
            {"fingerprint": fingerprint, "config": asdict(config)},
            **writer_options,
        )
    resumed = len(writer.done_samples)
    writer.write_samples(_samples_table(run_id, dataset, [len(t) for t in token_lists], truncated))

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    todo = [
        i
        for i in np.argsort([len(t) for t in token_lists], kind="stable")
        if i not in writer.done_samples
    ]
    batches = [todo[i : i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    extract_started = time.perf_counter()
    bar = tqdm(total=len(dataset), initial=resumed, desc=f"{resolved.name} {dataset.name}",
               unit="sample", disable=not progress, file=sys.stderr)  # fmt: skip
    done = resumed
    for indices in batches:
        batch = make_batch([token_lists[i] for i in indices], indices, pad_id)
        captured = backend.capture(batch, spec)
        _store_batch(writer, captured, batch, tokenizer if "all" in config.positions else None)
        writer.end_batch([int(i) for i in indices])
        done += len(indices)
        bar.update(len(indices))
        writer.write_progress(done, len(dataset), run_id=run_id)
    bar.close()
    extract_seconds = time.perf_counter() - extract_started
    writer.flush()

    warnings = []
    if writer.overflow_values:
        warnings.append(
            f"{writer.overflow_values} values exceeded the float16 range and were stored as inf; "
            "rerun with --dtype float32 to keep them"
        )
    total_seconds = time.perf_counter() - started
    manifest = RunManifest(
        run_id=run_id,
        name=config.name or run_id,
        model=config.model,
        model_source=resolved.source,
        architecture=backend.architecture,
        weights_sha256=resolved.weights_sha256,
        n_layers=backend.n_layers,
        d_model=backend.d_model,
        backend=backend.name,
        weight_processing=backend.weight_processing,
        hooks=config.hooks,
        layers=layers,
        positions=config.positions,
        dtype=config.dtype,
        dataset_name=dataset.name,
        dataset_sha256=dataset.sha256,
        n_samples=len(dataset),
        position_policy=(
            "last = last real token; mean = mean over real tokens "
            + ("including" if config.include_first_token else "excluding")
            + " the first token (one-token samples keep it); all = every real token. "
            "Right padding, masked."
        ),
        include_first_token_in_mean=config.include_first_token,
        chat_template=(getattr(tokenizer, "chat_template", None) if config.chat_template else None),
        max_length=config.max_length,
        batch_size=config.batch_size,
        device=str(backend.device),
        compute_dtype=config.compute_dtype,
        code_version=code_version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        timings={
            "load_s": round(load_seconds, 3),
            "extract_s": round(extract_seconds, 3),
            "write_s": round(writer.write_seconds, 3),
            "total_s": round(total_seconds, 3),
            "samples_per_s": round((len(dataset) - resumed) / max(extract_seconds, 1e-9), 3),
        },
        row_counts={
            "samples": len(dataset),
            "vector_rows": writer.rows_written,
            "truncated_samples": int(sum(truncated)),
            "float16_overflow_values": writer.overflow_values,
            "resumed_samples": resumed,
        },
        versions=_versions(),
        extra={"fingerprint": fingerprint, "dataset_path": dataset.path},
    )
    writer.commit(manifest)
    for warning in warnings:
        _log("warning: " + warning)
    return RunResult(run_id, manifest, resumed, warnings)


def _store_batch(writer: RunWriter, captured, batch, tokenizer) -> None:
    sample_idx = np.asarray(batch.sample_idx, dtype=np.int32)
    lengths = batch.lengths.tolist()
    pooled_token = np.full(len(sample_idx), -1, np.int32)
    last_token = np.asarray(lengths, dtype=np.int32) - 1
    for (hook, position, layer), tensor in captured.items():
        values = tensor.float().cpu().numpy()
        if position == "all":
            rows_idx = np.repeat(sample_idx, lengths)
            token_idx = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
            real = np.concatenate([values[row, :n] for row, n in enumerate(lengths)])
            writer.add(hook, position, layer, rows_idx, token_idx, real)
        else:
            token = last_token if position == "last" else pooled_token
            writer.add(hook, position, layer, sample_idx, token, values)
    if tokenizer is not None:
        ids = [batch.input_ids[row, :n].tolist() for row, n in enumerate(lengths)]
        flat = [t for row in ids for t in row]
        writer.add_tokens(
            np.repeat(sample_idx, lengths),
            np.concatenate([np.arange(n, dtype=np.int32) for n in lengths]),
            np.asarray(flat, dtype=np.int32),
            tokenizer.convert_ids_to_tokens(flat),
        )


def _versions() -> dict[str, str]:
    import duckdb
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
    }
