"""Synthetic runs written straight through `store.RunWriter`: no model, any size, in seconds.

Tests use them for shapes the tiny real models do not give (one label, different widths, pairs
without an `all` capture, sides of different token counts); bench/bench_pages.py uses them for a
100,000-sample store. Rows are generated and written a batch at a time, so memory stays flat
however many samples a run has.

Vectors: standard normal noise plus, for each label, a fixed random offset (scaled by
`signal`), so difference-of-means directions are real and layers differ a little.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from store import RunManifest, RunWriter

SAMPLE_COLUMNS = ("id", "text", "label", "pair_id", "side", "category", "prompt", "response")


def label_rows(labels: Sequence[str], per_label: int, dataset: str = "synth") -> list[dict]:
    """Sample rows with the given labels (per_label each), texts made up."""
    return [
        {"id": f"{dataset}-{label}-{i}", "text": f"{label} sample {i}", "label": label}
        for label in labels
        for i in range(per_label)
    ]


def pair_rows(n_pairs: int, categories=("meaning_change", "grammar_error")) -> list[dict]:
    rows = []
    for i in range(n_pairs):
        category = categories[i % len(categories)]
        for side, word in (("a", "cat"), ("b", "dog")):
            text = f"The {word} {i}."
            rows.append({"id": f"p{i}{side}", "pair_id": f"p{i}", "side": side,
                         "category": category, "label": side, "text": text})  # fmt: skip
    return rows


def dataset_sha(rows: list[dict]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def _samples_table(run_id: str, rows: list[dict], n_tokens: np.ndarray) -> pa.Table:
    n = len(rows)
    columns = {c: pa.array([row.get(c) for row in rows], pa.string()) for c in SAMPLE_COLUMNS}
    return pa.table(
        {
            "sample_idx": pa.array(np.arange(n, dtype=np.int32)),
            "run_id": pa.array([run_id] * n, pa.string()),
            **columns,
            "n_tokens": pa.array(n_tokens.astype(np.int32)),
            "truncated": pa.array(np.zeros(n, bool)),
        }
    )


def write_run(
    root: Path | str, run_id: str, rows: list[dict], *, d_model: int = 8,
    n_layers: int = 3, layers: Sequence[int] | None = None, hooks=("resid_post",),
    positions=("last", "mean"), model: str = "synthetic-model", dataset_name: str = "synth",
    dataset_sha256: str | None = None, dtype: str = "float32", seed: int = 0,
    signal: float = 2.0, n_tokens: Sequence[int] | None = None, batch_rows: int = 4096,
    summaries: bool = True,
) -> str:  # fmt: skip
    """Write and commit one run; returns its run id.

    n_tokens: token count per sample (default 3 each); used by position `all`, which writes one
    row per token plus a tokens table ("t0", "t1", ...). summaries: False writes none (as runs
    committed before summaries existed).
    """
    root = Path(root)
    layers = list(range(n_layers) if layers is None else layers)
    n = len(rows)
    lengths = np.full(n, 3) if n_tokens is None else np.asarray(n_tokens)
    labels = sorted({str(row.get("label")) for row in rows})
    rng = np.random.default_rng(seed)
    offsets = {label: signal * rng.normal(size=d_model) for label in labels}
    writer = RunWriter.create(root, run_id, {"synthetic": True}, d_model=d_model, dtype=dtype,
                              summaries=summaries)  # fmt: skip
    writer.write_samples(_samples_table(run_id, rows, lengths))
    for start in range(0, n, batch_rows):
        idx = np.arange(start, min(start + batch_rows, n))
        offset = np.stack([offsets[str(rows[i].get("label"))] for i in idx])
        for li, layer in enumerate(layers):
            for hook in hooks:
                for position in positions:
                    _add_site(writer, rng, hook, position, layer, li, idx, offset, lengths)
        if "all" in positions:
            token_idx = np.concatenate([np.arange(lengths[i]) for i in idx])
            sample_idx = np.repeat(idx, lengths[idx])
            writer.add_tokens(sample_idx, token_idx, token_idx, [f"t{t}" for t in token_idx])
        writer.end_batch(idx.tolist())
    manifest = RunManifest(
        run_id=run_id, name=run_id, model=model, model_source=model, architecture="synthetic",
        weights_sha256="0" * 64, n_layers=n_layers, d_model=d_model, backend="hf",
        weight_processing="none", hooks=tuple(hooks), layers=tuple(layers),
        positions=tuple(positions), dtype=dtype, dataset_name=dataset_name,
        dataset_sha256=dataset_sha256 or dataset_sha(rows), n_samples=n,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    writer.commit(manifest)
    return run_id


def _add_site(writer, rng, hook, position, layer, li, idx, offset, lengths) -> None:
    scale = 1.0 + 0.5 * li  # activation scale grows with depth, as in real models
    if position == "all":
        counts = lengths[idx]
        noise = rng.normal(size=(int(counts.sum()), writer.d_model)).astype(np.float32)
        vectors = scale * (noise + np.repeat(offset, counts, axis=0))
        token_idx = np.concatenate([np.arange(c) for c in counts])
        writer.add(hook, position, layer, np.repeat(idx, counts), token_idx, vectors)
        return
    noise = rng.normal(size=(len(idx), writer.d_model)).astype(np.float32)
    vectors = (scale * (noise + offset)).astype(np.float32)
    writer.add(hook, position, layer, idx, np.full(len(idx), -1), vectors)
