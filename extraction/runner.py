"""One extraction run, end to end, as steps that other kinds of run reuse.

    plan = prepare(settings)                      # cheap checks, before any weights load
    loaded = load_model(plan)                     # the model, on its device
    tokens = tokenize(loaded.tokenizer, plan)     # token ids per sample, truncation flags
    opened = open_run(store, plan, fingerprint)   # a new writer, or a resumed one
    stream_batches(opened.writer, loaded.backend, plan, tokens)   # capture -> Parquet parts
    opened.writer.commit(build_manifest(...))     # the run becomes visible

`execute` strings them together for `python -m extraction run`. Everything that can be checked
cheaply (the settings, dataset, model name, layers against the model's config, device) is checked
in `prepare`, before the store is touched, so bad input leaves nothing behind. Samples are sorted
by length before batching (less padding), processed in that order, and stored by dataset index.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from extraction.capture import CaptureSpec, make_batch
from extraction.datasets import Dataset, load_dataset
from extraction.models import ResolvedModel, resolve
from extraction.provenance import code_version
from settings.run import RunSettings, new_run_id, resolve_layers, validate_run_id
from store import RunManifest, RunWriter, open_store
from store.writer import list_uncommitted

POSITION_POLICY = (
    "last = last real token; mean = mean over real tokens {first} the first token (one-token "
    "samples keep it); all = every real token. Right padding, masked."
)


def _log(message: str) -> None:
    print(f"[extraction] {message}", file=sys.stderr, flush=True)


# -- step 1: checks before anything loads -------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """A run's settings with what was found cheaply: the dataset, the model, its layers."""

    settings: RunSettings
    dataset: Dataset
    model: ResolvedModel
    layers: tuple[int, ...]

    def identity(self) -> dict:
        """What decides the stored numbers: settings, resolved layers, weights and dataset hashes.
        Name, device and batch size do not change what is stored."""
        fields = {**asdict(self.settings), "layers": list(self.layers)}
        fields.update(weights=self.model.weights_sha256, dataset=self.dataset.sha256)
        for volatile in ("name", "device", "batch_size"):
            fields.pop(volatile)
        return json.loads(json.dumps(fields))  # tuples as lists, as config.json holds them

    def fingerprint(self) -> str:
        """Same identity -> same fingerprint (what --resume keys on)."""
        return _fingerprint(self.identity())


def prepare(settings: RunSettings) -> Plan:
    """Load the dataset, resolve the model, check layers and device: no weights, no writes."""
    from extraction.loading import model_layer_count, pick_device

    dataset = load_dataset(settings.dataset)
    model = resolve(settings.model)
    layers = resolve_layers(settings.layers, model_layer_count(model))
    pick_device(settings.device)
    return Plan(settings, dataset, model, layers)


# -- step 2 and 3: the model and the tokens -----------------------------------------------------
def load_model(plan: Plan):
    """The loaded backend and tokenizer (extraction.loading.Loaded), checked against the plan."""
    from extraction.loading import load

    s = plan.settings
    loaded = load(plan.model, s.backend, s.device, s.compute_dtype, s.tl_processing)
    loaded.backend.validate(capture_spec(plan))
    return loaded


def capture_spec(plan: Plan) -> CaptureSpec:
    s = plan.settings
    return CaptureSpec(s.hooks, plan.layers, s.positions, s.include_first_token)


@dataclass(frozen=True)
class Tokens:
    """Token ids per sample (truncated to max_length) and whether each was truncated."""

    ids: list[list[int]]
    truncated: list[bool]

    @property
    def lengths(self) -> list[int]:
        return [len(t) for t in self.ids]


def tokenize(tokenizer, plan: Plan) -> Tokens:
    s = plan.settings
    if s.chat_template and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"model {s.model!r} has no chat template")
    ids_per_sample, truncated = [], []
    for sample in plan.dataset.samples:
        if s.chat_template:
            encoded = tokenizer.apply_chat_template(
                [{"role": "user", "content": sample.text}],
                add_generation_prompt=True,
                tokenize=True,
            )
            # transformers 5 returns a BatchEncoding (a Mapping), older versions a plain list.
            ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
        else:
            ids = tokenizer(sample.text)["input_ids"]
        ids = [int(t) for t in ids]
        truncated.append(len(ids) > s.max_length)
        ids_per_sample.append(ids[: s.max_length])
    return Tokens(ids_per_sample, truncated)


# -- step 4: the run folder ---------------------------------------------------------------------
@dataclass
class OpenedRun:
    run_id: str
    writer: RunWriter
    resumed: int  # samples already stored by an interrupted attempt


def _fingerprint(identity: dict) -> str:
    # Tuples and lists hash alike (json), so a fingerprint read back from config.json matches.
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _find_resumable(store_root: Path, plan: Plan) -> tuple[str | None, str]:
    """The newest interrupted run with this plan's fingerprint, or None and why none matched."""
    fingerprint, mine = plan.fingerprint(), plan.identity()
    differences = []
    candidates = list(reversed(list_uncommitted(store_root)))
    for run_path in candidates:
        try:
            stored = json.loads((run_path / "config.json").read_text())
            if stored.get("fingerprint") == fingerprint:
                return run_path.name, ""
            theirs = stored.get("identity")
        except (OSError, ValueError, AttributeError):
            differences.append(f"{run_path.name} cannot be read")  # damaged or foreign
            continue
        if isinstance(theirs, dict):
            changed = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            what = ", ".join({"weights": "model weights", "dataset": "dataset contents"}.get(k, k)
                             for k in changed)  # fmt: skip
            differences.append(f"{run_path.name} differs in {what or 'its fingerprint'}")
        else:
            differences.append(f"{run_path.name} was written without a comparable record")
    if not candidates:
        return None, "the store has no interrupted run"
    shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
    return None, (
        f"none of the {len(candidates)} interrupted run(s) has these settings, weights and "
        f"dataset ({shown})"
    )


def open_run(
    store_root: Path,
    plan: Plan,
    d_model: int,
    *,
    resume: bool = False,
    run_id: str | None = None,
    flush_bytes: int | None = None,
) -> OpenedRun:
    """A writer for a new run (id preset by the job registry, or made here) or a resumed one."""
    if run_id is not None and resume:
        raise ValueError("a preset run id cannot be combined with resume")
    open_store(store_root, create=True)
    fingerprint = plan.fingerprint()
    options: dict = {"d_model": d_model, "dtype": plan.settings.dtype}
    if flush_bytes:
        options["flush_bytes"] = flush_bytes
    if resume:
        found, why_not = _find_resumable(store_root, plan)
        if found:
            writer = RunWriter.resume(store_root, found, **options)
            stored = len(writer.done_samples)
            _log(f"resuming {found}: {stored} of {len(plan.dataset)} samples stored")
            return OpenedRun(found, writer, stored)
        _log(f"--resume: nothing to resume, starting a new run: {why_not}")
    base = plan.settings.name or f"{plan.dataset.name}-{plan.model.name.split('/')[-1]}"
    run_id = validate_run_id(run_id) if run_id else new_run_id(base)
    config = {
        "fingerprint": fingerprint,
        "identity": plan.identity(),
        "config": plan.settings.to_dict(),
    }
    return OpenedRun(run_id, RunWriter.create(store_root, run_id, config, **options), 0)


def samples_table(run_id: str, dataset: Dataset, tokens: Tokens) -> pa.Table:
    rows = [asdict(s) for s in dataset.samples]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    return pa.table(
        {
            "sample_idx": pa.array(np.arange(len(rows), dtype=np.int32)),
            "run_id": pa.array([run_id] * len(rows), pa.string()),
            **{key: pa.array(values, pa.string()) for key, values in columns.items()},
            "n_tokens": pa.array(np.asarray(tokens.lengths, dtype=np.int32)),
            "truncated": pa.array(tokens.truncated, pa.bool_()),
        }
    )


# -- step 5: the batch loop ---------------------------------------------------------------------
def stream_batches(
    opened: OpenedRun, backend, tokenizer, plan: Plan, tokens: Tokens, progress: bool = True
) -> float:
    """Capture every sample not yet stored, batch by batch, into the writer; returns seconds."""
    from tqdm import tqdm

    writer, spec = opened.writer, capture_spec(plan)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    done_already = writer.done_samples
    order = np.argsort(tokens.lengths, kind="stable")
    todo = [int(i) for i in order if int(i) not in done_already]
    size = plan.settings.batch_size
    total = len(plan.dataset)
    started = time.perf_counter()
    bar = tqdm(total=total, initial=opened.resumed, desc=f"{plan.model.name} {plan.dataset.name}",
               unit="sample", disable=not progress, file=sys.stderr)  # fmt: skip
    done = opened.resumed
    keep_tokens = tokenizer if "all" in plan.settings.positions else None
    for start in range(0, len(todo), size):
        indices = todo[start : start + size]
        batch = make_batch([tokens.ids[i] for i in indices], indices, pad_id)
        _store_batch(writer, backend.capture(batch, spec), batch, keep_tokens)
        writer.end_batch(indices)
        done += len(indices)
        bar.update(len(indices))
        writer.write_progress(done, total, run_id=opened.run_id)
    bar.close()
    seconds = time.perf_counter() - started
    writer.flush()
    return seconds


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


# -- step 6: provenance -------------------------------------------------------------------------
def build_manifest(
    plan: Plan, opened: OpenedRun, backend, tokenizer, tokens: Tokens, timings: dict[str, float]
) -> RunManifest:
    s, writer = plan.settings, opened.writer
    first = "including" if s.include_first_token else "excluding"
    return RunManifest(
        run_id=opened.run_id,
        name=s.name or opened.run_id,
        model=s.model,
        model_source=plan.model.source,
        architecture=backend.architecture,
        weights_sha256=plan.model.weights_sha256,
        n_layers=backend.n_layers,
        d_model=backend.d_model,
        backend=backend.name,
        weight_processing=backend.weight_processing,
        hooks=s.hooks,
        layers=plan.layers,
        positions=s.positions,
        dtype=s.dtype,
        dataset_name=plan.dataset.name,
        dataset_sha256=plan.dataset.sha256,
        n_samples=len(plan.dataset),
        position_policy=POSITION_POLICY.format(first=first),
        include_first_token_in_mean=s.include_first_token,
        chat_template=getattr(tokenizer, "chat_template", None) if s.chat_template else None,
        max_length=s.max_length,
        batch_size=s.batch_size,
        device=str(backend.device),
        compute_dtype=s.compute_dtype,
        code_version=code_version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        timings=timings,
        row_counts={
            "samples": len(plan.dataset),
            "vector_rows": writer.rows_written,
            "truncated_samples": int(sum(tokens.truncated)),
            "float16_overflow_values": writer.overflow_values,
            "resumed_samples": opened.resumed,
        },
        versions=versions(s.backend),
        extra={"fingerprint": plan.fingerprint(), "dataset_path": plan.dataset.path},
    )


def _save_readout(store_root, plan: Plan, loaded) -> list[str]:
    """Save the model's readout after the run committed; a failure is a warning, not a failed
    run (the run is there and usable)."""
    from extraction.readout import save_readout
    from store import StoreError

    started = time.perf_counter()
    try:
        if save_readout(store_root, plan.model, loaded.hf_model, loaded.tokenizer):
            _log(f"saved the readout of {plan.model.name} in {time.perf_counter() - started:.1f} s")
    except (ValueError, OSError, StoreError) as exc:
        return [f"the model's readout (for reading directions as tokens) was not saved: {exc}"]
    return []


def versions(backend: str = "hf") -> dict[str, str]:
    import duckdb
    import torch
    import transformers

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
    }
    if backend == "transformer_lens":
        from importlib.metadata import version

        found["transformer_lens"] = version("transformer-lens")
    return found


# -- all of it ----------------------------------------------------------------------------------
@dataclass
class RunResult:
    run_id: str
    manifest: RunManifest
    resumed_samples: int = 0
    warnings: list[str] = field(default_factory=list)


def execute(
    settings: RunSettings,
    store_root: str | Path,
    resume: bool = False,
    progress: bool = True,
    loaded=None,
    flush_bytes: int | None = None,
    run_id: str | None = None,
    readout: bool = True,
) -> RunResult:
    """Run one extraction into `store_root`. `loaded` reuses an already-loaded model.

    `run_id` presets the new run's id (the app's job registry knows it before the run starts).
    With `readout`, the model's final norm and unembedding are saved into the store too, once
    per weights (extraction.readout), for reading directions as tokens.
    """
    started = time.perf_counter()
    plan = prepare(settings)
    # Only now, with every input checked: a store that is a file or cannot be written fails
    # here, before the weights load.
    open_store(store_root, create=True, writable=True)
    if loaded is None:
        loaded = load_model(plan)
    else:
        loaded.backend.validate(capture_spec(plan))
    tokens = tokenize(loaded.tokenizer, plan)
    load_seconds = time.perf_counter() - started

    opened = open_run(
        Path(store_root), plan, loaded.backend.d_model,
        resume=resume, run_id=run_id, flush_bytes=flush_bytes,
    )  # fmt: skip
    opened.writer.write_samples(samples_table(opened.run_id, plan.dataset, tokens))
    extract_seconds = stream_batches(
        opened, loaded.backend, loaded.tokenizer, plan, tokens, progress
    )
    writer = opened.writer
    writer.write_summaries()  # before the manifest, so their cost is in its timings
    timings = {
        "load_s": round(load_seconds, 3),
        "extract_s": round(extract_seconds, 3),
        "write_s": round(writer.write_seconds, 3),
        "summaries_s": round(writer.summary_seconds, 3),
        "total_s": round(time.perf_counter() - started, 3),
        "samples_per_s": round(
            (len(plan.dataset) - opened.resumed) / max(extract_seconds, 1e-9), 3
        ),
    }
    manifest = build_manifest(plan, opened, loaded.backend, loaded.tokenizer, tokens, timings)
    writer.commit(manifest)
    warnings = []
    if readout:
        warnings.extend(_save_readout(store_root, plan, loaded))
    if writer.overflow_values:
        warnings.append(
            f"{writer.overflow_values} values exceeded the float16 range and were stored as inf; "
            "rerun with --dtype float32 to keep them"
        )
    for warning in warnings:
        _log("warning: " + warning)
    return RunResult(opened.run_id, manifest, opened.resumed, warnings)
