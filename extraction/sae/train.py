"""Train an SAE on a run's stored activations (`python -m extraction train-sae`).

    plan = plan_training(settings, store)        # the run, site, held-out records, token budget
    result = train(plan, store, progress=True)   # trains, measures, saves, commits

The SAE is sae-lens's `TopKTrainingSAE`, trained by sae-lens's `SAETrainer.step` (its loss with
the auxiliary loss for dead features, Adam, gradient clipping, learning-rate schedule, dead
feature tracking). What sae-lens lacks is a data source of activations that are already stored,
so this module streams them from the store (`Store.iter_token_vectors`) through a shuffle buffer
of bounded size, pass after pass, and runs the loop itself (with its own progress bar). Memory
stays flat in the number of stored tokens: the buffer holds at most `BUFFER_BYTES` of vectors.

Each record's first token is left out unless asked for: it is an attention sink whose norm is
~100x the others' in middle layers (measured: 23,700 against 175 on SmolLM2 layer 15), so it
would dominate the reconstruction loss. A tenth of the records (seeded) are held out: the
explained variance on the card is measured on their tokens, after training, in one more
streaming pass that also measures L0 and the share of dead features (never active on any
token of the run). The SAE is saved with sae-lens's `save_inference_model` (decoder norms folded
in) into `STORE/saes/<id>/`, loaded back with `SAE.load_from_disk` and checked to encode as the
trained one does, with the tokens each feature promotes (extraction.sae.readout), then
committed with its card.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from extraction.loading import pick_device
from extraction.runner import code_version
from extraction.sae.readout import promoted_tokens
from settings.run import new_run_id
from settings.sae import TrainSaeSettings, default_training_tokens, tl_hook_name
from store import RunManifest, Store, StoreError
from store.saes import SaeCard, SaeWriter, training_site

BUFFER_BYTES = 128 * 1024 * 1024  # of float32 vectors in the shuffle buffer
# Below this many multiply-adds per step, one CPU thread is faster: thread handoffs dominate.
# Measured on 2 busy cores (d 32, 64 features, batch 64): 16 ms a step on one thread, 180 on two.
ONE_THREAD_BELOW = 50_000_000
HELDOUT_SHARE = 0.1
STREAM_ROWS = 4096


def _log(message: str) -> None:
    print(f"[train-sae] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class TrainPlan:
    """What a training will read, found cheaply (no vectors read yet)."""

    settings: TrainSaeSettings
    run: RunManifest
    layer: int
    heldout: frozenset[int]  # sample_idx of held-out records
    train_tokens: int  # usable tokens of the training records (one pass)
    training_tokens: int  # tokens to train on in all (several passes)
    sae_id: str

    def usable(self, token_idx: np.ndarray) -> np.ndarray:
        """Which tokens train and measure: all but each record's first, unless asked."""
        if self.settings.include_first_token:
            return np.ones(len(token_idx), bool)
        return token_idx > 0


def plan_training(settings: TrainSaeSettings, store: Store) -> TrainPlan:
    """Check the run, site and layer, and size the training: StoreError/ValueError if unfit."""
    run = store.manifest(store.resolve_run_id(settings.run))
    what = f"run {run.run_id!r}"
    layer = training_site(run, settings.hook, settings.layer)
    samples = store.samples(run.run_id)
    indices = samples["sample_idx"].to_numpy()
    order = np.random.default_rng(settings.seed).permutation(len(indices))
    n_heldout = int(len(indices) * HELDOUT_SHARE) if len(indices) >= 10 else 0
    heldout = frozenset(int(i) for i in indices[order[:n_heldout]])
    lengths = samples["n_tokens"].to_numpy()
    per_record = lengths if settings.include_first_token else np.maximum(lengths - 1, 0)
    train_tokens = int(per_record[~np.isin(indices, list(heldout))].sum())
    if train_tokens < settings.batch_size:
        raise ValueError(
            f"{what} has {train_tokens} training tokens at layer {layer}, fewer than one batch "
            f"of {settings.batch_size}; use a larger run or a smaller --batch-size"
        )
    total = settings.training_tokens or default_training_tokens(train_tokens)
    base = f"sae-{run.model.rstrip('/').split('/')[-1]}-{settings.hook}-L{layer}"
    sae_id = settings.name or new_run_id(base)
    return TrainPlan(settings, run, layer, heldout, train_tokens, total, sae_id)


def _training_rows(plan: TrainPlan, store: Store) -> Iterator[np.ndarray]:
    """One pass over the run's training tokens, in stored order, chunk by chunk."""
    heldout = np.fromiter(plan.heldout, np.int64)
    rows_this_pass = 0
    for sample_idx, token_idx, X in store.iter_token_vectors(
        plan.run.run_id, plan.settings.hook, plan.layer, STREAM_ROWS
    ):
        rows = X[plan.usable(token_idx) & ~np.isin(sample_idx, heldout)]
        rows_this_pass += len(rows)
        yield rows
    if rows_this_pass == 0:  # the files hold none of the tokens the samples table counts
        raise StoreError(f"run {plan.run.run_id!r} has no stored tokens at this site")


def training_batches(plan: TrainPlan, store: Store, device: torch.device) -> Iterator[torch.Tensor]:
    """Batches of `batch_size` shuffled training tokens [B, d_model], `training_tokens` in all.

    A run whose training tokens fit in the buffer is read once and reshuffled every pass.
    A larger one is streamed pass after pass through a shuffle buffer: once it holds
    `capacity` rows, a random half is emitted as batches and the rest stays to mix with what
    comes next. Either way at most `capacity` vectors are held.
    """
    s, d = plan.settings, plan.run.d_model
    capacity = max(8 * s.batch_size, BUFFER_BYTES // (4 * d))
    capacity -= capacity % s.batch_size
    rng = np.random.default_rng(s.seed)
    emitted = 0
    if plan.train_tokens <= capacity:
        data = np.concatenate(list(_training_rows(plan, store)))
        tail = np.zeros((0, d), np.float32)
        while True:
            shuffled = np.concatenate([tail, data[rng.permutation(len(data))]])
            whole = len(shuffled) - len(shuffled) % s.batch_size
            for start in range(0, whole, s.batch_size):
                yield torch.from_numpy(shuffled[start : start + s.batch_size]).to(device)
                emitted += s.batch_size
                if emitted >= plan.training_tokens:
                    return
            tail = shuffled[whole:]
    buffer = np.empty((capacity + STREAM_ROWS, d), np.float32)
    filled = 0
    while True:  # one pass over the run per iteration
        for rows in _training_rows(plan, store):
            buffer[filled : filled + len(rows)] = rows
            filled += len(rows)
            if filled < capacity:
                continue
            buffer[:filled] = buffer[rng.permutation(filled)]
            half = (filled // 2) - (filled // 2) % s.batch_size
            for start in range(0, half, s.batch_size):
                yield torch.from_numpy(buffer[start : start + s.batch_size].copy()).to(device)
                emitted += s.batch_size
                if emitted >= plan.training_tokens:
                    return
            buffer[: filled - half] = buffer[half:filled]
            filled -= half


@dataclass
class Measured:
    """Sums over one streaming pass, per split (0 = training records, 1 = held out)."""

    n: np.ndarray
    sum_x: np.ndarray  # [2, d] float64
    sum_sq: np.ndarray  # [2] sum of squared norms
    sum_err: np.ndarray  # [2] sum of squared reconstruction errors
    active: float  # sum over all tokens of active features
    fired: np.ndarray  # [d_sae] bool: ever active

    def metrics(self) -> dict[str, float]:
        split = 1 if self.n[1] else 0  # a run too small to hold records out is measured whole
        n, sum_x, sum_sq = self.n[split], self.sum_x[split], self.sum_sq[split]
        total_var = sum_sq - float(sum_x @ sum_x) / n
        mean_train = self.sum_x[0] / max(self.n[0], 1)
        mean_err = sum_sq - 2 * float(mean_train @ sum_x) + n * float(mean_train @ mean_train)
        train_var = self.sum_sq[0] - float(self.sum_x[0] @ self.sum_x[0]) / max(self.n[0], 1)
        return {
            "explained_variance": 1 - self.sum_err[split] / total_var,
            "explained_variance_train": 1 - self.sum_err[0] / train_var,
            "explained_variance_mean_baseline": 1 - mean_err / total_var,
            "explained_variance_zero_baseline": 1 - sum_sq / total_var,
            "mse": self.sum_err[split] / n,
            "mse_mean_baseline": mean_err / n,
            "mse_zero_baseline": sum_sq / n,
            "l0": self.active / max(self.n.sum(), 1),
            "dead_share": 1 - float(self.fired.mean()),
            "heldout_tokens": float(self.n[1]),
            "measured_tokens": float(self.n.sum()),
        }


@torch.no_grad()
def measure(sae, plan: TrainPlan, store: Store, device: torch.device) -> Measured:
    """One streaming pass: reconstruction error and baselines per split, L0, features fired."""
    d = plan.run.d_model
    m = Measured(np.zeros(2), np.zeros((2, d)), np.zeros(2), np.zeros(2), 0.0,
                 np.zeros(sae.cfg.d_sae, bool))  # fmt: skip
    heldout = np.fromiter(plan.heldout, np.int64)
    for sample_idx, token_idx, X in store.iter_token_vectors(
        plan.run.run_id, plan.settings.hook, plan.layer, STREAM_ROWS
    ):
        keep = plan.usable(token_idx)
        x = torch.from_numpy(X[keep]).to(device)
        split = np.isin(sample_idx[keep], heldout).astype(int)
        acts = sae.encode(x)
        error = ((sae.decode(acts) - x) ** 2).sum(-1).double().cpu().numpy()
        on = acts > 0
        m.active += float(on.sum())
        m.fired |= on.any(0).cpu().numpy()
        x64 = X[keep].astype(np.float64)
        for part in (0, 1):
            rows = split == part
            m.n[part] += rows.sum()
            m.sum_x[part] += x64[rows].sum(0)
            m.sum_sq[part] += (x64[rows] ** 2).sum()
            m.sum_err[part] += error[rows].sum()
    return m


def _sae_lens_config(plan: TrainPlan, device: torch.device):
    from sae_lens import TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    run, s = plan.run, plan.settings
    processed = run.backend == "transformer_lens" and "center_writing" in run.weight_processing
    metadata = SAEMetadata(
        model_name=run.model,
        hook_name=tl_hook_name(s.hook, plan.layer),
        hook_head_index=None,
        context_size=run.max_length,
        # The activations' basis: raw weights, or TransformerLens's processing (see
        # extraction.sae.source, which checks it against the backend of an extraction).
        model_from_pretrained_kwargs=(
            {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}
            if processed
            else {}
        ),
        actx_sae_id=plan.sae_id,
        actx_run_id=run.run_id,
        actx_weights_sha256=run.weights_sha256,
    )
    return TopKTrainingSAEConfig(
        d_in=run.d_model, d_sae=s.d_sae, k=s.k, dtype="float32", device=str(device),
        metadata=metadata,
    )  # fmt: skip


@dataclass(frozen=True)
class TrainResult:
    sae_id: str
    card: SaeCard
    folder: Path
    sae: object  # the trained sae-lens TopKTrainingSAE, in eval mode


def train(plan: TrainPlan, store: Store, progress: bool = True) -> TrainResult:
    """Train, measure, save in sae-lens's format, check the saved copy, commit with its card."""
    from sae_lens import SAE, TopKTrainingSAE
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer
    from tqdm import tqdm

    s = plan.settings
    device = pick_device(s.device)
    torch.manual_seed(s.seed)
    started = time.perf_counter()
    writer = SaeWriter.create(store.root, plan.sae_id)
    threads = torch.get_num_threads()
    if device.type == "cpu" and s.batch_size * plan.run.d_model * s.d_sae < ONE_THREAD_BELOW:
        torch.set_num_threads(1)
    try:
        sae = TopKTrainingSAE(_sae_lens_config(plan, device))
        batches = training_batches(plan, store, device)
        first = next(batches)
        with torch.no_grad():  # start the decoder bias at the data's mean, not at 0
            sae.b_dec.data = first.mean(0).to(sae.b_dec.dtype)
        steps = plan.training_tokens // s.batch_size
        trainer_cfg = SAETrainerConfig(
            total_training_samples=plan.training_tokens,
            train_batch_size_samples=s.batch_size,
            lr=s.lr,
            lr_end=s.lr,
            lr_warm_up_steps=warm_up if (warm_up := min(100, steps // 10)) >= 2 else 0,
            lr_decay_steps=steps // 5,
            dead_feature_window=max(20, min(1000, steps // 5)),
            feature_sampling_window=max(1, steps),
            device=str(device),
        )
        trainer = SAETrainer(trainer_cfg, sae, data_provider=iter(()))
        bar = tqdm(total=steps * s.batch_size, desc=f"train {plan.sae_id}", unit="tok",
                   unit_scale=True, disable=not progress, file=sys.stderr)  # fmt: skip
        train_started = time.perf_counter()
        batch = first
        for step in range(steps):
            trainer.maybe_reset_sparsity()
            output = trainer.step(batch)
            trainer.n_training_steps += 1
            bar.update(len(batch))
            if step % 25 == 0 or step == steps - 1:
                mse = float(output.losses["mse_loss"].detach())
                dead = int(trainer.dead_neurons.sum())
                bar.set_postfix(mse=f"{mse:.4g}", dead=dead, refresh=False)
                writer.write_progress(step + 1, steps)
            if step < steps - 1:
                batch = next(batches)
        bar.close()
        trainer.set_final_sae_metadata()
        train_seconds = time.perf_counter() - train_started
        sae.eval()
        measured = measure(sae, plan, store, device)
        sae.save_inference_model(writer.folder)
        loaded = SAE.load_from_disk(str(writer.folder), device=str(device))
        _check_same_encoding(sae, loaded, first)
        promoted = promoted_tokens(loaded.W_dec, plan.run)
        if promoted is not None:
            writer.write_promoted(promoted)
        card = _card(plan, measured, train_seconds, time.perf_counter() - started, steps)
        writer.commit(card)
    except BaseException:
        writer.close()
        shutil.rmtree(writer.folder, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    metrics = card.metrics
    _log(
        f"{plan.sae_id}: explained variance {metrics['explained_variance']:.3f} (held out), "
        f"L0 {metrics['l0']:.1f}, dead {100 * metrics['dead_share']:.1f}% of {s.d_sae}"
    )
    return TrainResult(plan.sae_id, card, writer.folder, sae)


@torch.no_grad()
def _check_same_encoding(trained, loaded, probe: torch.Tensor) -> None:
    """The copy sae-lens loads must encode as the trained SAE does (decoder norms are folded
    into the encoder on saving, so the numbers may differ in the last bits only).

    Where two features tie at a row's k-th largest activation, those last bits may choose the
    other one: a code may differ only at entries within rounding of the row's k-th value."""
    a, b = trained.encode(probe), loaded.encode(probe.to(loaded.device)).to(probe.device)
    if not boundary_ties_only(a, b):
        raise StoreError("the saved SAE does not encode as the trained one; nothing committed")


def boundary_ties_only(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Whether codes a and b [n, d_sae] are equal up to rtol, except at entries that tie (within
    rtol of the row's scale) with the row's smallest kept activation of a."""
    scale = a.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    close = (a - b).abs() <= rtol * scale
    if bool(close.all()):
        return True
    kept = torch.where(a != 0, a.abs(), torch.full_like(a, float("inf")))
    kth = kept.amin(dim=1, keepdim=True)  # the row's boundary value
    at_boundary = ((a.abs() - kth).abs() <= 10 * rtol * scale) | (
        (b.abs() - kth).abs() <= 10 * rtol * scale
    )
    return bool((close | at_boundary).all())


def _card(
    plan: TrainPlan, measured: Measured, train_s: float, total_s: float, steps: int
) -> SaeCard:
    import sae_lens

    from extraction.runner import versions

    run, s = plan.run, plan.settings
    metrics = {k: round(float(v), 6) for k, v in measured.metrics().items()}
    return SaeCard(
        sae_id=plan.sae_id,
        model=run.model,
        model_source=run.model_source,
        model_architecture=run.architecture,
        weights_sha256=run.weights_sha256,
        n_layers=run.n_layers,
        d_model=run.d_model,
        backend=run.backend,
        weight_processing=run.weight_processing,
        hook=s.hook,
        layer=plan.layer,
        d_sae=s.d_sae,
        k=s.k,
        run_id=run.run_id,
        dataset_name=run.dataset_name,
        dataset_sha256=run.dataset_sha256,
        training={
            **{k: v for k, v in s.to_dict().items() if k not in ("run", "name", "layer")},
            "training_tokens": plan.training_tokens,
            "steps": steps,
            "train_tokens_per_pass": plan.train_tokens,
            "heldout_records": len(plan.heldout),
            "first_token": "included" if s.include_first_token else "left out (attention sink)",
        },
        metrics=metrics,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        code_version=code_version(),
        timings={
            "train_s": round(train_s, 3),
            "total_s": round(total_s, 3),
            "tokens_per_s": round(plan.training_tokens / max(train_s, 1e-9), 1),
        },
        versions={**versions(), "sae_lens": sae_lens.__version__},
    )
