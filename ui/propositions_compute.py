"""Cached results behind the Propositions page: A and B answers and their pooled states.

A generation run (`--generate N`) of a paired dataset (samples with a `pair_id` and sides a / b,
like the built-in `propositions`) holds, per sample, the model's answer and the states pooled
over its first N answer tokens (`answer_mean`). `proposition_profile` pairs the two sides and
computes, per layer, the cosine between the A and B states of each pair and its mean per
category (`analysis.pair_cosines`). A proposition dataset has tens of pairs, so the whole run is
read at once (`Store.layer_vectors`).

Cached functions take the rerun's `StoreView` first (see ui.context). Unsuitable selections
raise `ui.compute.Unsuitable` with a message for the page; store failures raise `StoreError`.
Answers are text from the model (or from a planted file): they are shown as text, never as
Markdown, and cut to `MAX_ANSWER_CHARS`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from analysis import pair_cosines
from settings.run import ANSWER_POSITION, ANSWER_TOKENS_POOLED, ANSWERING_MODELS
from store import StoreError
from ui.compute import Unsuitable, check_site
from ui.context import StoreView, public_text
from ui.links import has_answers
from ui.pairs_compute import ALL_CATEGORIES, pair_table

MAX_ANSWER_CHARS = 2_000
ANSWER_COLUMNS = ("answer", "answer_stopped")
POSITIONS = (ANSWER_POSITION, "last", "mean")  # offered in this order where a run has them


@dataclass(frozen=True)
class PropositionProfile:
    """One run at one (hook, position).

    per_layer: layer, category, cosine (mean over the category's pairs), n_pairs, n_layers; one
    row per layer and category, plus ALL_CATEGORIES. cosines: [L, p], pair order of `pairs`.
    pairs: pair_id, category, text_a, answer_a, stopped_a, text_b, answer_b, stopped_b, ...
    """

    layers: list[int]
    per_layer: pd.DataFrame
    cosines: np.ndarray
    pairs: pd.DataFrame


def answer_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs (summaries) this page can show, in their order (newest first)."""
    return runs[runs.apply(has_answers, axis=1)] if not runs.empty else runs


@st.cache_data(show_spinner=False, max_entries=64)
def generation_settings(view: StoreView, run_id: str) -> str:
    """How the run's answers were made and which states are pooled, in one line (from its
    manifest's `generation` record, which the store checked: short text and numbers; shown
    as plain text by the page)."""
    try:
        g = view.store.manifest(run_id).generation or {}
    except StoreError:
        return ""  # the page's own read of the run says what is wrong

    def get(key: str, missing: str = "?") -> str:
        value = g.get(key)
        return missing if value is None else str(value)

    return public_text(
        f"Answers: up to {get('max_new_tokens')} new tokens, {get('decoding')}, prompt format "
        f"{get('prompt_format')}. {ANSWER_POSITION} = mean of the first "
        f"{get('answer_tokens_pooled')} answer states, '{get('answer_states')}': "
        f"{get('answer_states_meaning', 'see the run provenance')}."
    )


def answers_command(store_root: str) -> str:
    """The CLI line that makes a run this page shows: the default runs' answering model (it has
    a chat template) on the built-in propositions."""
    parts = [
        "python", "-m", "extraction", "run", "--model", ANSWERING_MODELS[0],
        "--dataset", "propositions", "--generate", str(ANSWER_TOKENS_POOLED),
        "--store", str(store_root),
    ]  # fmt: skip
    return public_text(shlex.join(parts))


def _text(value: object) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    return text if len(text) <= MAX_ANSWER_CHARS else text[: MAX_ANSWER_CHARS - 1] + "…"


def answer_pairs(samples: pd.DataFrame) -> pd.DataFrame:
    """`pair_table` with each side's answer and whether it ended by itself (not cut short)."""
    missing = [c for c in ANSWER_COLUMNS if c not in samples.columns]
    if missing:
        raise Unsuitable(
            "This run has no answers (it was not made with --generate N). Pick a generation run."
        )
    pairs = pair_table(samples)
    by_index = samples.set_index("sample_idx")
    for side in ("a", "b"):
        rows = by_index.loc[pairs[f"sample_{side}"]]
        pairs[f"answer_{side}"] = [_text(v) for v in rows["answer"]]
        pairs[f"stopped_{side}"] = [v is True or v == 1 for v in rows["answer_stopped"]]
    return pairs


def side_rows(samples: pd.DataFrame, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `samples` (and of the vectors read with them) of each pair's sides a and b, in
    the order of `pairs` (`pair_table(samples)`)."""
    row_of = pd.Series(np.arange(len(samples)), index=samples["sample_idx"].to_numpy())
    return row_of[pairs["sample_a"]].to_numpy(), row_of[pairs["sample_b"]].to_numpy()


def _category_rows(layer: int, cosines: np.ndarray, categories: np.ndarray) -> list[dict]:
    groups = [(ALL_CATEGORIES, np.ones(len(cosines), bool))]
    groups += [(c, categories == c) for c in sorted(set(categories.tolist()))]
    return [
        {"layer": layer, "category": name, "cosine": float(cosines[mask].mean()),
         "n_pairs": int(mask.sum())}
        for name, mask in groups
    ]  # fmt: skip


@st.cache_data(show_spinner="Comparing the A and B answers...", max_entries=32)
def proposition_profile(
    view: StoreView, run_id: str, hook: str, position: str
) -> PropositionProfile:
    store = view.store
    manifest = store.manifest(run_id)
    check_site(manifest, hook, position)
    X, samples, layers = store.layer_vectors(run_id, hook, position)
    pairs = answer_pairs(samples)
    ia, ib = side_rows(samples, pairs)
    categories = pairs["category"].to_numpy()
    cosines = np.stack([pair_cosines(X[i, ia], X[i, ib]) for i in range(len(layers))])
    rows = [
        r for i, layer in enumerate(layers) for r in _category_rows(layer, cosines[i], categories)
    ]
    per_layer = pd.DataFrame(rows).assign(n_layers=manifest.n_layers)
    return PropositionProfile(list(layers), per_layer, cosines, pairs)


def pairs_at_layer(profile: PropositionProfile, layer: int, categories: list[str]) -> pd.DataFrame:
    """The answers side by side with each pair's cosine at `layer`, in the chosen categories."""
    if layer not in profile.layers:
        raise Unsuitable(f"This run has no layer {layer}.")
    table = profile.pairs.assign(cosine=profile.cosines[profile.layers.index(layer)])
    table = table[table["category"].isin(categories)]
    return table[["pair_id", "category", "cosine", "text_a", "answer_a", "text_b", "answer_b",
                  "stopped_a", "stopped_b"]]  # fmt: skip
