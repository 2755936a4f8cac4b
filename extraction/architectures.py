"""Where the hook sites live in each decoder architecture, keyed by `config.model_type`.

A site is named the TransformerLens way (`resid_pre`, `resid_post`, `mlp_out`, `attn_out`) and
means the same thing in every architecture: `mlp_out`/`attn_out` are what a block adds to the
residual stream. For Gemma 2/3 that is the output of the post-MLP/post-attention norm, not of the
MLP itself, which is why this is a registry and not one rule.

Unknown architectures fall back to a structural guess (a ModuleList as long as the model has
layers, whose blocks have `mlp` and `self_attn`/`attn` children); if that fails the error names
the model type, so adding an entry here is the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Architecture:
    layers: str  # dotted path from the base model (model.base_model) to the block ModuleList
    mlp_out: str  # dotted path inside a block to the module whose output joins the residual
    attn_out: str
    final_norm: str = "norm"  # dotted path from the base model to the norm before the LM head


_LLAMA_LIKE = Architecture("layers", "mlp", "self_attn")
_GEMMA_POSTNORM = Architecture("layers", "post_feedforward_layernorm", "post_attention_layernorm")

ARCHITECTURES: dict[str, Architecture] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "smollm3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _GEMMA_POSTNORM,
    "gemma3_text": _GEMMA_POSTNORM,
    "gpt2": Architecture("h", "mlp", "attn", "ln_f"),
    "gpt_neox": Architecture("layers", "mlp", "attention", "final_layer_norm"),
}


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_norm", "norm_f")


def _guess(base: nn.Module, n_layers: int) -> Architecture | None:
    top = dict(base.named_children())
    final_norm = next((n for n in _FINAL_NORM_NAMES if n in top), "norm")
    for name, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            children = dict(module[0].named_children())
            attn = next((a for a in ("self_attn", "attn", "attention") if a in children), None)
            if "mlp" in children and attn:
                return Architecture(name, "mlp", attn, final_norm)
    return None


def architecture_for(model: nn.Module) -> Architecture:
    model_type = getattr(model.config, "model_type", "?")
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    guessed = _guess(model.base_model, model.config.num_hidden_layers)
    if guessed is None:
        raise ValueError(
            f"architecture {model_type!r} is not in extraction.architectures.ARCHITECTURES and "
            "its decoder blocks could not be found; add an entry there"
        )
    return guessed


def decoder_blocks(model: nn.Module, arch: Architecture) -> nn.ModuleList:
    return _get(model.base_model, arch.layers)


def site_module(block: nn.Module, arch: Architecture, hook: str) -> nn.Module:
    return _get(block, arch.mlp_out if hook == "mlp_out" else arch.attn_out)


def final_norm(model: nn.Module, arch: Architecture) -> nn.Module:
    """The norm the last residual state goes through before the unembedding."""
    try:
        return _get(model.base_model, arch.final_norm)
    except AttributeError:
        raise ValueError(
            f"architecture {getattr(model.config, 'model_type', '?')!r} has no final norm at "
            f"{arch.final_norm!r}; set final_norm in extraction.architectures.ARCHITECTURES"
        ) from None
