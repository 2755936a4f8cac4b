"""Capture activations during a batched forward pass, pooled inside the hooks.

Two backends share one interface (`Backend.capture(batch) -> Captured`):

- `HFBackend` (default): plain PyTorch forward hooks on a Hugging Face model, any decoder
  architecture in `extraction.architectures`. It runs only the decoder stack (no LM head) and
  stops the pass after the deepest requested block, so capture costs close to nothing.
- `TLBackend`: a TransformerLens `HookedTransformer`, hooks `blocks.L.hook_<site>`. Loaded without
  weight processing by default, so its numbers equal the HF backend's; with processing (fold_ln,
  centring) the residual basis differs on LayerNorm models (RMSNorm ones are only folded, not
  centred, and keep HF's basis), and the manifest records which (extraction.loading).

Pooling happens in the hook, so a [batch, tokens, d_model] tensor per site never outlives its
layer: `last` = last real token, `mean` = mean over real tokens leaving out the first (the
attention sink dominates a plain mean, see DESIGN.md) unless `include_first_token`, `all` = every
real token. Padding is on the right and masked, which keeps positions (and RoPE) of real tokens
identical to an unpadded pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from extraction.architectures import architecture_for, decoder_blocks, site_module

HOOK_ORDER = ("resid_pre", "attn_out", "mlp_out", "resid_post")  # execution order in a block


@dataclass(frozen=True)
class CaptureSpec:
    hooks: tuple[str, ...]
    layers: tuple[int, ...]
    positions: tuple[str, ...]
    include_first_token: bool = False


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids. input_ids, attention_mask: [B, T]; sample_idx: B dataset indices."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    sample_idx: tuple[int, ...]

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(dim=1)


def make_batch(token_lists: Sequence[Sequence[int]], sample_idx: Sequence[int], pad_id: int):
    longest = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), longest), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return Batch(ids, mask, tuple(sample_idx))


# (hook, position, layer) -> [B, d] for pooled positions, [B, T, d] (padded) for "all"
Captured = dict[tuple[str, str, int], torch.Tensor]


class Pooler:
    """Pools one batch's hidden states [B, T, d] into the requested positions."""

    def __init__(
        self, attention_mask: torch.Tensor, positions: tuple[str, ...], include_first: bool
    ):
        mask = attention_mask.float()
        self.positions = positions
        self.last_index = attention_mask.sum(dim=1) - 1
        weights = mask.clone()
        if not include_first:
            # One-token samples have nothing but the first token: keep it rather than divide by 0.
            weights[:, 0] = torch.where(attention_mask.sum(dim=1) > 1, 0.0, 1.0)
        self.mean_weights = weights / weights.sum(dim=1, keepdim=True)

    def pool(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "last" in self.positions:
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            out["last"] = hidden[rows, self.last_index.to(hidden.device)]
        if "mean" in self.positions:
            weights = self.mean_weights.to(hidden.device, hidden.dtype)
            out["mean"] = torch.einsum("btd,bt->bd", hidden, weights)
        if "all" in self.positions:
            out["all"] = hidden
        return out


class _StopForward(Exception):
    """Raised after the deepest requested block: nothing later is needed."""


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


class Backend:
    """Common part: sink that pools each site's output as soon as it is produced."""

    name = "?"
    n_layers: int
    d_model: int
    architecture: str
    weight_processing: str

    def __init__(self) -> None:
        self._pooler: Pooler | None = None
        self._captured: Captured = {}

    def _record(self, hook: str, layer: int, hidden: torch.Tensor) -> None:
        assert self._pooler is not None
        for position, pooled in self._pooler.pool(hidden.detach()).items():
            self._captured[(hook, position, layer)] = pooled

    def validate(self, spec: CaptureSpec) -> None:
        bad = [layer for layer in spec.layers if not 0 <= layer < self.n_layers]
        if bad:
            raise ValueError(f"layer {bad[0]} out of range 0..{self.n_layers - 1}")

    def capture(self, batch: Batch, spec: CaptureSpec) -> Captured:
        self._pooler = Pooler(
            batch.attention_mask.to(self.device), spec.positions, spec.include_first_token
        )
        self._captured = {}
        try:
            with torch.inference_mode():
                self._forward(batch, spec)
        except _StopForward:
            pass
        finally:
            self._pooler = None
            self._cleanup()
        captured, self._captured = self._captured, {}
        return captured

    def _forward(self, batch: Batch, spec: CaptureSpec) -> None:
        raise NotImplementedError

    def _cleanup(self) -> None:
        """Remove per-batch hooks so the model is left as it was found."""

    def bare_forward(self, batch: Batch) -> None:
        """The same forward pass with no capture: the floor the benchmark compares against."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        raise NotImplementedError


class HFBackend(Backend):
    """Forward hooks on a transformers model. Hooks are registered per spec and removed after."""

    name = "hf"
    weight_processing = "none (raw Hugging Face weights)"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        self.arch = architecture_for(model)
        self.blocks = decoder_blocks(model, self.arch)
        self.n_layers = len(self.blocks)
        self.d_model = model.config.hidden_size
        self.architecture = model.config.model_type
        self._handles: list = []

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _install(self, spec: CaptureSpec) -> None:
        # Registering ~100 hooks per batch costs microseconds; keeping them installed between
        # batches would leave a model that misbehaves when used for anything else.
        for layer in spec.layers:
            block = self.blocks[layer]
            if "resid_pre" in spec.hooks:
                self._handles.append(
                    block.register_forward_pre_hook(self._pre_hook(layer), with_kwargs=True)
                )
            for hook in ("attn_out", "mlp_out"):
                if hook in spec.hooks:
                    module = site_module(block, self.arch, hook)
                    self._handles.append(module.register_forward_hook(self._post_hook(hook, layer)))
            if "resid_post" in spec.hooks:
                self._handles.append(
                    block.register_forward_hook(self._post_hook("resid_post", layer))
                )
        self._handles.append(self.blocks[max(spec.layers)].register_forward_hook(self._stop))

    def _cleanup(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _pre_hook(self, layer: int) -> Callable:
        def hook(_module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            self._record("resid_pre", layer, hidden)

        return hook

    def _post_hook(self, name: str, layer: int) -> Callable:
        def hook(_module, _inputs, output):
            self._record(name, layer, _first_tensor(output))

        return hook

    @staticmethod
    def _stop(_module, _inputs, _output):
        raise _StopForward

    def _forward(self, batch: Batch, spec: CaptureSpec) -> None:
        self._install(spec)
        device = self.device
        # The base model skips the LM head: logits are not needed and cost a vocab-sized matmul.
        self.model.base_model(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            use_cache=False,
        )

    def bare_forward(self, batch: Batch) -> None:
        device = self.device
        with torch.inference_mode():
            self.model.base_model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                use_cache=False,
            )


TL_HOOK_NAMES = {
    "resid_pre": "hook_resid_pre",
    "resid_post": "hook_resid_post",
    "mlp_out": "hook_mlp_out",
    "attn_out": "hook_attn_out",
}


class TLBackend(Backend):
    """TransformerLens HookedTransformer, hooks `blocks.L.hook_<site>`."""

    name = "transformer_lens"

    def __init__(self, model, weight_processing: str) -> None:
        super().__init__()
        self.model = model.eval()
        self.n_layers = model.cfg.n_layers
        self.d_model = model.cfg.d_model
        self.architecture = str(model.cfg.original_architecture)
        self.weight_processing = weight_processing

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, batch: Batch, spec: CaptureSpec) -> None:
        hooks = []
        for layer in spec.layers:
            for hook in spec.hooks:
                name = f"blocks.{layer}.{TL_HOOK_NAMES[hook]}"
                hooks.append((name, self._tl_hook(hook, layer)))
        device = self.device
        self.model.run_with_hooks(
            batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            fwd_hooks=hooks,
            stop_at_layer=max(spec.layers) + 1,
        )

    def _tl_hook(self, name: str, layer: int) -> Callable:
        def hook(tensor, hook):  # noqa: ARG001 - TransformerLens passes the HookPoint
            self._record(name, layer, tensor)

        return hook

    def bare_forward(self, batch: Batch) -> None:
        device = self.device
        with torch.inference_mode():
            self.model(
                batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                return_type=None,
            )
