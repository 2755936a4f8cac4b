"""The tokens each SAE feature's decoder direction promotes, saved with the SAE at training time.

A feature writes its decoder row into the residual stream; read through the model's final norm
and unembedding (the logit lens), that row raises some tokens' logits most. The app cannot run
torch, so the top tokens of every feature are computed here, once, and saved beside the weights
(`store.saes.promoted_table`); the Features page reads them.

The final norm is the base model's last norm child (`norm`, `ln_f`, `final_layer_norm`): for a
single direction an RMS norm is its weight times a positive scale, so the ranking is the one of
`W_U (g * d)`. Caveats: in a TransformerLens-processed basis (`fold_ln`, centred writing
weights) the direction is read through the Hugging Face norm and unembedding all the same,
which ranks the same tokens up to the centring; a model that cannot be loaded (a hub id
offline, or local weights that changed since the run) gets no readout, and the SAE is saved
without one.
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from extraction.models import ModelError, resolve
from store.manifest import RunManifest
from store.saes import MAX_PROMOTED, promoted_table

PROMOTED_PER_FEATURE = 20
CHUNK = 512  # features per matmul: [CHUNK, vocab] logits at a time


def _final_norm(base: nn.Module) -> nn.Module | None:
    norms = [m for name, m in base.named_children() if "norm" in name.lower() or name == "ln_f"]
    return norms[-1] if norms else None


@torch.no_grad()
def promoted_tokens(
    decoder: torch.Tensor, run: RunManifest, top: int = PROMOTED_PER_FEATURE
) -> pa.Table | None:
    """decoder [d_sae, d_model] -> the table of each feature's `top` promoted tokens, or None
    (with one line on stderr) when the run's model cannot be loaded as it was."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    top = min(top, MAX_PROMOTED)
    try:
        resolved = resolve(run.model)
        if resolved.weights_sha256 != run.weights_sha256:
            raise ModelError("its weights changed since the run")
        model = AutoModelForCausalLM.from_pretrained(resolved.source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(resolved.source)
    except (ModelError, OSError, ValueError) as exc:
        print(f"no promoted tokens saved: model {run.model!r}: {exc}", file=sys.stderr)
        return None
    norm = _final_norm(model.base_model)
    head = model.get_output_embeddings()
    vocab = min(head.weight.shape[0], len(tokenizer))  # padded vocabularies: no such tokens
    top = min(top, vocab)
    ids, logits = [], []
    directions = decoder.detach().to("cpu", torch.float32)
    for chunk in directions.split(CHUNK):
        unit = chunk / chunk.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out = head(norm(unit) if norm is not None else unit)[:, :vocab]
        best = out.topk(top, dim=1)
        ids.append(best.indices.numpy())
        logits.append(best.values.numpy())
    top_ids = np.concatenate(ids)
    texts = {int(i): tokenizer.decode([int(i)]) for i in np.unique(top_ids)}
    return promoted_table(top_ids, np.concatenate(logits), texts)
