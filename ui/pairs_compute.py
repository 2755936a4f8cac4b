"""Cached results behind the Pairs page: minimal-pair differences from the store, via `analysis`.

A minimal-pairs run has samples with a `pair_id` and sides "a" and "b"; differences are b - a.
`pair_profile` reads the run's summaries, never its vectors: the page subsample
(`Store.subsample` with `store.summaries.PAGE_SUBSAMPLE_SIZE`, chosen from the summaries' fixed
subsample) takes pairs whole, so every pair of a run of up to 1,024 samples, and a stratified
random set of pairs (by category, the same on every call) of a bigger one;
`PairProfile.n_pairs_total` says how many pairs the run has, so the page can say what it
shows. The per-token view needs a run captured with position `all`; `all_positions_run` finds
one of the same model and dataset, and `extraction_command` says how to make one when there is
none.

Cached functions take the rerun's `StoreView` first (see ui.context). Unsuitable selections
raise `ui.compute.Unsuitable` with a message for the page; store failures raise `StoreError`.
In read-only mode the command shown names the store and dataset by name, not by server path.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from analysis import (
    DimensionStats,
    PairSums,
    dimension_stats,
    pair_layer,
    rank_dimensions,
    sign_agreement_chance,
    token_difference_map,
)
from extraction.datasets import builtin_dir
from jobs import list_uploads
from store import RunManifest, Store
from store.summaries import PAGE_SUBSAMPLE_SIZE
from ui.compute import Unsuitable, check_site, run_dtype
from ui.context import StoreView, public_text
from ui.jobs import prefill_query, upload_label
from ui.shared import shared

ALL_CATEGORIES = "(all pairs)"
MAX_MEMO = 32  # derived values a profile keeps (`_memo`): a bound a hostile URL cannot grow
SELECTED_CATEGORIES = "(selected pairs)"  # the overall line when some categories are hidden


@dataclass(frozen=True)
class PairProfile:
    """Per-layer pair statistics of one run at one (hook, position).

    per_layer: layer, n_layers, category, mean_abs, relative, n_pairs (one row per layer and
    category, plus ALL_CATEGORIES). score / mean_abs / std: [L, d] from `dimension_consistency`.
    pairs: pair_id, category, text_a, text_b, sample_a, sample_b. n_layers: the model's depth.
    categories: the pair categories, sorted; sums: `PairSums` per layer and category [L, c, d],
    so any choice of categories gets its dimension statistics (`selected_stats`). Per pair [L, p]
    (columns of `pairs`): distance ||b - a||, scale (||a|| + ||b||) / 2, pair_abs mean |b - a|.
    """

    layers: list[int]
    n_layers: int
    per_layer: pd.DataFrame
    score: np.ndarray
    mean_abs: np.ndarray
    std: np.ndarray
    pairs: pd.DataFrame
    n_pairs_total: int = 0  # complete pairs in the run (`pairs` holds those of the subsample)
    categories: tuple[str, ...] = ()
    sums: PairSums | None = None
    distance: np.ndarray | None = None
    scale: np.ndarray | None = None
    pair_abs: np.ndarray | None = None
    # What the page derives from it, by function and arguments (`_memo`): a shared profile
    # (`pair_profile`) serves every visitor, and a view asks for the same statistics four times.
    memo: dict = field(default_factory=dict, compare=False, repr=False)


def _memo(profile: PairProfile, key: tuple, make):
    """`make()`, kept in `profile.memo` under `key` (at most MAX_MEMO values; read-only)."""
    value = profile.memo.get(key)
    if value is None:
        value = make()
        if len(profile.memo) >= MAX_MEMO:  # a few choices are common; bound the rest
            profile.memo.clear()
        profile.memo[key] = value
    return value


def pair_table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per complete pair (both sides present once), in order of first appearance."""
    sided = samples[samples["pair_id"].notna() & samples["side"].isin(["a", "b"])]
    sided = sided.drop_duplicates(["pair_id", "side"])
    wide = sided.pivot(index="pair_id", columns="side", values=["sample_idx", "text", "category"])
    wide = wide.dropna(subset=[("sample_idx", "a"), ("sample_idx", "b")])
    if wide.empty:
        raise Unsuitable(
            "This run has no minimal pairs (samples with a pair_id and sides a and b). "
            "Pick a run of a minimal-pairs dataset."
        )
    order = sided.drop_duplicates("pair_id")["pair_id"]
    wide = wide.reindex([p for p in order if p in wide.index])
    return pd.DataFrame(
        {
            "pair_id": wide.index.astype(str),
            "category": wide[("category", "a")].fillna("(none)").astype(str).to_numpy(),
            "text_a": wide[("text", "a")].astype(str).to_numpy(),
            "text_b": wide[("text", "b")].astype(str).to_numpy(),
            "sample_a": wide[("sample_idx", "a")].astype(int).to_numpy(),
            "sample_b": wide[("sample_idx", "b")].astype(int).to_numpy(),
        }
    )


def _category_rows(layer: int, per_pair: tuple, categories: np.ndarray) -> list:
    """Mean |b - a| and the relative difference (`analysis.relative_difference`: mean ||b - a||
    over mean (||a|| + ||b||) / 2) of all pairs and of each category at one layer, from the
    per-pair figures of `analysis.pair_layer` (equal up to float rounding; the rows are not
    re-read)."""
    distance, scale, pair_abs = per_pair
    rows = []
    groups = [(ALL_CATEGORIES, np.ones(len(distance), bool))]
    groups += [(c, categories == c) for c in sorted(set(categories.tolist()))]
    for name, mask in groups:
        total = scale[mask].sum()
        rows.append(
            {
                "layer": layer, "category": name, "mean_abs": float(pair_abs[mask].mean()),
                "relative": float(distance[mask].sum() / total) if total > 0.0 else 0.0,
                "n_pairs": int(mask.sum()),
            }
        )  # fmt: skip
    return rows


# One cache only (`ui.shared`): a st.cache_data of the same size behind it kept a second,
# pickled copy of every profile and was reached only after the shared one had missed too.
@shared(maxsize=32)
def pair_profile(view: StoreView, run_id: str, hook: str, position: str) -> PairProfile:
    """The run's pair statistics from its page subsample, shared by every session (read-only:
    no hash, no unpickle of its [L, categories, d] sums on every view)."""
    with st.spinner("Computing pair differences..."):
        return _pair_profile(view, run_id, hook, position)


def _pair_profile(view: StoreView, run_id: str, hook: str, position: str) -> PairProfile:
    store = view.store
    manifest = store.manifest(run_id)
    check_site(manifest, hook, position)
    X, samples, layers = store.subsample(
        run_id, hook, position, size=PAGE_SUBSAMPLE_SIZE, dtype=run_dtype(manifest)
    )
    pairs = pair_table(samples)
    # Every pair of the run when the page subsample is every sample; else the count its summary
    # records (reading every sample for it took a second at 100,000 samples).
    total = len(pairs) if len(samples) == manifest.n_samples else store.complete_pairs(run_id)
    if len(pairs) < 2:
        raise Unsuitable(f"This run has {len(pairs)} complete pair; the statistics need 2.")
    # subsample rows follow samples order; map sample_idx to row position.
    row_of = pd.Series(np.arange(len(samples)), index=samples["sample_idx"].to_numpy())
    ia, ib = row_of[pairs["sample_a"]].to_numpy(), row_of[pairs["sample_b"]].to_numpy()
    categories = pairs["category"].to_numpy()
    names = sorted(set(categories.tolist()))
    codes = pd.Categorical(categories, categories=names).codes.astype(np.int64)
    rows, stats, sums, per_pair = [], [], [], []
    for li, layer in enumerate(layers):
        A, B = X[li, ia].astype(np.float64), X[li, ib].astype(np.float64)
        # dimension_consistency, pair_sums and the per-pair figures in one pass over the rows
        found = pair_layer(A, B, codes, len(names))
        per_pair.append((found.distance, found.scale, found.pair_abs))
        rows += _category_rows(layer, per_pair[-1], categories)
        stats.append(found.stats)
        sums.append(found.sums)
    return PairProfile(
        layers=list(layers),
        n_layers=manifest.n_layers,
        per_layer=pd.DataFrame(rows).assign(n_layers=manifest.n_layers),
        score=np.stack([s.score for s in stats]),
        mean_abs=np.stack([s.mean_abs for s in stats]),
        std=np.stack([s.std for s in stats]),
        pairs=pairs,
        n_pairs_total=total,
        categories=tuple(names),
        sums=PairSums.stack(sums),
        distance=np.stack([d for d, _, _ in per_pair]),
        scale=np.stack([s for _, s, _ in per_pair]),
        pair_abs=np.stack([m for _, _, m in per_pair]),
    )


# -- a choice of categories ----------------------------------------------------------------------
def selected_pairs(profile: PairProfile, categories) -> np.ndarray:
    """Which pairs (rows of profile.pairs) are in the chosen categories: [p] bool. Read-only
    (kept: `_memo`)."""
    key = ("selected", tuple(categories))
    return _memo(profile, key, lambda: profile.pairs["category"].isin(list(categories)).to_numpy())


def overall_name(profile: PairProfile, categories) -> str:
    """The name of the line over the chosen pairs: all of them, or the selected ones."""
    return ALL_CATEGORIES if set(profile.categories) <= set(categories) else SELECTED_CATEGORIES


def per_layer_selected(profile: PairProfile, categories) -> pd.DataFrame:
    """`profile.per_layer` for the chosen categories, its overall line over their pairs only
    (named by `overall_name`); empty when no pair is chosen. Read-only (kept: `_memo`)."""
    key = ("per_layer", tuple(categories))
    return _memo(profile, key, lambda: _per_layer_selected(profile, categories))


def _per_layer_selected(profile: PairProfile, categories) -> pd.DataFrame:
    mask = selected_pairs(profile, categories)
    frame = profile.per_layer
    rows = frame[frame["category"].isin(list(categories))]
    if not mask.any():
        return rows
    overall = pd.DataFrame(
        {
            "layer": profile.layers, "category": overall_name(profile, categories),
            "mean_abs": profile.pair_abs[:, mask].mean(axis=1),
            "relative": profile.distance[:, mask].sum(axis=1) / profile.scale[:, mask].sum(axis=1),
            "n_pairs": int(mask.sum()), "n_layers": profile.n_layers,
        }
    )  # fmt: skip
    return pd.concat([overall, rows], ignore_index=True)


def selected_stats(profile: PairProfile, categories=None) -> DimensionStats:
    """Dimension statistics [L, d] over the pairs of the chosen categories (None: all pairs)."""
    if profile.sums is None:
        return DimensionStats(profile.mean_abs, profile.std, profile.score)
    chosen = profile.categories if categories is None else categories
    index = tuple(profile.categories.index(c) for c in chosen if c in profile.categories)
    if not index:
        raise Unsuitable("No category is chosen: pick at least one to rank dimensions.")
    return _memo(
        profile,
        ("stats", index),
        lambda: dimension_stats(profile.sums.take(list(index), axis=1).total(axis=1)),
    )


def dimension_table(
    profile: PairProfile, layer: int, top: int, largest: bool, categories=None
) -> pd.DataFrame:
    """Ranked dimensions at `layer`: largest (or smallest) change relative to natural spread,
    over the pairs of `categories` (None: all), with the signed mean change and the share of
    pairs whose change has its sign ("same sign") when the profile has them. Read-only (kept:
    `_memo`: the same table, so the same Arrow form, for every visitor; ui.controls.show_table)."""
    if layer not in profile.layers:
        raise Unsuitable(f"This run has no layer {layer}.")
    key = ("dimensions", layer, top, largest, None if categories is None else tuple(categories))
    return _memo(profile, key, lambda: _dimension_table(profile, layer, top, largest, categories))


def _dimension_table(profile: PairProfile, layer: int, top: int, largest: bool, categories):
    li = profile.layers.index(layer)
    every = selected_stats(profile, categories)
    stats = DimensionStats(*(None if v is None else v[li] for v in vars(every).values()))
    idx, scores = rank_dimensions(stats, k=top, largest=largest)
    table = {"rank": np.arange(1, len(idx) + 1), "dimension": idx, "score": scores,
             "mean |b - a|": stats.mean_abs[idx]}  # fmt: skip
    if stats.mean_change is not None:
        table |= {"mean b - a": stats.mean_change[idx], "same sign": stats.agreement[idx]}
    return pd.DataFrame(table | {"spread": stats.std[idx]})


def dimension_layers(profile: PairProfile, dims: list[int], categories=None) -> pd.DataFrame:
    """Score of the given dimensions at every layer, long: layer, dimension, score, n_layers.
    Read-only (kept: `_memo`)."""
    key = ("layers", tuple(int(d) for d in dims), None if categories is None else tuple(categories))
    return _memo(profile, key, lambda: _dimension_layers(profile, dims, categories))


def _dimension_layers(profile: PairProfile, dims: list[int], categories=None) -> pd.DataFrame:
    score = selected_stats(profile, categories).score
    frame = pd.DataFrame(score[:, dims], index=profile.layers, columns=dims)
    frame = frame.rename_axis(index="layer", columns="dimension").stack().rename("score")
    return frame.reset_index().assign(n_layers=profile.n_layers)


def dimension_caption(n_pairs: int, n_dims: int, best_score: float) -> str:
    """What the dimension tables' numbers mean, said so that it matches them: whether even the
    top score is below 1, and what sign agreement chance gives over `n_pairs` pairs."""
    if not np.isfinite(best_score):
        reading = "The top dimensions do not vary across prompts at all but the edit moves them."
    elif best_score >= 1.0:
        reading = (f"The top score is {best_score:.2f}: the edit moves that dimension "
                   f"{best_score:.1f} times as much as prompts usually differ.")  # fmt: skip
    else:
        reading = (f"Even the top score is {best_score:.2f}: no dimension moves as much as "
                   "prompts usually differ.")  # fmt: skip
    chance = sign_agreement_chance(max(n_pairs, 1))
    return (
        f"Over the {n_pairs} pairs of the chosen categories. Score = mean |b - a| ÷ the "
        "dimension's spread across prompts: above 1 the edit moves it more than prompts "
        f"usually differ, below 1 less. {reading} Mean b - a is the signed change; same sign is "
        "the share of pairs whose change has that sign (1 = every pair moves it the same way). "
        f"Coin-flip signs give about {chance:.0%} on average over {n_pairs} pairs, and among "
        f"{n_dims} dimensions some reach higher by chance alone."
    )


DIMENSION_COLUMNS = {
    "score": st.column_config.NumberColumn(format="%.2f", help="mean |b - a| ÷ spread"),
    "mean |b - a|": st.column_config.NumberColumn(format="%.3f"),
    "mean b - a": st.column_config.NumberColumn(format="%+.3f", help="Signed mean change"),
    "same sign": st.column_config.NumberColumn(
        format="percent", help="Share of pairs whose change has the sign of the mean change"
    ),
    "spread": st.column_config.NumberColumn(format="%.3f", help="Spread across prompts"),
}


# -- one pair ----------------------------------------------------------------------------------
THIS_PAIR, MEDIAN_PAIR = "this pair", "median of the chosen pairs"


def pair_layers(profile: PairProfile, pair_id: str, categories) -> pd.DataFrame:
    """One pair's ||b - a|| ÷ norm at every layer of the profile's (pooled) position, beside the
    median over the chosen categories' pairs: layer, n_layers, pairs, relative, distance.
    Read-only (kept: `_memo`)."""
    key = ("pair", pair_id, tuple(categories))
    return _memo(profile, key, lambda: _pair_layers(profile, pair_id, categories))


def _pair_layers(profile: PairProfile, pair_id: str, categories) -> pd.DataFrame:
    ids = profile.pairs["pair_id"].tolist()
    if pair_id not in ids or profile.distance is None:
        raise Unsuitable(f"Pair {pair_id!r} is not in this run.")
    i, mask = ids.index(pair_id), selected_pairs(profile, categories)
    relative = profile.distance / np.where(profile.scale > 0.0, profile.scale, 1.0)  # [L, p]
    frames = [(THIS_PAIR, relative[:, i], profile.distance[:, i])]
    if mask.any():
        frames.append((MEDIAN_PAIR, np.median(relative[:, mask], axis=1),
                       np.median(profile.distance[:, mask], axis=1)))  # fmt: skip
    return pd.concat(
        [pd.DataFrame({"layer": profile.layers, "n_layers": profile.n_layers, "pairs": name,
                       "relative": rel, "distance": dist}) for name, rel, dist in frames],
        ignore_index=True,
    )  # fmt: skip


def pair_rows(profile: PairProfile, categories) -> pd.DataFrame:
    """`profile.pairs` of the chosen categories. Read-only (kept: `_memo`)."""
    key = ("rows", tuple(categories))
    return _memo(profile, key, lambda: profile.pairs[selected_pairs(profile, categories)])


PAIR_TABLE = ["pair_id", "category", "text_a", "text_b"]  # the columns of the page's pair table


def found_pairs(profile: PairProfile, categories, text: str) -> pd.DataFrame:
    """`search_pairs` over `pair_rows`, in the columns of the page's table (`PAIR_TABLE`).
    Read-only (kept: `_memo`: the same table, and so the same chart and table keys, for every
    visitor who searches the same)."""
    rows = pair_rows(profile, categories)
    return _memo(profile, ("found", tuple(categories), text),
                 lambda: search_pairs(rows, text)[PAIR_TABLE])  # fmt: skip


def pair_texts(profile: PairProfile, categories) -> dict[str, dict[str, str]]:
    """pair id -> its text_a, text_b and category, over the chosen categories. Read-only
    (kept: `_memo`)."""
    key = ("texts", tuple(categories))

    def make() -> dict[str, dict[str, str]]:
        rows = pair_rows(profile, categories)
        return {str(r["pair_id"]): {k: str(r[k]) for k in ("text_a", "text_b", "category")}
                for r in rows[PAIR_TABLE].to_dict("records")}  # fmt: skip

    return _memo(profile, key, make)


def search_pairs(pairs: pd.DataFrame, text: str) -> pd.DataFrame:
    """The pairs whose id, category or either sentence contains every word of `text` (any
    case; an empty text keeps all). Plain substring matching: nothing in `text` is a pattern."""
    words = text.lower().split()[:20]
    haystack = (pairs["pair_id"] + " " + pairs["category"] + " " + pairs["text_a"] + " "
                + pairs["text_b"]).str.lower()  # fmt: skip
    keep = np.ones(len(pairs), bool)
    for word in words:
        keep &= haystack.str.contains(word, regex=False).to_numpy()
    return pairs[keep]


# -- per-token view ------------------------------------------------------------------------------
@shared(maxsize=64)
def all_positions_run_of(view: StoreView, run_id: str, hook: str) -> str | None:
    """`all_positions_run` for run `run_id` of the view, worked out once per view for every
    session (it lists the store's runs)."""
    store = view.store
    return all_positions_run(store, store.manifest(run_id), hook)


def all_positions_run(store: Store, manifest: RunManifest, hook: str) -> str | None:
    """A run with position `all` and `hook`, same model and dataset; the given run first."""
    candidates = [manifest] + [m for m in store.runs() if m.run_id != manifest.run_id]
    for m in candidates:
        same = m.model == manifest.model and m.dataset_sha256 == manifest.dataset_sha256
        if same and "all" in m.positions and hook in m.hooks:
            return m.run_id
    return None


def _builtin_dataset(manifest: RunManifest) -> bool:
    """Whether the run read the built-in dataset of its name, judged by content hash (a user's
    own `data/emotions.jsonl`, or a run made in another checkout, is told apart by bytes, not by
    folder name). A run that recorded no dataset path can only be named by its dataset name."""
    if not manifest.extra.get("dataset_path"):
        return True
    builtin = builtin_dir() / f"{manifest.dataset_name}.jsonl"
    if not builtin.is_file():
        return False
    return hashlib.sha256(builtin.read_bytes()).hexdigest() == manifest.dataset_sha256


def extraction_command(manifest: RunManifest, hook: str, store_root: str | Path) -> str:
    """The CLI line that captures every token of the run's dataset on the run's model."""
    dataset = manifest.dataset_name
    if not _builtin_dataset(manifest):
        dataset = manifest.extra["dataset_path"]  # point at the file the run used
    parts = [
        "python", "-m", "extraction", "run", "--model", manifest.model, "--dataset", dataset,
        "--hooks", hook, "--positions", "all", "--store", str(store_root),
    ]  # fmt: skip
    return public_text(shlex.join(parts))


def new_run_prefill(manifest: RunManifest, hook: str, store_root: str | Path) -> dict | None:
    """New run page query parameters for the same `all` run, or None when its dataset is a file
    the page cannot offer (neither built-in nor uploaded to this store)."""
    if _builtin_dataset(manifest):
        dataset = manifest.dataset_name
    else:
        used = Path(manifest.extra["dataset_path"]).resolve()
        uploads = [p for p in list_uploads(Path(store_root)) if p.resolve() == used]
        if not uploads:
            return None
        dataset = upload_label(uploads[0])
    return prefill_query(manifest.model, dataset, (hook,), ("all",))


@st.cache_data(show_spinner="Reading every token of the pair...", max_entries=64)
def token_map(view: StoreView, run_id: str, hook: str, pair_id: str) -> pd.DataFrame:
    """||b - a|| per layer and token of one pair: layer, n_layers, token_idx, token_a, token_b,
    distance."""
    store = view.store
    pairs = pair_table(store.samples(run_id)).set_index("pair_id")
    if pair_id not in pairs.index:
        raise Unsuitable(f"Pair {pair_id!r} is not in the run that has every token.")
    row = pairs.loc[pair_id]
    A, tokens_a, layers = store.token_vectors(run_id, hook, int(row["sample_a"]))
    B, tokens_b, _ = store.token_vectors(run_id, hook, int(row["sample_b"]))
    if A.shape[1] != B.shape[1]:
        raise Unsuitable(
            f"The two sides have {A.shape[1]} and {B.shape[1]} tokens: the edit changed the "
            "token count, so tokens do not line up one to one and there is no per-token map."
        )
    D = token_difference_map(A, B)  # [L, t]
    t = np.arange(D.shape[1])
    return pd.DataFrame(
        {
            "layer": np.repeat(layers, len(t)), "token_idx": np.tile(t, len(layers)),
            "token_a": np.tile(tokens_a["token"].astype(str).to_numpy(), len(layers)),
            "token_b": np.tile(tokens_b["token"].astype(str).to_numpy(), len(layers)),
            "distance": D.ravel(), "n_layers": store.manifest(run_id).n_layers,
        }
    )  # fmt: skip
