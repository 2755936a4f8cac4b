"""One extraction run, end to end, as steps that other kinds of run reuse.

    plan = prepare(settings)                      # cheap checks, before any weights load
    loaded = load_model(plan)                     # the model, on its device
    tokens = tokenize(loaded.tokenizer, plan)     # token ids per sample, truncation flags
    opened = open_run(store, plan, fingerprint)   # a new writer, or a resumed one
    stream_batches(opened, loaded, plan, tokens)  # capture -> Parquet parts
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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from extraction.capture import CaptureSpec, make_batch
from extraction.datasets import Dataset, load_dataset
from extraction.generation import PromptFormat
from extraction.models import ResolvedModel, resolve
from extraction.provenance import code_version
from settings.run import (
    ANSWER_POSITION,
    GENERATION_FIELDS,
    RunSettings,
    new_run_id,
    resolve_layers,
    validate_run_id,
)
from store import RunManifest, RunWriter, open_store
from store.fs import is_uri
from store.writer import list_uncommitted

POSITION_POLICY = (
    "last = last real token; mean = mean over real tokens {first} the first token (one-token "
    "samples keep it); all = every real token. {padding}"
)
RIGHT_PADDING = "Right padding, masked."
LEFT_PADDING = (
    "Left padding (prompts end together for generation), masked; position ids from the mask."
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
        Name, device, device map and batch size do not change what is stored (up to the
        rounding of another device); quantisation does."""
        fields = {**asdict(self.settings), "layers": list(self.layers)}
        fields.update(weights=self.model.weights_sha256, dataset=self.dataset.sha256)
        for volatile in ("name", "device", "batch_size", "device_map"):
            fields.pop(volatile)
        if fields["quantize"] is None:  # unquantised runs keep their older fingerprints
            fields.pop("quantize")
        if not self.settings.generate:  # runs without answers keep their older fingerprints
            for unused in GENERATION_FIELDS:
                fields.pop(unused)
        return json.loads(json.dumps(fields))  # tuples as lists, as config.json holds them

    def fingerprint(self) -> str:
        """Same identity -> same fingerprint (what --resume keys on)."""
        return _fingerprint(self.identity())


def prepare(settings: RunSettings, local_device: bool = True) -> Plan:
    """Load the dataset, resolve the model, check layers and device: no weights, no writes.
    `local_device=False` leaves the device to the machines that load the model (Ray workers)."""
    from extraction.loading import check_placement, model_layer_count, pick_device

    dataset = load_dataset(settings.dataset)
    model = resolve(settings.model)
    layers = resolve_layers(settings.layers, model_layer_count(model))
    if local_device:
        pick_device(settings.device)
        check_placement(settings.device_map, settings.quantize)
    return Plan(settings, dataset, model, layers)


# -- step 2 and 3: the model and the tokens -----------------------------------------------------
def load_model(plan: Plan):
    """The loaded backend and tokenizer (extraction.loading.Loaded), checked against the plan."""
    from extraction.loading import load

    s = plan.settings
    loaded = load(plan.model, s.backend, s.device, s.compute_dtype, s.tl_processing,
                  device_map=s.device_map, quantize=s.quantize)  # fmt: skip
    loaded.backend.validate(capture_spec(plan))
    return loaded


def capture_spec(plan: Plan) -> CaptureSpec:
    """What the forward pass over each prompt captures (`answer_mean` comes from generation)."""
    s = plan.settings
    positions = tuple(p for p in s.positions if p != ANSWER_POSITION)
    return CaptureSpec(s.hooks, plan.layers, positions, s.include_first_token)


@dataclass(frozen=True)
class Tokens:
    """Token ids per sample (truncated to max_length), whether each was truncated, and how the
    texts became prompts (chat template or plain text)."""

    ids: list[list[int]]
    truncated: list[bool]
    prompt_format: PromptFormat = PromptFormat(chat_template=False)

    @property
    def lengths(self) -> list[int]:
        return [len(t) for t in self.ids]


def tokenize(tokenizer, plan: Plan) -> Tokens:
    """Token ids of every sample's prompt. A generation run uses the chat template whenever the
    tokenizer has one (`--chat-template` then only insists on it) and refuses to cut a prompt
    short: a truncated chat prompt would lose the assistant header the answer follows."""
    s = plan.settings
    if s.generate:
        fmt = PromptFormat.for_tokenizer(tokenizer, True if s.chat_template else None)
    else:
        fmt = PromptFormat.for_tokenizer(tokenizer, s.chat_template)
    ids_per_sample, truncated = [], []
    for sample in plan.dataset.samples:
        ids = fmt.ids(tokenizer, sample.text)
        if s.generate and len(ids) > s.max_length:
            raise ValueError(
                f"sample {sample.id!r} has {len(ids)} prompt tokens, over --max-length "
                f"{s.max_length}; raise --max-length to answer it"
            )
        truncated.append(len(ids) > s.max_length)
        ids_per_sample.append(ids[: s.max_length])
    return Tokens(ids_per_sample, truncated, fmt)


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
def pending_batches(plan: Plan, tokens: Tokens, done: frozenset[int] | set[int]) -> list[list[int]]:
    """The batches of samples not yet stored, shortest samples first (less padding): what a
    local run loops over and what a Ray run hands to its workers."""
    order = np.argsort(tokens.lengths, kind="stable")
    todo = [int(i) for i in order if int(i) not in done]
    size = plan.settings.batch_size
    return [todo[start : start + size] for start in range(0, len(todo), size)]


def batch_storer(
    writer: RunWriter, loaded, plan: Plan, token_ids: Mapping[int, list[int]] | list[list[int]]
) -> Callable[[list[int]], None]:
    """`store(indices)`: capture one batch of samples (by dataset index) into `writer`: a
    forward pass, or for a `--generate N` run the answers and their pooled states. `token_ids`
    maps a sample index to its prompt's token ids (all of them, or just the batch's: a Ray
    worker gets only its batches')."""
    if plan.settings.generate:
        return _answer_storer(writer, loaded, plan, token_ids)
    spec = capture_spec(plan)
    backend, tokenizer = loaded.backend, loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    keep_tokens = tokenizer if "all" in plan.settings.positions else None

    def store(indices: list[int]) -> None:
        batch = make_batch([token_ids[i] for i in indices], indices, pad_id)
        _store_batch(writer, backend.capture(batch, spec), batch, keep_tokens)

    return store


def _answer_storer(writer: RunWriter, loaded, plan: Plan, token_ids) -> Callable[[list[int]], None]:
    """`batch_storer` of a `--generate N` run: answer each batch of prompts (left-padded),
    storing the prompt positions, `answer_mean` and the answers."""
    from extraction.answer_states import AnswerStateRecorder, steps_needed
    from extraction.generation import Sampling, generate_batch, stop_token_ids

    s, spec = plan.settings, capture_spec(plan)
    model, tokenizer = loaded.hf_model, loaded.tokenizer
    stops = stop_token_ids(model, tokenizer)
    sampling = Sampling(s.temperature, s.seed)
    steps = steps_needed(s.generate, s.answer_states)

    def store(indices: list[int]) -> None:
        prompts = [token_ids[i] for i in indices]
        lengths = [len(p) for p in prompts]
        with AnswerStateRecorder(
            loaded.backend, s.hooks, plan.layers, lengths, steps, spec.positions,
            s.include_first_token,
        ) as recorder:  # fmt: skip
            answers = generate_batch(
                model, tokenizer, prompts, max_new_tokens=s.max_new_tokens, sampling=sampling,
                keys=indices, stop_ids=stops,
            )  # fmt: skip
        captured, pooled = recorder.pooled(answers.lengths, s.generate, s.answer_states)
        sample_idx = np.asarray(indices, dtype=np.int32)
        _store_pooled(writer, captured, sample_idx, lengths)
        writer.add_answers(answers_table(tokenizer, sample_idx, answers, pooled))

    return store


def stream_batches(opened: OpenedRun, loaded, plan: Plan, tokens: Tokens, progress: bool = True
                   ) -> float:  # fmt: skip
    """Capture every sample not yet stored (or answer it, for `--generate N`), batch by batch,
    into the writer, marking each batch whole; returns seconds."""
    from tqdm import tqdm

    writer = opened.writer
    store = batch_storer(writer, loaded, plan, tokens.ids)
    what = " answers" if plan.settings.generate else ""
    total, done = len(plan.dataset), opened.resumed
    started = time.perf_counter()
    bar = tqdm(total=total, initial=done, desc=f"{plan.model.name} {plan.dataset.name}{what}",
               unit="sample", disable=not progress, file=sys.stderr)  # fmt: skip
    for indices in pending_batches(plan, tokens, writer.done_samples):
        store(indices)
        writer.end_batch(indices)
        done += len(indices)
        bar.update(len(indices))
        writer.write_progress(done, total, run_id=opened.run_id)
    bar.close()
    seconds = time.perf_counter() - started
    writer.flush()
    return seconds


def answers_table(tokenizer, sample_idx: np.ndarray, answers, pooled) -> pa.Table:
    """The answer columns that join the sample table (see `RunWriter.merge_answers`)."""
    ids = [list(row) for row in answers.token_ids]
    return pa.table(
        {
            "sample_idx": pa.array(sample_idx, pa.int32()),
            "answer": pa.array(list(answers.texts), pa.string()),
            "answer_token_ids": pa.array(ids, pa.list_(pa.int32())),
            "answer_tokens": pa.array(
                [tokenizer.convert_ids_to_tokens(row) for row in ids], pa.list_(pa.string())
            ),
            "answer_stopped": pa.array(list(answers.stopped), pa.bool_()),
            "answer_states_pooled": pa.array(pooled.int().tolist(), pa.int32()),
        }
    )


def _store_pooled(writer: RunWriter, captured, sample_idx: np.ndarray, lengths) -> None:
    """Pooled rows of one batch: `last` records its token index, the means -1."""
    pooled_token = np.full(len(sample_idx), -1, np.int32)
    last_token = np.asarray(lengths, dtype=np.int32) - 1
    for (hook, position, layer), tensor in captured.items():
        token = last_token if position == "last" else pooled_token
        writer.add(hook, position, layer, sample_idx, token, tensor.float().cpu().numpy())


def _store_batch(writer: RunWriter, captured, batch, tokenizer) -> None:
    sample_idx = np.asarray(batch.sample_idx, dtype=np.int32)
    lengths = batch.lengths.tolist()
    _store_pooled(writer, {k: v for k, v in captured.items() if k[1] != "all"}, sample_idx, lengths)
    for (hook, position, layer), tensor in captured.items():
        if position == "all":
            values = tensor.float().cpu().numpy()
            rows_idx = np.repeat(sample_idx, lengths)
            token_idx = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
            real = np.concatenate([values[row, :n] for row, n in enumerate(lengths)])
            writer.add(hook, position, layer, rows_idx, token_idx, real)
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
    plan: Plan, opened: OpenedRun, backend, tokenizer, tokens: Tokens, timings: dict[str, float],
    placement: dict | None = None,
) -> RunManifest:  # fmt: skip
    """The run's provenance; `placement` (extraction.loading.placement_record) where a device
    map or quantisation placed the weights."""
    s, writer = plan.settings, opened.writer
    extra = {"fingerprint": plan.fingerprint(), "dataset_path": plan.dataset.path}
    if placement is not None:
        extra["placement"] = placement
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
        position_policy=POSITION_POLICY.format(
            first=first, padding=LEFT_PADDING if s.generate else RIGHT_PADDING
        )
        + answer_policy(s),
        include_first_token_in_mean=s.include_first_token,
        chat_template=tokens.prompt_format.template_text(tokenizer),
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
        extra=extra,
        generation=generation_record(s, tokens, backend, tokenizer),
    )


def answer_policy(s: RunSettings) -> str:
    if not s.generate:
        return ""
    from extraction.answer_states import DESCRIPTIONS

    return (
        f" answer_mean = mean over the first {s.generate} answer states, "
        f"{s.answer_states}: {DESCRIPTIONS[s.answer_states]}."
    )


def generation_record(s: RunSettings, tokens: Tokens, backend, tokenizer) -> dict | None:
    """The manifest's `generation` record of a `--generate N` run (None otherwise)."""
    if not s.generate:
        return None
    from extraction.answer_states import DESCRIPTIONS
    from extraction.generation import Sampling, stop_token_ids

    return {
        "answer_tokens_pooled": s.generate,
        "answer_states": s.answer_states,
        "answer_states_meaning": DESCRIPTIONS[s.answer_states],
        "prompt_format": tokens.prompt_format.name,
        "max_new_tokens": s.max_new_tokens,
        "decoding": Sampling(s.temperature, s.seed).describe(),
        "temperature": s.temperature,
        "seed": s.seed,
        "stop_token_ids": list(stop_token_ids(backend.model, tokenizer)),
        "padding": "left, with the attention mask; position ids from the mask",
        "short_answers": (
            "an answer that stops before N pools the states it has (answer_states_pooled per "
            "sample); an own-convention answer that stops at once pools the last prompt state"
        ),
    }


def _save_readout(store_root, plan: Plan, loaded) -> list[str]:
    """Save the model's readout after the run committed; a failure is a warning, not a failed
    run (the run is there and usable)."""
    from extraction.readout import save_readout
    from store import StoreError

    if is_uri(store_root):
        return []  # readouts are kept in local stores only (store.readouts writes by rename)
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
    readout: bool | None = None,
) -> RunResult:
    """Run one extraction into `store_root`. `loaded` reuses an already-loaded model.

    `run_id` presets the new run's id (the app's job registry knows it before the run starts).
    `readout`: save the model's final norm and unembedding into the store too (once per weights,
    extraction.readout), for reading directions as tokens. None (the default) saves it when the
    run is of a paired dataset, what control vectors (the words' only reader today) come from:
    a readout is big (336 MB for Gemma-3-270M), so a run that nothing reads in words adds none.
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
        store_root if is_uri(store_root) else Path(store_root), plan, loaded.backend.d_model,
        resume=resume, run_id=run_id, flush_bytes=flush_bytes,
    )  # fmt: skip
    opened.writer.write_samples(samples_table(opened.run_id, plan.dataset, tokens))
    extract_seconds = stream_batches(opened, loaded, plan, tokens, progress)
    writer = opened.writer
    writer.write_summaries()  # before the manifest, so their cost is in its timings
    timings = run_timings(
        started, load_seconds, extract_seconds, writer, len(plan.dataset) - opened.resumed
    )
    from extraction.loading import placement_record

    placement = placement_record(loaded.hf_model, settings.device_map, settings.quantize)
    manifest = build_manifest(
        plan, opened, loaded.backend, loaded.tokenizer, tokens, timings, placement
    )
    writer.commit(manifest)
    warnings = []
    if readout is None:
        readout = any(sample.pair_id is not None for sample in plan.dataset.samples)
    if readout:
        warnings.extend(_save_readout(store_root, plan, loaded))
    return finish(opened, manifest, warnings)


def run_timings(started: float, load_s: float, extract_s: float, writer: RunWriter, new: int,
                other_write_s: float = 0.0) -> dict[str, float]:  # fmt: skip
    """The manifest's timings: `new` samples extracted in `extract_s` (`other_write_s`: what
    other processes spent writing parts, a Ray run's workers)."""
    return {
        "load_s": round(load_s, 3),
        "extract_s": round(extract_s, 3),
        "write_s": round(writer.write_seconds + other_write_s, 3),
        "summaries_s": round(writer.summary_seconds, 3),
        "total_s": round(time.perf_counter() - started, 3),
        "samples_per_s": round(new / max(extract_s, 1e-9), 3),
    }


def finish(opened: OpenedRun, manifest: RunManifest, warnings: list[str]) -> RunResult:
    """The committed run's result, with its warnings logged (float16 overflow among them)."""
    overflow = opened.writer.overflow_values
    if overflow:
        warnings.append(
            f"{overflow} values exceeded the float16 range and were stored as inf; "
            "rerun with --dtype float32 to keep them"
        )
    for warning in warnings:
        _log("warning: " + warning)
    return RunResult(opened.run_id, manifest, opened.resumed, warnings)
