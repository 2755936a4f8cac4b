"""Steering: add a vector set to the residual stream while the model generates.

    with added_to_residual(model, "resid_post", {12: tensor[B, d], ...}):
        model.generate(...)            # every forward pass gets the additions

`added_to_residual` registers one hook per layer on the decoder blocks found through
`extraction.architectures` (keyed by architecture, so any decoder transformers loads works, both
embedded models included) and removes them in `finally`, also when generation raises. A
`resid_post` vector of layer L is added to block L's output, a `resid_pre` one to its input: the
site it was read from. The addition goes to every position, prompt and answer alike (as repeng
and llama.cpp do).

`steer` answers one prompt three ways in one batched `generate` call: the baseline (nothing
added), steered (the vector set at the chosen layers, `strength * typical_norm[L] * v[L]`) and
a control (a random unit direction per layer, seeded, with the same norm). The strength is in
units of each layer's typical residual norm (stored with the set), so one value means the same
at every layer: 1.0 adds a vector as long as a typical state of that layer. Greedy decoding, so
the three answers differ only by what was added.

Prompt formatting (the chat template when the model has one) is `prompt_ids`, the small piece of
generation this needs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from analysis import random_unit_vectors
from extraction.architectures import architecture_for, decoder_blocks
from settings.run import describe_layers, resolve_layers
from settings.vectors import SteerSettings
from store.vectorsets import VectorSet

VARIANTS = ("baseline", "steered", "control")


def _add(hidden: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, d] + vectors ([B, d] or [d]) at every position."""
    rows = vectors.reshape(-1, 1, vectors.shape[-1]).to(hidden.device, hidden.dtype)
    return hidden + rows


def _post_hook(vectors: torch.Tensor) -> Callable:
    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (_add(output[0], vectors), *output[1:])
        return _add(output, vectors)

    return hook


def _pre_hook(vectors: torch.Tensor) -> Callable:
    def hook(_module, args, kwargs):
        if args:
            return (_add(args[0], vectors), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": _add(kwargs["hidden_states"], vectors)}

    return hook


@contextlib.contextmanager
def added_to_residual(
    model: torch.nn.Module, hook: str, additions: Mapping[int, torch.Tensor]
) -> Iterator[None]:
    """Add `additions[layer]` ([B, d] per batch row, or [d]) at `hook` of each layer while the
    block runs; every hook is removed on the way out, whatever happened inside."""
    if hook not in ("resid_post", "resid_pre"):
        raise ValueError(f"cannot steer at {hook!r}; use resid_post or resid_pre")
    blocks = decoder_blocks(model, architecture_for(model))
    bad = [layer for layer in additions if not 0 <= layer < len(blocks)]
    if bad:
        raise ValueError(f"layer {bad[0]} out of range 0..{len(blocks) - 1}")
    handles = []
    try:
        for layer, vectors in additions.items():
            block = blocks[layer]
            if hook == "resid_post":
                handles.append(block.register_forward_hook(_post_hook(vectors)))
            else:
                handles.append(
                    block.register_forward_pre_hook(_pre_hook(vectors), with_kwargs=True)
                )
        yield
    finally:
        for handle in handles:
            handle.remove()


def prompt_ids(tokenizer, text: str, chat_template: bool = True) -> list[int]:
    """Token ids of a prompt: a user turn of the model's chat template (with the generation
    prompt) when it has one and `chat_template`, else the plain text."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


# -- what to add -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SteeringPlan:
    """Per chosen layer, the steered and the control addition: [len(layers), d] each."""

    hook: str
    layers: tuple[int, ...]
    steered: np.ndarray
    control: np.ndarray

    def additions(self, rows: tuple[str, ...] = VARIANTS) -> dict[int, torch.Tensor]:
        """{layer: [len(rows), d]}: what each batch row gets (baseline: zeros)."""
        zeros = np.zeros_like(self.steered)
        by_variant = {"baseline": zeros, "steered": self.steered, "control": self.control}
        stacked = np.stack([by_variant[row] for row in rows], axis=1)  # [L, rows, d]
        return {
            layer: torch.from_numpy(stacked[i].astype(np.float32))
            for i, layer in enumerate(self.layers)
        }


def plan_for(vector_set: VectorSet, layers: str, strength: float, seed: int) -> SteeringPlan:
    """The additions of `strength` at `layers` (a spec over the model's layers; every chosen
    layer must be one of the set's), with a same-norm random control."""
    manifest = vector_set.manifest
    chosen = resolve_layers(layers, manifest.n_layers)
    if layers == "all":
        chosen = vector_set.layers
    missing = [layer for layer in chosen if layer not in vector_set.layers]
    if missing:
        raise ValueError(
            f"vector set {manifest.set_id!r} has no layers {describe_layers(missing)}; it has "
            f"{describe_layers(vector_set.layers)}"
        )
    index = [vector_set.layers.index(layer) for layer in chosen]
    scale = strength * vector_set.typical_norm[index][:, None]  # [L, 1]
    steered = vector_set.vectors[index].astype(np.float64) * scale
    random = random_unit_vectors(len(index), manifest.d_model, seed) * scale
    return SteeringPlan(manifest.hook, tuple(chosen), steered, random)


# -- generation --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SteerResult:
    """The three answers to one prompt, and what made them."""

    prompt: str
    answers: dict[str, str]  # variant -> decoded answer
    layers: tuple[int, ...]
    strength: float
    new_tokens: int
    seconds: float


def check_model(vector_set: VectorSet, model: torch.nn.Module) -> None:
    """The set must come from this model's shape (its layers and width)."""
    manifest = vector_set.manifest
    blocks = decoder_blocks(model, architecture_for(model))
    width = model.config.get_text_config().hidden_size
    if (len(blocks), width) != (manifest.n_layers, manifest.d_model):
        raise ValueError(
            f"vector set {manifest.set_id!r} is for {manifest.n_layers} layers of width "
            f"{manifest.d_model}; this model has {len(blocks)} of width {width}"
        )


def generate_rows(
    model, tokenizer, ids: list[int], rows: int, max_new_tokens: int
) -> list[list[int]]:
    """Greedy answers of `rows` copies of one prompt (the rows differ by their hooks)."""
    input_ids = torch.tensor([ids] * rows, device=model.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    answers = []
    for row in out[:, len(ids) :].tolist():
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        answers.append(row)
    return answers


def steer(model, tokenizer, vector_set: VectorSet, request: SteerSettings) -> SteerResult:
    """Baseline, steered and control answers to `request.prompt`, in one batched generate."""
    check_model(vector_set, model)
    plan = plan_for(vector_set, request.layers, request.strength, request.seed)
    ids = prompt_ids(tokenizer, request.prompt, request.chat_template)
    started = time.perf_counter()
    with added_to_residual(model, plan.hook, plan.additions()):
        rows = generate_rows(model, tokenizer, ids, len(VARIANTS), request.max_new_tokens)
    answers = {
        variant: tokenizer.decode(row, skip_special_tokens=True)
        for variant, row in zip(VARIANTS, rows, strict=True)
    }
    return SteerResult(
        prompt=request.prompt,
        answers=answers,
        layers=plan.layers,
        strength=request.strength,
        new_tokens=request.max_new_tokens,
        seconds=round(time.perf_counter() - started, 3),
    )


def next_token_logprobs(
    model, tokenizer, prompts: list[str], plan: SteeringPlan, variant: str, chat_template=True
) -> np.ndarray:
    """log p(next token) after each prompt with `variant`'s additions: [n_prompts, vocab].

    One forward pass, right-padded: with causal attention the pads after a prompt's last token
    cannot change its logits, so each row is read at its own last real position."""
    rows = [prompt_ids(tokenizer, text, chat_template) for text in prompts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], device=model.device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
    last = torch.tensor([len(r) - 1 for r in rows], device=model.device)
    with added_to_residual(model, plan.hook, plan.additions((variant,))), torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits
        picked = logits[torch.arange(len(rows), device=model.device), last].float()
        return torch.log_softmax(picked, dim=-1).cpu().numpy()


def load_for(manifest, device: str = "auto"):
    """Load the model a vector set was made from (extraction.loading.Loaded), after checking
    that its weights are the ones the set records."""
    from extraction.loading import load
    from extraction.models import resolve

    resolved = resolve(manifest.model)
    if resolved.weights_sha256 != manifest.weights_sha256:
        raise ValueError(
            f"vector set {manifest.set_id!r} was made from other weights of {manifest.model!r} "
            f"(sha256 {manifest.weights_sha256[:12]}, found {resolved.weights_sha256[:12]})"
        )
    return load(resolved, "hf", device)
