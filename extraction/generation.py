"""Make a model answer: prompt formatting, and batched, left-padded generation.

The reusable pieces of every run that needs the model to talk (generation-pooled states now,
steered generation later). They know nothing of the store or of hooks: a caller that wants the
hidden states (`extraction.answer_states`) or wants to change them (steering) installs its own
hooks around `generate_batch` and removes them in `finally`.

    fmt = PromptFormat.for_tokenizer(tokenizer)          # chat template when it has one
    prompts = [fmt.ids(tokenizer, text) for text in texts]
    answers = generate_batch(model, tokenizer, prompts, max_new_tokens=32,
                             sampling=Sampling(temperature=0.7, seed=1), keys=sample_indices)
    answers.texts[i], answers.token_ids[i], answers.stopped[i]

Interface:

* `PromptFormat.for_tokenizer(tokenizer, chat_template=None)`: `None` uses the tokenizer's chat
  template when it has one and plain text otherwise, `True` insists on it (ValueError without
  one), `False` is plain text. `.ids(tokenizer, text)` -> token ids of one user turn plus the
  assistant header (or of the plain text); `.name` is "chat template" or "plain text", for
  provenance.
* `Sampling(temperature=0.0, seed=0)`: 0 is greedy. Above 0, each row samples from
  softmax(logits / temperature) by the Gumbel-max trick with its own noise stream, seeded from
  `(seed, key)`: a prompt's answer depends on its key, never on which batch or position it ran
  in, so batched runs equal one-at-a-time runs, resumed runs equal whole ones, and a steered and
  a baseline generation with the same keys draw the same noise.
* `generate_batch(model, tokenizer, prompts, *, max_new_tokens, sampling, keys, stop_ids)`:
  prompts are token-id lists of any lengths; they are padded on the left with an attention mask
  (transformers derives the position ids from it), so every row computes what it would alone.
  Returns `Answers`: per row the answer's token ids up to and including the first stop token
  (`stopped` True) or `max_new_tokens` of them (`stopped` False), and the decoded text without
  special tokens. One `model.forward` call per answer token, the first over the whole (padded)
  prompt: hooks that count calls see step 0 (the prompt) and then one call per fed-back token.
* `stop_token_ids(model, tokenizer)`, `pad_token_id(tokenizer, stop_ids)`, `left_pad(...)`.

Caveats: the model's own generation defaults (sampling, penalties, chunked prefill) are
ignored, so a run is reproducible from its recorded settings. Greedy ties between two tokens
whose logits differ by float rounding can break differently in a batch than alone (never seen
on the embedded models; a test compares them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

CHAT_TEMPLATE = "chat template"
PLAIN_TEXT = "plain text"


# -- prompts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptFormat:
    """How a text becomes a prompt: one user turn of the chat template, or the plain text."""

    chat_template: bool

    @classmethod
    def for_tokenizer(cls, tokenizer, chat_template: bool | None = None) -> PromptFormat:
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat_template and not has_template:
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ValueError(f"model {name!r} has no chat template")
        return cls(has_template if chat_template is None else bool(chat_template))

    @property
    def name(self) -> str:
        return CHAT_TEMPLATE if self.chat_template else PLAIN_TEXT

    def ids(self, tokenizer, text: str) -> list[int]:
        if not self.chat_template:
            return [int(t) for t in tokenizer(text)["input_ids"]]
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        # transformers 5 returns a BatchEncoding (a Mapping), older versions a plain list.
        ids = encoded["input_ids"] if isinstance(encoded, Mapping) else encoded
        return [int(t) for t in ids]

    def template_text(self, tokenizer) -> str | dict | None:
        """The template itself, for provenance (None for plain text)."""
        return getattr(tokenizer, "chat_template", None) if self.chat_template else None


# -- tokens that end an answer, and padding ------------------------------------------------------
def stop_token_ids(model, tokenizer) -> tuple[int, ...]:
    """The model's end-of-turn ids (its generation config's, which may be several) and the
    tokenizer's end-of-sequence id."""
    found: list[int] = []
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, getattr(tokenizer, "eos_token_id", None)):
        values = value if isinstance(value, list | tuple) else [value]
        found.extend(int(v) for v in values if v is not None and int(v) not in found)
    return tuple(found)


def pad_token_id(tokenizer, stop_ids: Sequence[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(stop_ids[0]) if stop_ids else 0


def left_pad(
    token_lists: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask [B, T]: each row's tokens at the right end, padding before."""
    if not token_lists or any(len(t) == 0 for t in token_lists):
        raise ValueError("every prompt needs at least one token")
    longest = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), longest), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        ids[row, longest - len(tokens) :] = torch.tensor(list(tokens), dtype=torch.long)
        mask[row, longest - len(tokens) :] = 1
    return ids, mask


# -- sampling ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """temperature 0: greedy. Above 0: sampled with per-row noise seeded from (seed, key)."""

    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if type(self.temperature) not in (int, float) or not 0 <= self.temperature <= 100:
            raise ValueError(f"temperature {self.temperature!r:.40} must be a number in 0..100")
        if type(self.seed) is not int or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed {self.seed!r:.40} must be a whole number >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def describe(self) -> str:
        if self.greedy:
            return "greedy"
        return (
            f"sampled at temperature {self.temperature:g} (Gumbel-max, noise seeded per sample "
            f"from seed {self.seed} and the sample index)"
        )


def row_seed(seed: int, key: int) -> int:
    digest = hashlib.sha256(f"actx-sampling:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _GumbelNoise:
    """A logits processor: scores / T + Gumbel noise, so greedy picking samples softmax(l / T).

    Each row draws from its own generator, one vector per step, so its draws do not depend on
    the other rows of the batch.
    """

    def __init__(self, sampling: Sampling, keys: Sequence[int]) -> None:
        self.temperature = float(sampling.temperature)
        self.generators = [
            torch.Generator().manual_seed(row_seed(sampling.seed, int(key))) for key in keys
        ]

    def __call__(self, _input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators])
        uniform = uniform.clamp_(torch.finfo(torch.float32).tiny, 1.0 - 1e-7).to(scores.device)
        gumbel = -torch.log(-torch.log(uniform))
        return scores.float() / self.temperature + gumbel


# -- generation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answers:
    """One batch's answers, row by row in prompt order."""

    token_ids: tuple[tuple[int, ...], ...]  # up to and including the first stop token
    texts: tuple[str, ...]  # decoded, special tokens left out
    stopped: tuple[bool, ...]  # ended on a stop token (else it ran to max_new_tokens)

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(len(t) for t in self.token_ids)


def _generation_config(max_new_tokens: int, stop_ids: Sequence[int], pad_id: int):
    from transformers import GenerationConfig

    # Every value set, so none comes from the model's own defaults (which `generate` merges in
    # for values left unset): sampling, penalties and chunked prefill would change the answers.
    return GenerationConfig(
        max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=False, num_beams=1,
        repetition_penalty=1.0, no_repeat_ngram_size=0,
        eos_token_id=list(stop_ids), pad_token_id=pad_id, use_cache=True,
        return_dict_in_generate=False, output_hidden_states=False,
    )  # fmt: skip


def cut_answer(generated: Sequence[int], stop_ids: Sequence[int]) -> tuple[tuple[int, ...], bool]:
    """(the answer up to and including its first stop token, whether it had one)."""
    stops = set(stop_ids)
    for index, token in enumerate(generated):
        if token in stops:
            return tuple(generated[: index + 1]), True
    return tuple(generated), False


def generate_batch(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    keys: Sequence[int] | None = None,
    stop_ids: Sequence[int] | None = None,
) -> Answers:
    """Answer every prompt (token ids) in one left-padded batch. See the module docstring."""
    if type(max_new_tokens) is not int or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens!r:.40} must be a whole number >= 1")
    keys = list(range(len(prompts))) if keys is None else list(keys)
    if len(keys) != len(prompts):
        raise ValueError(f"{len(keys)} keys for {len(prompts)} prompts")
    stops = tuple(stop_ids) if stop_ids is not None else stop_token_ids(model, tokenizer)
    pad_id = pad_token_id(tokenizer, stops)
    input_ids, attention_mask = left_pad(prompts, pad_id)
    device = next(model.parameters()).device
    processors = None
    if not sampling.greedy:
        from transformers import LogitsProcessorList

        processors = LogitsProcessorList([_GumbelNoise(sampling, keys)])
    with torch.inference_mode():
        sequences = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=_generation_config(max_new_tokens, stops, pad_id),
            logits_processor=processors,
        )
    generated = sequences[:, input_ids.shape[1] :].tolist()
    cut = [cut_answer(row, stops) for row in generated]
    texts = tuple(tokenizer.decode(list(ids), skip_special_tokens=True) for ids, _ in cut)
    return Answers(tuple(ids for ids, _ in cut), texts, tuple(stopped for _, stopped in cut))
