"""Cached results behind the Directions and Cross-model pages: store reads wired to `analysis`.

Pages call these and draw; no page reads vectors or does math itself. Every `st.cache_data`
function takes the rerun's `StoreView` (ui.context) as its first argument, then plain values:
results are cached per store and set of committed runs, so a newly committed run shows up at
once. Directions come from `analysis.directions_from_means` over the streamed label means.
What a page view asks for again and again (`runs_table`, `directions_of`, `layer_detail`,
`layer_directions`, `cross_model_drawn`) is kept by `ui.shared` (alone, or on top of the
cache_data functions it combines): every session gets the same result object, without
Streamlit's hashing and unpickling per call, so treat it as read-only.

Data: `layer_stats` reads a run's summaries (store.summaries), never its vectors (it is a
`st.cache_resource`: every caller shares one copy with read-only arrays, where a pickled
cache_data copy of a 4,096-sample subsample cost seconds per hit at 100,000 samples): label means
and typical norms from the per-label sums, which cover every sample, and the statistics that
need single samples (stability, separability, PCA, CKA, Procrustes) from the page subsample: at
most `store.summaries.PAGE_SUBSAMPLE_SIZE` (1,024) samples of the summaries' fixed stratified
subsample (at most `SUBSAMPLE_SIZE`, 4,096), chosen from it the same stratified way with the
same seed. So a run of up to 1,024 samples uses every sample, a bigger one costs a page what
1,024 samples cost, and two runs over the same dataset hold the same samples and line up for
cross-model comparisons. The pages say how many samples those used. A run without usable
summaries raises `SummaryUnavailable` (a StoreError carrying the command that makes them):
nothing scans.

Selections the analysis cannot use (one label, a missing baseline or layer, ...) raise
`Unsuitable` with a message written for the page; store problems raise `StoreError`. A damaged
run never takes the others down: `run_summaries` leaves out (and names) runs whose samples
cannot be read, and `directions_for` names the runs whose vectors fail and keeps the rest.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from analysis import (
    LayerComparison,
    best_per_row,
    centred_label_similarity,
    compare_layers,
    cosine_matrix,
    direction_norms_by_layer,
    directions_from_means,
    held_out_layers,
    normalised_depth,
    one_vs_rest_means,
    pca,
    relative_projection,
    rsa_matrix,
)
from store import RunManifest, StoreError
from store.summaries import MAX_SUMMARY_LABELS, PAGE_SUBSAMPLE_SIZE
from ui.context import StoreView, public_text
from ui.shared import derived, shared

CROSS_MODEL_MAX_ROWS = 400  # shared samples used for CKA / Procrustes (cost grows with n^2)
CHANCE_SHUFFLES = 5  # shuffles of B's sample order behind each chance level
PROCRUSTES_RANK = 32  # principal directions per layer the Procrustes map is fitted in
STABILITY_SPLITS = 20
NO_LABEL = "(no label)"
REST = "(every other label)"  # the one-vs-rest baseline: each label against all the others


class Unsuitable(ValueError):
    """A selection the analysis cannot use; the message is shown on the page as it is."""


def limit_blas_threads() -> None:
    """Run BLAS/LAPACK on one thread in this (app) process.

    The analysis does many small matrix operations (SVDs of a few hundred rows), for which
    OpenBLAS's threads cost more than they give; on a busy machine with few cores, measured here,
    a 240 x 640 PCA took 0.04 s on one thread against 0.2-2.8 s on two. Streamlit imports numpy
    before any page runs, so an environment variable would come too late; threadpoolctl changes
    the running library. It is optional: without it nothing changes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


limit_blas_threads()


# -- runs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSummaries:
    """frame: one row per readable run (what the analysis pages choose by: labels, pairs,
    sites); unreadable: (run id, reason) of runs whose samples the store could not read."""

    frame: pd.DataFrame
    unreadable: tuple[tuple[str, str], ...]
    unsummarized: tuple[tuple[str, str, str], ...] = ()  # (run id, kind, reason): see ui.summaries


@st.cache_data(show_spinner=False, max_entries=16)
def run_summaries(view: StoreView) -> RunSummaries:
    """Healthy runs whose files open (`Store.check_run`: footers, schemas, widths) and whose
    samples read; the others go to `unreadable`, so no picker offers a run that cannot load."""
    store = view.store
    rows, unreadable, unsummarized = [], [], []
    for m in store.runs():
        try:
            store.check_run(m.run_id)
            problem = store.summary_status(m.run_id)
            labels, has_pairs = _labels_and_pairs(store, m.run_id, problem is None)
        except StoreError as exc:
            unreadable.append((m.run_id, str(exc)))
            continue
        if problem is not None:  # kept: its vectors are fine, and a link may name it
            unsummarized.append((m.run_id, problem.kind, problem.reason))
        rows.append(
            {
                "run_id": m.run_id, "name": m.name, "model": m.model,
                "dataset": m.dataset_name, "dataset_sha256": m.dataset_sha256,
                "n_samples": m.n_samples, "labels": tuple(labels), "has_pairs": has_pairs,
                "hooks": tuple(m.hooks), "positions": tuple(m.positions),
                "layers": tuple(m.layers), "n_layers": m.n_layers, "d_model": m.d_model,
            }
        )  # fmt: skip
    return RunSummaries(pd.DataFrame(rows), tuple(unreadable), tuple(unsummarized))


@shared(maxsize=16)
def runs_table(view: StoreView) -> tuple[pd.DataFrame, RunSummaries]:
    """(`run_summaries(view).frame` indexed by run_id, with each model as a visitor may see it
    (a model may be a server folder); the summaries). One shared frame per view: read-only."""
    summaries = run_summaries(view)
    runs = summaries.frame.set_index("run_id") if len(summaries.frame) else summaries.frame
    if len(runs):
        runs = runs.assign(model=runs["model"].map(public_text))
    return runs, summaries


def _labels_and_pairs(store, run_id: str, summarized: bool) -> tuple[list[str], bool]:
    """(sorted labels, whether any sample has a pair id) of a run: from its summary.json when
    its summaries are usable and keep every label, else from its samples table (at 100,000
    samples a run's table took a second to read, on every page after any commit)."""
    summary = store.summary(run_id) if summarized else None
    if summary is not None and summary.per_label:
        labels = {NO_LABEL if label is None else str(label) for label in summary.labels}
        return sorted(labels), summary.has_pairs
    samples = store.samples(run_id)
    labels = sorted(samples["label"].fillna(NO_LABEL).astype(str).unique().tolist())
    has_pairs = bool(samples["pair_id"].notna().any()) if "pair_id" in samples else False
    return labels, has_pairs


def run_title(summary: pd.Series) -> str:
    return f"{summary['name']} ({summary['model']})"


def complete_first(runs: pd.DataFrame) -> pd.DataFrame:
    """The same runs (summaries), those that cover every layer of their model first; the order
    within each group is kept (newest first), so a default never falls on a partial run while
    a complete one exists."""
    partial = runs["layers"].map(len) < runs["n_layers"]
    return runs.iloc[partial.to_numpy().argsort(kind="stable")]


# -- streamed per-layer statistics -------------------------------------------------------------
@dataclass(frozen=True)
class LayerStats:
    """Per-layer label statistics of one run at one (hook, position).

    means [L, k, d] and counts [k] cover every sample; sub_* is the page subsample (m rows, at
    most PAGE_SUBSAMPLE_SIZE, of the summaries' fixed subsample, ordered by sample_idx):
    sub_X [L, m, d] in the run's dtype (`run_dtype`), sub_labels / sub_ids / sub_text [m].
    """

    run_id: str
    n_layers: int
    layers: list[int]
    labels: list[str]
    counts: np.ndarray
    means: np.ndarray
    typical_norms: np.ndarray
    sub_ids: np.ndarray
    sub_labels: np.ndarray
    sub_text: np.ndarray
    sub_X: np.ndarray
    n_samples: int = 0  # samples of the run (the subsample has len(sub_ids))

    def depths(self) -> np.ndarray:
        """Normalised depth (0..1) of each kept layer in the model: [L]."""
        return normalised_depth(self.n_layers)[self.layers]

    def layer_index(self, layer: int) -> int:
        if layer not in self.layers:
            raise Unsuitable(
                f"This run has no layer {layer}; it has layers {_layer_ranges(self.layers)}."
            )
        return self.layers.index(layer)


def _layer_ranges(layers) -> str:
    return f"{layers[0]}..{layers[-1]}" if len(layers) > 1 else str(layers[0])


def run_dtype(manifest: RunManifest) -> type:
    """The numpy type a run's vectors are stored in: subsamples are kept in it, not widened
    (half the memory and cache of float32 for a float16 run; the analysis computes in float64,
    so the results are the same)."""
    return np.float16 if manifest.dtype == "float16" else np.float32


def check_site(manifest: RunManifest, hook: str, position: str) -> None:
    if hook not in manifest.hooks or position not in manifest.positions:
        raise Unsuitable(
            f"Run `{manifest.name}` has no {hook} / {position} vectors "
            f"(hooks: {', '.join(manifest.hooks)}; positions: {', '.join(manifest.positions)})."
        )


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# A cache_resource, not cache_data: the result is shared, not pickled. At a 4,096-sample
# subsample of 30 x 576 its sub_X was 141 MB (35 MB at the page subsample's 1,024), which
# cache_data pickled on every miss and unpickled (a fresh copy) on every hit by the functions
# below: measured at 100,000 samples, most of a cold Directions or Cross-model page. Its
# arrays are read-only, so no caller can change what the next one gets; few entries, since
# each holds a subsample.
@st.cache_resource(show_spinner="Reading the run's summaries...", max_entries=8)
def layer_stats(view: StoreView, run_id: str, hook: str, position: str) -> LayerStats:
    """One site of a run from its summaries: label means and typical norms over every sample
    (`Store.label_sums`), and the page subsample (`Store.subsample` with PAGE_SUBSAMPLE_SIZE:
    at most that many of the summaries' fixed subsample, the same ones on every call). Never reads
    the run's vectors: a run without usable summaries raises `SummaryUnavailable`. Shared
    between callers (st.cache_resource): its arrays are read-only."""
    store = view.store
    manifest = store.manifest(run_id)
    check_site(manifest, hook, position)
    if not store.summary(run_id).per_label:
        raise Unsuitable(
            f"Run `{manifest.name}` has more than {MAX_SUMMARY_LABELS} labels: its summaries keep "
            "one mean over all samples, so it has no label directions."
        )
    sums = store.label_sums(run_id, hook, position)
    names = [NO_LABEL if label is None else str(label) for label in sums.labels]
    order = sorted(range(len(names)), key=names.__getitem__)
    X, samples, layers = store.subsample(
        run_id, hook, position, size=PAGE_SUBSAMPLE_SIZE, dtype=run_dtype(manifest)
    )
    return LayerStats(
        run_id=run_id, n_layers=manifest.n_layers, layers=list(layers),
        labels=[names[i] for i in order], counts=_frozen(sums.counts[-1, order]),
        means=_frozen(sums.means[:, order]), typical_norms=_frozen(sums.typical_norms),
        sub_ids=_frozen(samples["id"].astype(str).to_numpy()),
        sub_labels=_frozen(samples["label"].fillna(NO_LABEL).astype(str).to_numpy()),
        sub_text=_frozen(samples["text"].astype(str).to_numpy()), sub_X=_frozen(X),
        n_samples=manifest.n_samples,
    )  # fmt: skip


def check_labels(labels: list[str], baseline: str) -> None:
    if len(labels) < 2:
        raise Unsuitable(
            f"This run has one label ({labels[0]!r}): a direction needs a target label and a "
            "baseline label. Pick a run of a labelled dataset."
        )
    if baseline not in labels and baseline != REST:
        raise Unsuitable(
            f"Baseline {baseline!r} is not a label of this run (labels: {', '.join(labels)})."
        )


# -- directions --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DirectionProfile:
    """per_label: one row per (layer, target label); cosines: one row per (layer, label pair);
    failed: (run id, reason) of runs left out because the store could not read them."""

    per_label: pd.DataFrame
    cosines: pd.DataFrame
    failed: tuple[tuple[str, str], ...] = ()

    # Worked out once per profile (a shared one serves every visitor: ui.shared).
    @functools.cached_property
    def label_sizes(self) -> dict[str, int]:
        """Each target label's samples in the (first run's) subsample, in the frame's order."""
        sizes: dict[str, int] = {}
        for label, n in zip(self.per_label["label"], self.per_label["n_target"], strict=True):
            sizes.setdefault(label, int(n))
        return sizes

    @functools.cached_property
    def baseline_size(self) -> int:
        """The baseline's samples in the first run's subsample (0 if nothing was drawn)."""
        return int(self.per_label["n_baseline"].iloc[0]) if len(self.per_label) else 0

    @functools.cached_property
    def subsample_text(self) -> str:
        """ "all 240 samples" or "1,024 of 100,000 samples", per run where they differ."""
        sizes = self.per_label.drop_duplicates(["n_subsample", "n_samples"])
        return ", ".join(
            f"all {n:,} samples" if m >= n else f"{m:,} of {n:,} samples"
            for m, n in zip(sizes["n_subsample"], sizes["n_samples"], strict=True)
        )


def label_directions_of(
    stats: LayerStats, baseline: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(targets, directions [L, m, d], origins [L, m, d]): each target label's direction and the
    baseline mean it starts from. baseline REST: every label against the mean of all samples of
    the other labels (`analysis.one_vs_rest_means`); else every other label against it."""
    if baseline == REST:
        rest = one_vs_rest_means(stats.means, stats.counts)
        return list(stats.labels), stats.means - rest, rest
    targets = [label for label in stats.labels if label != baseline]
    directions = directions_from_means(stats.means, stats.labels, targets, baseline)
    origin = stats.means[:, [stats.labels.index(baseline)]]
    return targets, directions, np.broadcast_to(origin, directions.shape)


@st.cache_data(show_spinner="Computing directions...", max_entries=64)
def direction_profile(
    view: StoreView, run_id: str, hook: str, position: str, baseline: str
) -> DirectionProfile:
    """Every label's diff-of-means direction against `baseline`, per layer, and how reliable."""
    stats = layer_stats(view, run_id, hook, position)
    check_labels(stats.labels, baseline)
    targets, directions, _ = label_directions_of(stats, baseline)  # [L, m, d]
    n_kept = {label: int((stats.sub_labels == label).sum()) for label in stats.labels}
    n_kept[REST] = len(stats.sub_labels)  # less the target's, below
    depth = stats.depths()
    rows, cos_rows = [], []
    # [targets, L, 4]: stability mean, std, AUC, accuracy (nan where a side has < 2 samples)
    versus = None if baseline == REST else baseline
    held_out = held_out_layers(stats.sub_X, stats.sub_labels, targets, versus, STABILITY_SPLITS)
    for li, layer in enumerate(stats.layers):
        D = directions[li]
        l1, l2 = direction_norms_by_layer(D)
        for j, target in enumerate(targets):
            held = held_out[j, li]
            rows.append(
                {
                    "layer": layer, "n_layers": stats.n_layers, "depth": depth[li], "label": target,
                    "l1": l1[j], "l2": l2[j], "l1_rel": l1[j] / stats.typical_norms[li],
                    "l2_rel": l2[j] / stats.typical_norms[li],
                    "stability": held[0], "stability_std": held[1], "auc": held[2],
                    "accuracy": held[3], "n_target": n_kept[target],
                    "n_baseline": n_kept[baseline] - (n_kept[target] if baseline == REST else 0),
                    "n_subsample": len(stats.sub_ids), "n_samples": stats.n_samples,
                }
            )  # fmt: skip
        C = cosine_matrix(D)
        for i in range(len(targets)):
            for j in range(i + 1, len(targets)):
                pair = f"{targets[i]} · {targets[j]}"
                cos_rows.append({"layer": layer, "n_layers": stats.n_layers, "depth": depth[li],
                                 "pair": pair, "cosine": C[i, j]})  # fmt: skip
    cosines = pd.DataFrame(cos_rows, columns=["layer", "n_layers", "depth", "pair", "cosine"])
    return DirectionProfile(pd.DataFrame(rows), cosines)


@shared(maxsize=64, keep=lambda profile: not profile.failed)
def directions_of(
    view: StoreView, run_ids: tuple[str, ...], hook: str, position: str, baseline: str
) -> DirectionProfile:
    """`directions_for` the runs `run_ids` of `runs_table(view)`, shared by every session
    (read-only frames): a page view asks for the same few combinations again and again."""
    return directions_for(view, runs_table(view)[0].loc[list(run_ids)], hook, position, baseline)


def directions_for(
    view: StoreView, runs: pd.DataFrame, hook: str, position: str, baseline: str
) -> DirectionProfile:
    """`direction_profile` of several runs stacked, with `run` and `model` columns. A run the
    store cannot read is left out and named in `failed`; the frames are empty if all fail."""
    parts, failed = [], []
    for run_id, summary in runs.iterrows():
        try:
            profile = direction_profile(view, run_id, hook, position, baseline)
        except StoreError as exc:
            failed.append((run_id, str(exc)))
            continue
        tag = {"run": run_title(summary), "model": summary["model"]}
        parts.append((profile.per_label.assign(**tag), profile.cosines.assign(**tag)))
    if not parts:
        return DirectionProfile(pd.DataFrame(), pd.DataFrame(), tuple(failed))
    return DirectionProfile(
        pd.concat([p[0] for p in parts], ignore_index=True),
        pd.concat([p[1] for p in parts], ignore_index=True),
        tuple(failed),
    )


@shared(maxsize=64)
def layer_directions(
    view: StoreView, run_id: str, hook: str, position: str, layer: int, baseline: str
) -> tuple[list[str], np.ndarray]:
    """(targets, directions [m, d]) at one layer, as `label_directions_of` gives them: a few
    KB, kept on their own (so a hit needs no `layer_stats`, which may have been evicted) and
    shared by every session (read-only values: `ui.shared`, no hash, no unpickle)."""
    stats = layer_stats(view, run_id, hook, position)
    targets, directions, _ = label_directions_of(stats, baseline)
    return targets, _frozen(np.array(directions[stats.layer_index(layer)]))


@dataclass(frozen=True)
class LayerDetail:
    """One layer of one run: label-direction cosines, sample projections and PCA scores."""

    cosines: pd.DataFrame  # label_a, label_b, cosine
    projections: pd.DataFrame  # label, text, layer, n_layers, projection (0 baseline, 1 target)
    scores: pd.DataFrame  # label, text, layer, n_layers, pc1, pc2, pc3
    explained: list[float]


# One cache only (`ui.shared`): a st.cache_data of the same size behind it kept a second,
# pickled copy of every entry and was reached only after the shared one had missed too.
@shared(maxsize=64)
def layer_detail(
    view: StoreView, run_id: str, hook: str, position: str, layer: int, baseline: str,
    target: str,
) -> LayerDetail:  # fmt: skip
    """Cosines, projections and PCA of one layer of one run, shared by every session
    (read-only frames: no hash, no unpickle)."""
    with st.spinner("Computing the layer view..."):
        return _layer_detail(view, run_id, hook, position, layer, baseline, target)


def _layer_detail(
    view: StoreView, run_id: str, hook: str, position: str, layer: int, baseline: str,
    target: str,
) -> LayerDetail:  # fmt: skip
    stats = layer_stats(view, run_id, hook, position)
    check_labels(stats.labels, baseline)
    li = stats.layer_index(layer)
    targets, directions, origins = label_directions_of(stats, baseline)
    D = directions[li]  # [m, d]
    C = cosine_matrix(D)
    cos = pd.DataFrame(
        [{"label_a": a, "label_b": c, "cosine": C[i, j]}
         for i, a in enumerate(targets) for j, c in enumerate(targets)]
    )  # fmt: skip
    X = stats.sub_X[li]
    base = pd.DataFrame({"label": stats.sub_labels, "text": stats.sub_text, "layer": layer,
                         "n_layers": stats.n_layers})  # fmt: skip
    if target not in targets:
        raise Unsuitable(f"Label {target!r} has no direction against baseline {baseline!r}.")
    j = targets.index(target)
    try:  # 0 = the baseline's mean, 1 = the target's mean (every sample's, not the subsample's)
        projections = base.assign(projection=relative_projection(X, origins[li, j], D[j]))
    except ValueError as exc:
        raise Unsuitable(f"Cannot project on the {target!r} direction: {exc}.") from None
    n_comp = min(3, X.shape[0], X.shape[1])
    result = pca(X, k=n_comp)
    scores = base.copy()
    for c in range(3):
        scores[f"pc{c + 1}"] = result.scores[:, c] if c < n_comp else 0.0
    return LayerDetail(cos, projections, scores, result.explained_variance_ratio.tolist())


# -- cross-model -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CrossModel:
    """Layer-by-layer comparisons of run A (rows) and run B (columns), as long frames.

    Each frame has layer_a, layer_b, n_layers_a, n_layers_b, depth_a, depth_b, value (n_layers:
    the model's depth). `raw` is None when the widths
    differ; `rsa` is None (with `rsa_note`) when there are fewer than 3 labels.
    """

    cka: pd.DataFrame
    procrustes: pd.DataFrame
    rsa: pd.DataFrame | None
    raw: pd.DataFrame | None
    n_shared: int
    rsa_note: str


def _long(M: np.ndarray, a: LayerStats, b: LayerStats) -> pd.DataFrame:
    layers_a, layers_b, depth_a, depth_b = a.layers, b.layers, a.depths(), b.depths()
    i, j = np.meshgrid(np.arange(len(layers_a)), np.arange(len(layers_b)), indexing="ij")
    return pd.DataFrame(
        {
            "layer_a": np.asarray(layers_a)[i.ravel()], "layer_b": np.asarray(layers_b)[j.ravel()],
            "n_layers_a": a.n_layers, "n_layers_b": b.n_layers,
            "depth_a": depth_a[i.ravel()], "depth_b": depth_b[j.ravel()], "value": M.ravel(),
        }
    )  # fmt: skip


def _shared_rows(a: LayerStats, b: LayerStats) -> tuple[np.ndarray, np.ndarray]:
    """Positions in each subsample of the shared sample ids, capped at CROSS_MODEL_MAX_ROWS."""
    shared, ia, ib = np.intersect1d(a.sub_ids, b.sub_ids, return_indices=True)
    if len(shared) < 4:
        raise Unsuitable(
            f"The two runs share {len(shared)} sample ids; the comparison needs at least 4."
        )
    order = np.argsort(pd.util.hash_pandas_object(pd.Series(shared), index=False).to_numpy())
    order = order[:CROSS_MODEL_MAX_ROWS]
    return ia[order], ib[order]


def _direction_stack(stats: LayerStats, target: str, baseline: str) -> np.ndarray:
    if target not in stats.labels or target == baseline:
        raise Unsuitable(f"Label {target!r} has no direction against baseline {baseline!r}.")
    return directions_from_means(stats.means, stats.labels, [target], baseline)[:, 0]  # [L, d]


@dataclass(frozen=True)
class LayerSimilarity:
    """CKA and Procrustes of every layer pair of two runs over their `n_shared` shared samples:
    `analysis.compare_layers`'s result, chance levels per shuffle (the page draws their mean)."""

    layers: LayerComparison
    n_shared: int


@st.cache_data(show_spinner="Comparing the two models layer by layer...", max_entries=32)
def layer_similarity(
    view: StoreView, run_a: str, run_b: str, hook: str, position: str
) -> LayerSimilarity:
    """What the CKA and Procrustes heatmaps show, with their chance levels: one computation
    (the Gram matrices serve both measures and every shuffle), and not keyed by the label and
    baseline, which change neither."""
    a = layer_stats(view, run_a, hook, position)
    b = layer_stats(view, run_b, hook, position)
    ia, ib = _shared_rows(a, b)
    result = compare_layers(
        list(a.sub_X[:, ia]), list(b.sub_X[:, ib]), rank=PROCRUSTES_RANK,
        shuffles=CHANCE_SHUFFLES,
    )  # fmt: skip
    return LayerSimilarity(result, len(ia))


@st.cache_data(show_spinner="Comparing the two models layer by layer...", max_entries=32)
def cross_model(
    view: StoreView, run_a: str, run_b: str, hook: str, position: str, target: str,
    baseline: str,
) -> CrossModel:  # fmt: skip
    a = layer_stats(view, run_a, hook, position)
    b = layer_stats(view, run_b, hook, position)
    if a.labels != b.labels:
        raise Unsuitable("The two runs have different labels; pick runs of the same dataset.")
    check_labels(a.labels, baseline)
    similarity = layer_similarity(view, run_a, run_b, hook, position)
    rsa, note = None, ""
    if len(a.labels) >= 3:
        mats_a = [centred_label_similarity(m) for m in a.means]
        mats_b = [centred_label_similarity(m) for m in b.means]
        rsa = _long(rsa_matrix(mats_a, mats_b), a, b)
    else:
        note = f"RSA needs at least 3 labels; these runs have {len(a.labels)}."
    raw = None
    if a.means.shape[2] == b.means.shape[2]:
        Da, Db = _direction_stack(a, target, baseline), _direction_stack(b, target, baseline)
        C = cosine_matrix(np.concatenate([Da, Db]))[: len(Da), len(Da) :]
        raw = _long(C, a, b)
    return CrossModel(
        _long(similarity.layers.cka, a, b), _long(similarity.layers.procrustes, a, b), rsa, raw,
        similarity.n_shared, note,
    )  # fmt: skip


@shared(maxsize=32)
def cross_model_drawn(
    view: StoreView, run_a: str, run_b: str, hook: str, position: str, target: str,
    baseline: str,
) -> CrossModel:  # fmt: skip
    """`cross_model` as the Cross-model page draws it, shared by every session (read-only
    frames): `best` on every heatmap (`with_best`) and `chance` on CKA and Procrustes
    (from `layer_similarity`: the mean over CHANCE_SHUFFLES shuffles of B's sample order at
    each best cell)."""
    result = cross_model(view, run_a, run_b, hook, position, target, baseline)
    layers = layer_similarity(view, run_a, run_b, hook, position).layers
    cka = _with_best_and_chance(result.cka, layers.cka_best, layers.cka_chance.mean(axis=1))
    procrustes = _with_best_and_chance(
        result.procrustes, layers.procrustes_best, layers.procrustes_chance.mean(axis=1)
    )
    return dataclasses.replace(
        result, cka=cka, procrustes=procrustes,
        rsa=None if result.rsa is None else with_best(result.rsa),
        raw=None if result.raw is None else with_best(result.raw),
    )  # fmt: skip


@dataclass(frozen=True)
class BestMatches:
    """The range of a heatmap's best cells (`best`: a ring per row) and of their `chance`
    (None when the frame has no chance level)."""

    low: float
    high: float
    chance: tuple[float, float] | None


def best_matches(frame: pd.DataFrame) -> BestMatches:
    """`BestMatches` of a `cross_model_drawn` heatmap, worked out once while the shared frame
    lives."""

    def make() -> BestMatches:
        best = frame[frame["best"]]
        chance = (best["chance"].min(), best["chance"].max()) if "chance" in frame else None
        return BestMatches(best["value"].min(), best["value"].max(), chance)

    return derived(frame, ("best matches",), make)


def _with_best_and_chance(frame: pd.DataFrame, best: np.ndarray, chance: np.ndarray):
    """A `_long` frame of an [La, Lb] matrix with `best` (as `with_best`: column best[i] of each
    row i, from `best_per_row` of the same matrix) and `chance` (chance[i] there, else nan)."""
    La = len(best)
    i, j = np.divmod(np.arange(len(frame)), len(frame) // La)  # `_long` is row-major
    is_best = best[i] == j
    return frame.assign(best=is_best, chance=np.where(is_best, chance[i], np.nan))


def with_best(frame: pd.DataFrame) -> pd.DataFrame:
    """A `CrossModel` frame with `best`: true at the best layer of B for each layer of A."""
    M = frame.pivot(index="layer_a", columns="layer_b", values="value")
    cols = best_per_row(M.to_numpy())
    best = {a: M.columns[c] for a, c in zip(M.index, cols, strict=True) if c >= 0}
    return frame.assign(best=frame["layer_b"].to_numpy() == frame["layer_a"].map(best).to_numpy())
