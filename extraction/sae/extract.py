"""Read a dataset's activations as SAE features (`python -m extraction sae`).

    plan = prepare_sae(settings, store)        # records, SAE config, model config: all checked
    result = extract_features(plan, store)     # loads, runs in batches, stores sparsely

Each record is its prompt followed by its response (teacher forcing: the model reads the given
response, it does not generate one): the prompt's token ids (with the tokenizer's special
tokens, or the chat template's user turn when asked) then the response's (no special tokens).
`answer_start` is the index of the first response token, so the last prompt token is
`answer_start - 1`: what the model has read when it is about to answer. Records are sorted by
length and run in batches through the capture backend (right padding, masked; the pass stops
after the SAE's layer), the SAE's hook site is encoded with sae-lens's `encode`, and per kept
position the top-K features that fired (id, activation; strongest first), with the number that
fired in all, go to the store's feature run (store.features). A record that cannot be used
(no prompt, a prompt longer than max_length, a field that is not text) is stored with its
`status` and the others go through.

The SAE's hook, layer, width, model and residual basis are checked against the model's config
before any weights load (extraction.sae.source): a mismatch is one error line, never a run.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from extraction.capture import CaptureSpec, make_batch
from extraction.datasets import DatasetError, resolve_dataset_path
from extraction.models import ResolvedModel, resolve
from extraction.runner import code_version, versions
from extraction.sae.source import SaeSource, check_against_model, find_sae, load_sae
from settings.run import new_run_id
from settings.sae import SaeSettings
from store import Store, open_store
from store.features import OK, FeatureManifest, FeatureWriter
from store.json_records import MAX_SOURCE_BYTES, SUFFIXES, Record, RecordsError, read_records

ENCODE_ROWS = 2048  # positions encoded at once: bounds the [rows, d_sae] activation matrix


def _log(message: str) -> None:
    print(f"[sae] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SaePlan:
    """A feature extraction's settings with what was found and checked cheaply."""

    settings: SaeSettings
    dataset_name: str
    dataset_sha256: str
    source_bytes: bytes
    suffix: str
    records: tuple[Record, ...]
    model: ResolvedModel
    n_layers: int
    d_model: int
    sae: SaeSource


def _read_dataset(name: str) -> tuple[Path, bytes]:
    path = resolve_dataset_path(name)
    if path.suffix.lower() not in SUFFIXES:
        raise DatasetError(
            f"{path}: unsupported extension {path.suffix!r}; use {', '.join(SUFFIXES)}"
        )
    size = path.stat().st_size
    if size > MAX_SOURCE_BYTES:
        raise DatasetError(f"{path}: {size / 2**20:.1f} MiB, over {MAX_SOURCE_BYTES >> 20} MiB")
    return path, path.read_bytes()


def prepare_sae(settings: SaeSettings, store: Store) -> SaePlan:
    """Read the records, find the SAE, resolve the model and check they fit: no weights."""
    from extraction.loading import model_dims, pick_device

    path, raw = _read_dataset(settings.dataset)
    try:
        _, records = read_records(raw, path.suffix, str(path))
    except RecordsError as exc:
        raise DatasetError(str(exc)) from None
    sae = find_sae(settings, store)
    model = resolve(settings.model)
    n_layers, d_model = model_dims(model)
    pick_device(settings.device)
    check_against_model(sae, model, n_layers, d_model, settings.backend, settings.tl_processing)
    digest = hashlib.sha256(raw).hexdigest()
    return SaePlan(settings, path.stem, digest, raw, path.suffix.lower(), tuple(records), model,
                   n_layers, d_model, sae)  # fmt: skip


# -- tokens -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Encoded:
    """One usable record's token ids (prompt then response), where the response starts."""

    ids: tuple[int, ...]
    answer_start: int
    truncated: bool


def _ids(encoded: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding (a Mapping) from apply_chat_template.
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
    return [int(t) for t in ids]


def encode_record(tokenizer, record: Record, chat_template: bool, max_length: int) -> Encoded | str:
    """The record's token ids, or why it cannot be used (its status)."""
    if record.problem:
        return f"error: {record.problem}"
    if chat_template:
        prompt = _ids(tokenizer.apply_chat_template(
            [{"role": "user", "content": record.prompt}], add_generation_prompt=True,
            tokenize=True,
        ))  # fmt: skip
    else:
        prompt = _ids(tokenizer(record.prompt)["input_ids"])
    response = _ids(tokenizer(record.response, add_special_tokens=False)["input_ids"])
    if not prompt:
        return "error: the prompt has no tokens"
    if len(prompt) > max_length:
        return f"error: the prompt is {len(prompt)} tokens, over max length {max_length}"
    ids = (prompt + response)[:max_length]
    return Encoded(tuple(ids), len(prompt), len(prompt) + len(response) > max_length)


# -- the SAE ------------------------------------------------------------------------------------
@torch.no_grad()
def top_features(sae, x: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode rows x [N, d_in] with the SAE: (n_active [N], ids [N, k'], values [N, k']), the
    k' = min(k, d_sae) strongest features per row, strongest first (values <= 0 did not fire)."""
    k = min(k, sae.cfg.d_sae)
    n_active, ids, values = [], [], []
    for start in range(0, len(x), ENCODE_ROWS):
        acts = sae.encode(x[start : start + ENCODE_ROWS].to(sae.device)).float()
        n_active.append((acts > 0).sum(-1).cpu())
        top = torch.topk(acts, k, dim=-1, sorted=True)
        ids.append(top.indices.cpu())
        values.append(top.values.cpu())
    if not n_active:
        return np.zeros(0, np.int32), np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)
    return (
        torch.cat(n_active).numpy().astype(np.int32),
        torch.cat(ids).numpy().astype(np.int32),
        torch.cat(values).numpy().astype(np.float32),
    )


def fired_lists(ids: np.ndarray, values: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per row, only the features that fired (value > 0): the sparse form that is stored."""
    keep = values > 0
    return [row[m] for row, m in zip(ids, keep, strict=True)], [
        row[m] for row, m in zip(values, keep, strict=True)
    ]


# -- the run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureResult:
    feature_run_id: str
    manifest: FeatureManifest


def _samples_table(plan: SaePlan, encoded: list[Encoded | str]) -> pa.Table:
    rows = list(zip(plan.records, encoded, strict=True))
    return pa.table(
        {
            "sample_idx": np.arange(len(rows), dtype=np.int32),
            "location": [r.location for r, _ in rows],
            "id": [r.id for r, _ in rows],
            "label": [r.label for r, _ in rows],
            "prompt": [r.prompt for r, _ in rows],
            "response": [r.response for r, _ in rows],
            "status": [OK if isinstance(e, Encoded) else e for _, e in rows],
            "answer_start": [e.answer_start if isinstance(e, Encoded) else -1 for _, e in rows],
            "total_tokens": [len(e.ids) if isinstance(e, Encoded) else 0 for _, e in rows],
            "truncated": [isinstance(e, Encoded) and e.truncated for _, e in rows],
        }
    )


def extract_features(
    plan: SaePlan,
    store_root: str | Path,
    progress: bool = True,
    loaded=None,
    sae=None,
    feature_run_id: str | None = None,
) -> FeatureResult:
    """Run the plan into `store_root`; `loaded`/`sae` reuse a loaded model and SAE."""
    from tqdm import tqdm

    from extraction.loading import load, pick_device

    s = plan.settings
    started = time.perf_counter()
    open_store(store_root, create=True, writable=True)
    device = pick_device(s.device)
    if sae is None:
        sae = load_sae(plan.sae, str(device))
    if loaded is None:
        loaded = load(plan.model, s.backend, s.device, s.compute_dtype, s.tl_processing)
    backend, tokenizer = loaded.backend, loaded.tokenizer
    spec = CaptureSpec((plan.sae.hook,), (plan.sae.layer,), ("all",))
    backend.validate(spec)
    encoded = [encode_record(tokenizer, r, s.chat_template, s.max_length) for r in plan.records]
    if not any(isinstance(e, Encoded) for e in encoded):
        raise DatasetError(f"no record of {plan.dataset_name!r} can be used: first {encoded[0]}")
    load_seconds = time.perf_counter() - started

    base = s.name or f"{plan.dataset_name}-{plan.model.name.split('/')[-1]}-{plan.sae.sae_id}"
    feature_run_id = feature_run_id or new_run_id(base[:90])
    writer = FeatureWriter.create(Path(store_root), feature_run_id, plan.source_bytes, plan.suffix)
    try:
        writer.write_samples(_samples_table(plan, encoded))
        usable = [i for i, e in enumerate(encoded) if isinstance(e, Encoded)]
        order = sorted(usable, key=lambda i: len(encoded[i].ids))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        bar = tqdm(total=len(order), desc=f"sae {plan.sae.sae_id}", unit="record",
                   disable=not progress, file=sys.stderr)  # fmt: skip
        extract_started = time.perf_counter()
        for start in range(0, len(order), s.batch_size):
            indices = order[start : start + s.batch_size]
            batch = make_batch([encoded[i].ids for i in indices], indices, pad_id)
            hidden = backend.capture(batch, spec)[(plan.sae.hook, "all", plan.sae.layer)]
            _store_batch(writer, sae, s, hidden, indices, [encoded[i] for i in indices],
                         tokenizer)  # fmt: skip
            writer.end_batch()
            bar.update(len(indices))
            writer.write_progress(start + len(indices), len(order))
        bar.close()
        extract_seconds = time.perf_counter() - extract_started
        timings = {
            "load_s": round(load_seconds, 3),
            "extract_s": round(extract_seconds, 3),
            "total_s": round(time.perf_counter() - started, 3),
            "records_per_s": round(len(order) / max(extract_seconds, 1e-9), 3),
        }
        manifest = _manifest(plan, feature_run_id, backend, writer, encoded, timings)
        writer.commit(manifest)
    except BaseException:
        writer.close()
        import shutil

        shutil.rmtree(writer.folder, ignore_errors=True)
        raise
    failed = len(plan.records) - manifest.n_ok
    if failed:
        _log(f"{failed} of {len(plan.records)} records could not be used (see their status)")
    return FeatureResult(feature_run_id, manifest)


def _store_batch(writer, sae, s: SaeSettings, hidden: torch.Tensor, indices: list[int],
                 encoded: list[Encoded], tokenizer) -> None:  # fmt: skip
    """Encode one batch's kept positions and hand them, and every token, to the writer."""
    rows, sample_idx, token_idx = [], [], []
    for row, (index, item) in enumerate(zip(indices, encoded, strict=True)):
        if s.positions == "last_prompt":
            positions = [item.answer_start - 1]
        else:
            positions = list(range(len(item.ids)))
        rows.append(hidden[row, positions])
        sample_idx += [index] * len(positions)
        token_idx += positions
    n_active, ids, values = top_features(sae, torch.cat(rows).float(), s.top_k)
    kept_ids, kept_values = fired_lists(ids, values)
    writer.add_positions(np.asarray(sample_idx, np.int32), np.asarray(token_idx, np.int32),
                         n_active, kept_ids, kept_values)  # fmt: skip
    flat = [t for item in encoded for t in item.ids]
    writer.add_tokens(
        np.repeat(np.asarray(indices, np.int32), [len(item.ids) for item in encoded]),
        np.concatenate([np.arange(len(item.ids), dtype=np.int32) for item in encoded]),
        np.asarray(flat, np.int32),
        tokenizer.batch_decode([[t] for t in flat]),
    )


def _manifest(
    plan: SaePlan, feature_run_id: str, backend, writer, encoded, timings
) -> FeatureManifest:
    import sae_lens

    s, sae = plan.settings, plan.sae
    n_ok = sum(isinstance(e, Encoded) for e in encoded)
    return FeatureManifest(
        feature_run_id=feature_run_id,
        name=s.name or feature_run_id,
        model=s.model,
        model_source=plan.model.source,
        model_architecture=backend.architecture,
        weights_sha256=plan.model.weights_sha256,
        n_layers=backend.n_layers,
        d_model=backend.d_model,
        backend=backend.name,
        weight_processing=backend.weight_processing,
        sae_source=sae.kind,
        sae=sae.name,
        sae_id=sae.sae_id,
        sae_sha256=sae.sha256(),
        sae_architecture=sae.architecture,
        hook=sae.hook,
        layer=sae.layer,
        d_sae=sae.d_sae,
        positions=s.positions,
        top_k=s.top_k,
        dataset_name=plan.dataset_name,
        dataset_sha256=plan.dataset_sha256,
        source_suffix=plan.suffix,
        n_records=len(plan.records),
        n_ok=n_ok,
        chat_template=s.chat_template,
        max_length=s.max_length,
        batch_size=s.batch_size,
        device=str(backend.device),
        compute_dtype=s.compute_dtype,
        code_version=code_version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        timings=timings,
        row_counts={
            "records": len(plan.records),
            "ok": n_ok,
            "positions": writer.rows_written,
            "truncated": sum(isinstance(e, Encoded) and e.truncated for e in encoded),
        },
        versions={**versions(s.backend), "sae_lens": sae_lens.__version__},
        extra={"dataset_path": str(resolve_dataset_path(s.dataset))},
    )
