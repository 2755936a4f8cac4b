"""Save a model's final norm and unembedding into the store, once per weights (store.readouts).

The app reads directions as tokens without torch (`analysis.readout`), so extraction writes what
that needs when it has the model loaded anyway, once per model weights (`readouts/<key>`, shared
by every run, vector set and page of that model): after a committed run of a paired dataset
(what control vectors come from; `run --readout/--no-readout` overrides) whose model has no
readout in the store yet, and on `python -m extraction readout --model M --store S`.

The final norm is found through `extraction.architectures` (no model names) and *measured*, not
assumed: it is fed random states and fitted, per dimension, as `gain * u + bias` with u the state
divided by its RMS (an RMSNorm, Llama's `weight` or Gemma's `1 + weight` alike) or centred and
divided by its standard deviation (a LayerNorm). The fit that explains the output (relative
error under 1e-3) gives the norm's kind and gain; a norm that is neither is refused with the
model type named. Sizes: float16 [vocab, d_model], 57 MB for SmolLM2-135M, 336 MB for Gemma-3-270M
(its vocabulary has 262,144 tokens).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from extraction.architectures import architecture_for, final_norm
from extraction.models import ResolvedModel
from extraction.provenance import code_version, light_versions
from store import open_store
from store.readouts import ReadoutManifest, readout_key, write_readout

CHUNK_ROWS = 16384
FIT_TOLERANCE = 1e-3


def measure_norm(norm: torch.nn.Module, d_model: int, seed: int = 0) -> tuple[str, np.ndarray]:
    """(kind, gain [d]) of an elementwise-affine RMSNorm ("rms") or LayerNorm ("layer")."""
    generator = torch.Generator().manual_seed(seed)
    parameter = next(norm.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    # Large states keep the norm's epsilon negligible next to their mean square.
    x = torch.randn(512, d_model, generator=generator, dtype=torch.float64) * 10
    with torch.inference_mode():
        y = norm(x.to(device, dtype)).to("cpu", torch.float64).numpy()
    x = x.numpy()
    candidates = {
        "rms": x / np.sqrt((x**2).mean(axis=1, keepdims=True)),
        "layer": (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True),
    }
    best, errors = None, {}
    for kind, u in candidates.items():
        u_c, y_c = u - u.mean(axis=0), y - y.mean(axis=0)
        gain = (u_c * y_c).sum(axis=0) / (u_c**2).sum(axis=0)
        bias = y.mean(axis=0) - gain * u.mean(axis=0)
        error = np.linalg.norm(y - (gain * u + bias)) / max(np.linalg.norm(y), 1e-30)
        errors[kind] = error
        if error < FIT_TOLERANCE and (best is None or error < errors[best[0]]):
            best = (kind, gain)
    if best is None:
        raise ValueError(
            "the final norm is neither an RMSNorm nor a LayerNorm with a per-dimension scale "
            f"(fit errors {', '.join(f'{k} {v:.2g}' for k, v in errors.items())})"
        )
    return best


def _chunks(weight: torch.Tensor, tokenizer) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
    vocab = weight.shape[0]
    known = len(tokenizer)
    for start in range(0, vocab, CHUNK_ROWS):
        ids = list(range(start, min(start + CHUNK_ROWS, vocab)))
        inside = [i for i in ids if i < known]
        pieces = tokenizer.convert_ids_to_tokens(inside) if inside else []
        texts = tokenizer.batch_decode([[i] for i in inside]) if inside else []
        padding = [""] * (len(ids) - len(inside))  # rows past the tokenizer: no token
        W = weight[start : start + len(ids)].detach().to("cpu", torch.float16).numpy()
        yield [p or "" for p in pieces] + padding, list(texts) + padding, W


def save_readout(
    store_root: str | Path, resolved: ResolvedModel, hf_model: torch.nn.Module, tokenizer
) -> bool:
    """Write the model's readout unless the store has one for these weights; returns whether
    one was written."""
    store = open_store(store_root)
    key = readout_key(resolved.weights_sha256)
    if any(m.key == key for m in store.readouts()):
        return False
    head = hf_model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None or head.weight.ndim != 2:
        raise ValueError(f"model {resolved.name!r} has no output embedding matrix")
    weight = head.weight
    d_model = int(weight.shape[1])
    kind, gain = measure_norm(final_norm(hf_model, architecture_for(hf_model)), d_model)
    manifest = ReadoutManifest(
        key=key,
        weights_sha256=resolved.weights_sha256,
        model=resolved.name,
        architecture=str(getattr(hf_model.config, "model_type", "")),
        d_model=d_model,
        vocab_size=int(weight.shape[0]),
        norm_kind=kind,
        gain=tuple(float(g) for g in gain),
        code_version=code_version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        versions={**light_versions(), "torch": torch.__version__},
    )
    return write_readout(Path(store_root), manifest, _chunks(weight, tokenizer))
