"""Generation-pooled states: hidden states averaged over the first N tokens of each answer.

While `extraction.generation.generate_batch` answers a batch, `AnswerStateRecorder` keeps, per
hook and layer, the state at the last position of each of the first few forward calls (call 0
is the whole prompt, call k feeds answer token k back), and pools the prompt's own positions
(`last`, `mean`) from call 0. Nothing else outlives its layer, so the cost is one [B, d] copy per
site and step. The hooks come off in `finally`, even when generation fails.

Which states `answer_mean` averages (`ANSWER_STATES` in settings.run):

* `producing` (default): the states that produce answer tokens 1..N, the way
  `generate(..., output_hidden_states=True)` returns them per step: the last prompt position
  (which produces answer token 1), then answer tokens 1..N-1.
* `own`: the answer tokens' own positions 1..N (token k's state is computed while producing
  token k+1, so this needs one more step).

An answer shorter than N (it ended on a stop token) pools what it has: `producing` the states up
to the one that produced the stop token, `own` the answer tokens before the stop token; an answer
that stops at once has no own tokens, and pools the state that produced its stop token (the last
prompt position) instead, like a one-token sample's `mean` keeps its only token. How many states
each sample pooled is stored with it (`answer_states_pooled`).

Padding is on the left (the prompts end together, so the answers start together); the pooled
numbers equal those of one prompt at a time, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from extraction.capture import HFBackend, Pooler
from settings.run import ANSWER_POSITION

DESCRIPTIONS = {
    "producing": (
        "the states that produce answer tokens 1..N, as generate(output_hidden_states=True) "
        "returns them per step: the last prompt position, then answer tokens 1..N-1"
    ),
    "own": "the answer tokens' own positions 1..N",
}


def steps_needed(n: int, convention: str) -> int:
    """Forward calls whose states `answer_mean` may use (call 0 is the prompt)."""
    return n + 1 if convention == "own" else n


def answer_weights(lengths: Sequence[int], n: int, convention: str) -> torch.Tensor:
    """Which recorded step each row pools: [steps_needed, B] of 0/1.

    lengths: answer tokens per row, its stop token included (>= 1). Rows with nothing to pool
    (an `own` answer that stopped at once) pool step 0.
    """
    if convention not in DESCRIPTIONS:
        raise ValueError(f"unknown answer states {convention!r}; choose producing or own")
    steps = torch.arange(steps_needed(n, convention)).unsqueeze(1)  # [S, 1]
    length = torch.as_tensor(list(lengths), dtype=torch.long).unsqueeze(0)  # [1, B]
    if convention == "producing":
        weights = steps < torch.clamp(length, max=n)
    else:
        weights = (steps >= 1) & (steps <= torch.clamp(length - 1, max=n))
    weights = weights.float()
    empty = weights.sum(dim=0) == 0
    weights[0, empty] = 1.0
    return weights


def left_padded_mask(lengths: Sequence[int]) -> torch.Tensor:
    """The attention mask [B, T] that `generation.left_pad` builds for prompts of these lengths."""
    longest = max(lengths)
    index = torch.arange(longest).unsqueeze(0)
    return (index >= longest - torch.as_tensor(list(lengths)).unsqueeze(1)).long()


class AnswerStateRecorder:
    """Records, during one `generate_batch`, what `answer_mean` and the prompt positions need.

    with AnswerStateRecorder(backend, hooks, layers, prompt_lengths, steps, ...) as rec:
        answers = generate_batch(backend.model, tokenizer, prompts, ...)
    captured = rec.pooled(answers.lengths, n, convention)
    """

    def __init__(
        self,
        backend: HFBackend,
        hooks: Sequence[str],
        layers: Sequence[int],
        prompt_lengths: Sequence[int],
        steps: int,
        prompt_positions: Sequence[str] = (),
        include_first_token: bool = False,
    ) -> None:
        self.backend = backend
        self.hooks, self.layers = tuple(hooks), tuple(layers)
        self.steps = steps
        self.prompt_positions = tuple(prompt_positions)
        mask = left_padded_mask(prompt_lengths).to(backend.device)
        self._pooler = Pooler(mask, self.prompt_positions, include_first_token)
        self._states: dict[tuple[str, int], list[torch.Tensor]] = {}
        self._prompt: dict[tuple[str, str, int], torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> AnswerStateRecorder:
        self._handles = self.backend.install_site_hooks(self.hooks, self.layers, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for handle in self._handles:
                handle.remove()
        finally:
            self._handles = []

    def _record(self, hook: str, layer: int, hidden: torch.Tensor) -> None:
        seen = self._states.setdefault((hook, layer), [])
        if len(seen) >= self.steps:
            return
        if not seen and self.prompt_positions:
            for position, pooled in self._pooler.pool(hidden.detach()).items():
                self._prompt[(hook, position, layer)] = pooled.to(torch.float32, copy=True)
        # A copy: a view would keep the whole [B, T, d] prompt tensor alive.
        seen.append(hidden.detach()[:, -1].to(torch.float32, copy=True))

    def pooled(
        self, lengths: Sequence[int], n: int, convention: str
    ) -> tuple[dict[tuple[str, str, int], torch.Tensor], torch.Tensor]:
        """({(hook, position, layer): [B, d]} with `answer_mean` and the prompt positions,
        states pooled per row [B])."""
        weights = answer_weights(lengths, n, convention)
        out = dict(self._prompt)
        for (hook, layer), states in self._states.items():
            recorded = torch.stack(states)  # [S', B, d]; S' < S when every row stopped early
            w = weights[: len(states)].to(recorded.device)
            out[(hook, ANSWER_POSITION, layer)] = torch.einsum("sbd,sb->bd", recorded, w) / w.sum(
                dim=0
            ).unsqueeze(1)
        return out, weights.sum(dim=0)
