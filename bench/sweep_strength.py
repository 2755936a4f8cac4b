"""Steering strength sweep on the real SmolLM2: which strength first changes the answer clearly
and still keeps it fluent (what the Steering page's default strength is set from).

    .venv/bin/python bench/sweep_strength.py                 # 4 prompts, 32 new tokens
    .venv/bin/python bench/sweep_strength.py --tokens 24 --prompts 2

The vector set is the one a fresh store offers: `pca_center` on the built-in style pairs (all
60, `a` plain, `b` slangy), last token, resid_post, fitted at the layers the Steering page
steers by default (6-13 of 30: per-layer PCA, so these layers' vectors are the same as in an
all-layer set). Each strength of the page's slider (0 = the baseline, then 0.05 .. 1) answers
each prompt in one batched greedy generation (one batch row per strength, the additions of
`extraction.steering`). Per strength, over the prompts:

  changed   share of answers that differ from the baseline's within their first 8 tokens
  style     how slangy the answer reads *to the unsteered model*: its last-token resid_post at
            layers 6-13 projected on the style vector, placed on the scale of the pairs
            (0 = the mean of the plain sides, 1 = the mean of the slangy sides), mean of layers
  nll       mean negative log-likelihood per answer token under the unsteered model, given the
            prompt (fluency: the greedy baseline is the floor; gibberish is several nats more)
  distinct  distinct token bigrams / bigrams in the answer (repetition loops fall towards 0)

Rule printed at the end: the smallest strength whose answers all change and that stays fluent
(nll at most 1 nat per token above the baseline's, distinct at least 0.6). The style score is
printed but not in the rule: on chat answers it lies outside the pairs' 0..1 scale even for
the baseline (2.05 measured) and does not grow steadily with strength, so it cannot be a
threshold. The answers are printed too: the numbers are a guide, reading them is the check.
Figures are relative to the baseline measured in the same run.

Measured 2026-12-02 (2-core CPU): changed 1.00 from 0.05 on; nll +0.40 at 0.05, +1.48 at 0.1,
+2.14 at 0.2; distinct 0.96 up to 0.1, 0.49 at 0.2. Rule: 0.05, the page's default.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "smollm2-135m"
LAYERS = "6-13"  # the Steering page's default layers for a 30-layer model (ui.vectors)
STRENGTHS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)  # the positive steps of the page's slider
PROMPTS = (
    "Tell me about your weekend.",  # the page's default prompt
    "How was your day at work?",
    "What do you think of the new cafe downtown?",
    "Describe your favourite food.",
)
CHANGED_WITHIN = 8
NLL_RISE, MIN_DISTINCT = 1.0, 0.6


def last_states(model, tokenizer, texts: list[str], layers: list[int]) -> np.ndarray:
    """Last-token resid_post of each text at `layers`, plain text: [n, len(layers), d]."""
    import torch

    out = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            hidden = model(ids, output_hidden_states=True).hidden_states
            out.append(np.stack([hidden[layer + 1][0, -1].float().numpy() for layer in layers]))
    return np.stack(out)


def answer_nll(model, prompt: list[int], answer: list[int]) -> float:
    """Mean -log p(answer token | prompt, earlier answer tokens) under the unsteered model."""
    import torch

    if not answer:
        return float("nan")
    ids = torch.tensor([prompt + answer])
    with torch.inference_mode():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(-logp[torch.arange(len(answer)), torch.tensor(answer)].mean())


def distinct_bigrams(tokens: list[int]) -> float:
    pairs = list(zip(tokens, tokens[1:], strict=False))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    args = parser.parse_args()
    import torch

    from extraction.control import compute_vector_set
    from extraction.loading import load
    from extraction.models import resolve
    from extraction.runner import execute
    from extraction.steering import added_to_residual, generate_rows, plan_for, prompt_ids
    from settings.run import RunSettings
    from settings.vectors import VectorSettings
    from store import open_store

    loaded = load(resolve(MODEL), "hf", "cpu")
    model, tokenizer = loaded.hf_model, loaded.tokenizer
    rows = [json.loads(line) for line in (ROOT / "data" / "style_pairs.jsonl").open()]
    with tempfile.TemporaryDirectory(prefix="actx-sweep-") as work:
        settings = RunSettings(model=MODEL, dataset="style_pairs", hooks=("resid_post",),
                               positions=("last",), layers=LAYERS)  # fmt: skip
        run = execute(settings, Path(work), progress=False, loaded=loaded, readout=False)
        set_id, _ = compute_vector_set(Path(work), VectorSettings(run=run.run_id))
        vector_set = open_store(Path(work)).vector_set(set_id)
    layers = list(vector_set.layers)
    unit = vector_set.vectors.astype(np.float64)  # [L, d], unit rows

    def projections(texts: list[str]) -> np.ndarray:  # [n, L]
        return np.einsum("nld,ld->nl", last_states(model, tokenizer, texts, layers), unit)

    plain = projections([r["text"] for r in rows if r["side"] == "a"]).mean(0)
    slangy = projections([r["text"] for r in rows if r["side"] == "b"]).mean(0)

    def style(texts: list[str]) -> np.ndarray:
        return ((projections(texts) - plain) / (slangy - plain)).mean(1)

    plans = [plan_for(vector_set, LAYERS, s, seed=0) for s in STRENGTHS]
    additions = {  # one batch row per strength: {layer: [len(STRENGTHS), d]}
        layer: torch.from_numpy(np.stack([p.steered[i] for p in plans]).astype(np.float32))
        for i, layer in enumerate(plans[0].layers)
    }
    figures = {s: {"changed": [], "style": [], "nll": [], "distinct": []} for s in STRENGTHS}
    answers: dict[float, list[str]] = {s: [] for s in STRENGTHS}
    for prompt in PROMPTS[: args.prompts]:
        ids = prompt_ids(tokenizer, prompt)
        with added_to_residual(model, vector_set.manifest.hook, additions):
            outs = generate_rows(model, tokenizer, ids, len(STRENGTHS), args.tokens)
        texts = [tokenizer.decode(o, skip_special_tokens=True) for o in outs]
        scores = style([t or " " for t in texts])
        for s, out, text, score in zip(STRENGTHS, outs, texts, scores, strict=True):
            f = figures[s]
            f["changed"].append(out[:CHANGED_WITHIN] != outs[0][:CHANGED_WITHIN])
            f["style"].append(score)
            f["nll"].append(answer_nll(model, ids, out))
            f["distinct"].append(distinct_bigrams(out))
            answers[s].append(text)

    base = {k: float(np.nanmean(v)) for k, v in figures[0.0].items()}
    print(f"{MODEL}, style set {set_id} (pca_center, {vector_set.manifest.n_pairs} pairs), "
          f"layers {LAYERS}, {args.prompts} prompts, {args.tokens} new tokens, greedy")  # fmt: skip
    print(f"{'strength':>8} {'changed':>8} {'style':>6} {'Δstyle':>7} {'nll':>6} {'Δnll':>6} "
          f"{'distinct':>8}")  # fmt: skip
    chosen = None
    for s in STRENGTHS:
        m = {k: float(np.nanmean(v)) for k, v in figures[s].items()}
        rise, worse = m["style"] - base["style"], m["nll"] - base["nll"]
        print(f"{s:8g} {m['changed']:8.2f} {m['style']:6.2f} {rise:+7.2f} {m['nll']:6.2f} "
              f"{worse:+6.2f} {m['distinct']:8.2f}")  # fmt: skip
        clear = s > 0 and m["changed"] == 1.0
        fluent = worse <= NLL_RISE and m["distinct"] >= MIN_DISTINCT
        if chosen is None and clear and fluent:
            chosen = s
    print(f"\nfirst strength that changes every answer and stays fluent (nll +<= {NLL_RISE}, "
          f"distinct >= {MIN_DISTINCT}): {chosen}")  # fmt: skip
    for s in STRENGTHS:
        print(f"\n--- strength {s:g}")
        for prompt, text in zip(PROMPTS, answers[s], strict=False):
            print(f"  [{prompt}] {' '.join(text.split())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
