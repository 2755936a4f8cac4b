"""Cached reads behind the Features page (issue 12): feature runs, their summaries, one feature,
one sample, the JSON export; and the page's small text builders (highlighted tokens).

Every read goes through `Store.features` / `Store.saes`, which check files strictly and raise
`StoreError` naming the feature run or SAE; the page shows that as one line. Cached results are
keyed by the store folder, the feature run id and its `created_at` (a committed feature run
never changes; a new one under an old id has a new time). Token texts come from the store, so
the highlighted view escapes every one of them as HTML (and `$`, which Markdown would read as
math) and draws nothing else from a file.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from jobs import JobError, launch
from settings.sae import TrainSaeSettings
from store import StoreError
from store.feature_reads import SCOPES
from store.json_records import dump_json
from ui.context import StoreView, plain, public_text, read_only, store_at

SCOPE_TITLES = {
    "last_prompt": "last prompt token",
    "prompt": "prompt tokens",
    "response": "response tokens",
    "all": "all tokens",
}
ORDER_TITLES = {
    "mean_activation": "mean activation",
    "frequency": "firing frequency",
    "specificity": "mean here minus elsewhere",
}
SHOWN_FEATURES_PER_POSITION = 8  # of the top K, in the per-position table
MAX_FEATURE_OPTIONS = 16_384  # a wider SAE offers the summary's features only
TRAINING_MESSAGE = "features_training_message"  # session state: (kind, text) of the last launch


@dataclass(frozen=True)
class FeatureRuns:
    """The healthy feature runs of a store, newest first, and one line per damaged one."""

    frame: pd.DataFrame
    damaged: tuple[str, ...]


def feature_runs(view: StoreView) -> FeatureRuns:
    """Healthy feature runs (one row each, newest first) and why the others were left out."""
    shelf = view.store.features
    damaged = tuple(public_text(f"{d.folder}: {d.reason}") for d in shelf.damaged())
    rows = [
        {
            "feature_run_id": m.feature_run_id,
            "name": m.name,
            "model": public_text(m.model),
            "sae": m.sae if m.sae_source != "folder" else m.sae_id,
            "sae_source": m.sae_source,
            "sae_id": m.sae_id,
            "hook": m.hook,
            "layer": m.layer,
            "n_layers": m.n_layers,
            "positions": m.positions,
            "top_k": m.top_k,
            "d_sae": m.d_sae,
            "records": m.n_records,
            "ok": m.n_ok,
            "dataset": m.dataset_name,
            "created_at": m.created_at,
        }  # fmt: skip
        for m in shelf.list()
    ]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["created_at", "feature_run_id"], ascending=False)
    return FeatureRuns(frame.reset_index(drop=True), damaged)


def default_layer(runs: pd.DataFrame) -> int:
    """The layer of the feature run the link names (so the run picker offers it), else the
    newest run's."""
    named = runs[runs["feature_run_id"] == st.query_params.get("feature_run")]
    return int((named if len(named) else runs)["layer"].iloc[0])


def trainable_runs(view: StoreView) -> dict[str, tuple[list[str], list[int]]]:
    """Runs an SAE can be trained on (position `all`), newest first: run id -> (hooks, layers)."""
    manifests = []
    for run_id in view.run_ids:
        try:
            manifests.append(view.store.manifest(run_id))
        except StoreError:
            continue
    manifests.sort(key=lambda m: (m.created_at, m.run_id), reverse=True)
    return {m.run_id: (list(m.hooks), list(m.layers)) for m in manifests if "all" in m.positions}


def scopes_for(positions: str) -> list[str]:
    """The scopes a feature run can summarise: all four for an `all` run."""
    return list(SCOPES) if positions == "all" else ["last_prompt"]


def feature_options(d_sae: int, summary: pd.DataFrame) -> list[int]:
    """Every feature of the SAE (a narrow one), else the features the summary lists."""
    if d_sae <= MAX_FEATURE_OPTIONS:
        return list(range(d_sae))
    return sorted({int(f) for f in summary["feature"]})


@st.cache_data(show_spinner=False, max_entries=64)
def label_features(path: str, run_id: str, stamp: str, scope: str, top: int, order: str):
    return store_at(path).features.label_features(run_id, scope=scope, top=top, order=order)


@st.cache_data(show_spinner=False, max_entries=64)
def feature_labels(path: str, run_id: str, stamp: str, feature: int, scope: str):
    return store_at(path).features.feature_labels(run_id, feature, scope=scope)


@st.cache_data(show_spinner=False, max_entries=64)
def feature_samples(path: str, run_id: str, stamp: str, feature: int, scope: str, n: int):
    return store_at(path).features.feature_samples(run_id, feature, scope=scope, n=n)


@st.cache_data(show_spinner=False, max_entries=16)
def samples(path: str, run_id: str, stamp: str) -> pd.DataFrame:
    return store_at(path).features.samples(run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def sample_positions(path: str, run_id: str, stamp: str, sample_idx: int) -> pd.DataFrame:
    """One record's positions with its top features as text ("12: 3.41, 7: 1.02, ...")."""
    frame = store_at(path).features.sample_positions(run_id, sample_idx)
    listed = [
        ", ".join(f"{int(i)}: {float(v):.2f}" for i, v in
                  list(zip(ids, values, strict=True))[:SHOWN_FEATURES_PER_POSITION])
        if not _missing(ids) else ""
        for ids, values in zip(frame["feature_ids"], frame["activations"], strict=True)
    ]  # fmt: skip
    return pd.DataFrame(
        {"position": frame["token_idx"], "token": frame["token"].map(repr),
         "active": frame["n_active"].astype("Int64"), "top features (id: activation)": listed}
    )  # fmt: skip


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def promoted_tokens(path: str, sae_source: str, sae_id: str, feature: int) -> pd.DataFrame:
    """The tokens the feature's decoder direction promotes; StoreError when there are none."""
    if sae_source != "store":
        raise StoreError("promoted tokens are saved for SAEs this tool trained only")
    frame = store_at(path).saes.promoted_tokens(sae_id, feature)
    return frame.assign(token=frame["token"].map(repr))


@st.cache_data(show_spinner=False, max_entries=4)
def export_json(path: str, run_id: str, stamp: str) -> bytes:
    """The dataset file with every record's features (`FeatureShelf.export_json`), as JSON."""
    return dump_json(store_at(path).features.export_json(run_id)).encode()


def highlighted(tokens: pd.DataFrame, peak: float, answer_start: int) -> str:
    """One record as HTML: each token in a span shaded by the feature's activation (÷ `peak`),
    the response after a marker. Every token is escaped; newlines show as ↵."""
    spans = []
    for token_idx, token, activation in tokens[["token_idx", "token", "activation"]].itertuples(
        index=False
    ):
        if token_idx == answer_start:
            spans.append('<span style="color:#888">▍</span>')
        text = html.escape(str(token).replace("\n", "↵"), quote=True).replace("$", "&#36;")
        strength = max(0.0, min(1.0, float(activation) / peak)) if peak > 0 else 0.0
        title = f"{float(activation):.3f}"
        spans.append(
            f'<span title="{title}" style="background:rgba(255,127,14,{strength:.2f});'
            f'white-space:pre">{text}</span>'
        )
    return '<div style="line-height:1.9;font-family:monospace">' + "".join(spans) + "</div>"


def launch_training(path: str, fields: dict) -> None:
    """The Train button's callback (it runs before the script, so no rerun drops the click):
    start a train-sae job and keep one line about it for the page."""
    try:
        job, created = launch(path, TrainSaeSettings(**fields), read_only=read_only())
    except (ValueError, JobError) as exc:
        st.session_state[TRAINING_MESSAGE] = ("error", plain(public_text(exc)))
        return
    what = "Started job" if created else "The same training is already running as job"
    st.session_state[TRAINING_MESSAGE] = (
        "success",
        plain(f"{what} {job.job_id} (SAE {job.run_id})."),
    )
