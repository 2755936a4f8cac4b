"""What the New run page needs beyond widgets: settings, model names, upload checks, job cards
(a finished run links to the analysis pages it fits), and a preview of what a run will hold.

Light on purpose: it imports `extraction.models` (for the embedded model names: that module
loads neither torch nor transformers at import time) and `extraction.datasets` (standard library
only), never `extraction.runner`, `capture` or `loading`, which pull in torch. The app's settings
come from `settings.env` (the same table and read-only decision as everywhere else); a setting
that is not a positive number raises ValueError naming it, which the page shows.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from extraction.datasets import Dataset, DatasetError, load_dataset, parse_dataset
from extraction.models import EMBEDDED
from jobs import BrokenJob, JobStatus, kind_named, sanitize_filename
from jobs.uploads import check_size
from jobs.uploads import upload_label as upload_label  # the pages' import of it stays here
from settings import env
from settings.run import resolve_layers
from store import StoreError
from ui import links
from ui.compute import run_summaries
from ui.context import current_view, plain

MODEL_KINDS = ("Embedded", "Hugging Face id or local folder")
DATASET_KINDS = ("Built-in or uploaded", "Upload a file")
STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/autorenew:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
}
# Where a finished job's output is shown, per job kind (jobs.kinds): (page, what the output is).
OUTPUT_PAGES = {"run": ("pages/runs.py", "Run {} is in the Runs page")}
OUTPUT_PAGES["vectors"] = ("pages/vectors.py", "Vector set {} is on the Vectors page")


def embedded_models() -> tuple[str, ...]:
    return tuple(EMBEDDED)


def max_running() -> int:
    """How many jobs may run at once (ACTX_MAX_JOBS, default 1); later launches queue."""
    return int(env.positive_number("ACTX_MAX_JOBS", int))


def upload_limit_bytes() -> int:
    """Largest accepted upload (ACTX_UPLOAD_MB, in MiB)."""
    return env.upload_limit_bytes()


def check_upload(filename: str, data: bytes, limit: int) -> Dataset:
    """Validate an uploaded dataset before it is stored; errors name the line (DatasetError)."""
    check_size(filename, len(data), limit)
    safe = sanitize_filename(filename)
    return parse_dataset(data, Path(safe).stem, safe)


def _md(text: str) -> str:
    """A value inside Markdown code spans: backticks cannot close the span."""
    return "`" + text.replace("`", "'") + "`"


def describe(status: JobStatus) -> str:
    job = status.job
    values = kind_named(job.kind).describe(job.settings, job.run_id)
    return f"{STATE_ICONS[job.state]} **{job.state}** · " + " · ".join(map(_md, values))


def describe_broken(broken: BrokenJob) -> str:
    """One line of plain text for an unreadable job record (shown with st.text)."""
    return f"{broken.folder}: {broken.reason}"


def timing(status: JobStatus) -> str:
    job = status.job
    parts = [f"queued {datetime.fromtimestamp(job.created_at):%H:%M:%S}"]
    if job.started_at:
        end = job.ended_at or time.time()
        parts.append(f"started {datetime.fromtimestamp(job.started_at):%H:%M:%S}")
        parts.append(f"{end - job.started_at:.0f} s")
    if job.pid:
        parts.append(f"pid {job.child_pid or job.pid}")
    return " · ".join(parts)


def store_runs() -> pd.DataFrame | None:
    """The store's readable runs (summaries by run id): model shapes for the preview, and a
    finished job's links; None when the store cannot be read (the cards link to Runs)."""
    try:
        return run_summaries(current_view()).frame.set_index("run_id")
    except (StoreError, KeyError):  # KeyError: an empty frame has no run_id column
        return None


def output_links(job, runs: pd.DataFrame | None) -> None:
    """Where a finished job's output opens: a run in each analysis page it fits
    (`links.open_in`), else the page of its job kind (`OUTPUT_PAGES`) with the run chosen."""
    if job.kind == "run" and runs is not None and job.run_id in runs.index:
        # The analysis pages it fits; without one, the Runs page (which links Query as well).
        targets = [t for t in links.open_in(runs, job.run_id) if t.analysis]
        for target in targets:
            st.page_link(target.page, label=f"Open run {_md(job.run_id)} in {target.title}",
                         icon=":material/open_in_new:", query_params=target.query)  # fmt: skip
        if targets:
            return
    if job.kind in OUTPUT_PAGES:
        page, label = OUTPUT_PAGES[job.kind]
        query = {"run": job.run_id} if job.kind == "run" else None  # the Runs page's picker
        st.page_link(page, label=label.format(_md(job.run_id)), query_params=query)


def job_card(status: JobStatus, on_cancel, runs: pd.DataFrame | None = None) -> None:
    """One job in the jobs panel: state, times, Cancel (calls `on_cancel(job_id)`), progress,
    links that open its output once done (runs: the store's run summaries, indexed by run id,
    as `links.open_in` takes them), the reason once failed, and the log tail."""
    job = status.job
    with st.container(border=True, key=f"job-{job.job_id}"):
        head, button = st.columns([5, 1])
        head.markdown(describe(status))
        head.caption(timing(status))
        if job.active:
            button.button("Cancel", key=f"cancel-{job.job_id}", on_click=on_cancel,
                          args=(job.job_id,))  # fmt: skip
        if job.state == "running" and status.total:
            done = status.done or 0
            st.progress(done / status.total, text=f"{done} of {status.total} samples")
        elif job.state == "running":
            st.caption("Loading the model ...")
        if job.state == "done":
            output_links(job, runs)
        if job.error and job.state == "failed":
            st.error(plain(job.error))
        with st.expander("Log", expanded=job.state == "running"):
            st.code("\n".join(status.log_tail) or "(empty)", language=None, wrap_lines=True)


def prefill_query(
    model: str, dataset: str, hooks: tuple[str, ...], positions: tuple[str, ...]
) -> dict[str, str | list[str]]:
    """URL query parameters that open the New run page with these settings filled in.

    `dataset` is what the Dataset box lists: a built-in name or an upload's label. The keys are
    the page's widget keys (its widgets are bound to the URL).
    """
    embedded = model in EMBEDDED
    return {
        "model_kind": MODEL_KINDS[0] if embedded else MODEL_KINDS[1],
        ("model_embedded" if embedded else "model_other"): model,
        "dataset_kind": DATASET_KINDS[0],
        "dataset_pick": dataset,
        "hooks": list(hooks),
        "positions": list(positions),
    }


# -- what a run will hold, before it is launched ------------------------------------------------
DTYPE_BYTES = {"float16": 2, "float32": 4}
CHARS_PER_TOKEN = 4  # a rough tokenizer-free guess, only for the per-token ("all") position
MAX_CONFIG_BYTES = 1 << 20  # a model folder's config.json read for its shape


@dataclass(frozen=True)
class DatasetPreview:
    """What a dataset holds: samples, (label, count) most common first, pairs, characters."""

    n_samples: int
    labels: tuple[tuple[str, int], ...]
    n_pairs: int
    n_chars: int


@st.cache_data(show_spinner=False, max_entries=32)
def _preview(dataset: str, _stamp: tuple) -> DatasetPreview:
    data = load_dataset(dataset)
    counts = Counter(sample.label for sample in data.samples)
    return DatasetPreview(
        n_samples=len(data), labels=tuple(counts.most_common()),
        n_pairs=len({s.pair_id for s in data.samples if s.pair_id}),
        n_chars=sum(len(s.text) for s in data.samples),
    )  # fmt: skip


def preview_dataset(dataset: str) -> DatasetPreview:
    """The dataset New run would use (a built-in name or a file path); DatasetError if not
    readable. Cached per file version (its size and time)."""
    try:
        stat = os.stat(dataset)
        stamp = (stat.st_size, stat.st_mtime_ns)
    except (OSError, ValueError):
        stamp = ()  # a built-in name
    return _preview(dataset, stamp)


def model_shape(model: str, runs: pd.DataFrame | None) -> tuple[int, int] | None:
    """(layers, d_model) of a model, without loading it: from a run of it in the store, else
    the config.json of its folder (an embedded model's converted folder, or a local folder)."""
    if runs is not None and len(runs) and model in set(runs["model"]):
        row = runs[runs["model"] == model].iloc[0]
        return int(row["n_layers"]), int(row["d_model"])
    folder = env.model_cache_dir() / model if model in EMBEDDED else Path(model).expanduser()
    try:
        config = folder / "config.json"
        if config.stat().st_size > MAX_CONFIG_BYTES:
            return None
        data = json.loads(config.read_text())
        data = data.get("text_config", data)  # e.g. Gemma 3's multimodal configs nest it
        layers = data.get("num_hidden_layers", data.get("n_layer"))  # n_layer: GPT-2 style
        return int(layers), int(data.get("hidden_size", data.get("n_embd")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def estimate_run_bytes(n_samples: int, n_layers: int, n_hooks: int, positions, d_model: int,
                       dtype: str, n_tokens: int = 0) -> int:  # fmt: skip
    """Bytes of the vectors a run stores: one d_model vector per sample, captured layer, hook
    and pooled position, plus one per token (n_tokens in all) for the position "all"."""
    pooled = sum(1 for p in positions if p != "all")
    rows = n_samples * pooled + (n_tokens if "all" in positions else 0)
    return rows * n_layers * n_hooks * d_model * DTYPE_BYTES[dtype]


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return ""


def show_preview(dataset: str | None, model: str, hooks, positions, layers: str, dtype: str,
                 runs: pd.DataFrame | None) -> None:  # fmt: skip
    """What the run will hold, before Launch: samples, labels with counts, and its size."""
    if not dataset:
        return
    try:
        data = preview_dataset(dataset)
    except DatasetError as exc:
        st.error(plain(f"Not usable: {exc}"))
        return
    labels = ", ".join(f"{plain(label)} ({n})" for label, n in data.labels[:20])
    more = f" and {len(data.labels) - 20} more" if len(data.labels) > 20 else ""
    pairs = f", {data.n_pairs} minimal pairs" if data.n_pairs else ""
    lines = [f"**{data.n_samples} samples**{pairs}; {len(data.labels)} labels: {labels}{more}."]
    shape = model_shape(model, runs) if model else None
    if shape is None:
        lines.append("Size: the model's layers and width are unknown until it loads.")
    elif hooks and positions:
        try:
            n_layers = len(resolve_layers(layers, shape[0]))
        except ValueError as exc:
            lines.append(plain(f"Size: {exc}"))
        else:
            tokens = data.n_chars // CHARS_PER_TOKEN
            size = estimate_run_bytes(data.n_samples, n_layers, len(hooks), positions, shape[1],
                                      dtype, tokens)  # fmt: skip
            guess = ""
            if "all" in positions:
                guess = f" (per-token vectors guessed at {CHARS_PER_TOKEN} characters a token)"
            lines.append(
                f"Size: about **{_size(size)}** of vectors = {data.n_samples} samples x "
                f"{n_layers} of {shape[0]} layers x {len(hooks)} hook(s) x {len(positions)} "
                f"position(s) x d_model {shape[1]} x {DTYPE_BYTES[dtype]} bytes ({dtype}){guess}."
            )
    st.container(border=True, key="run_preview").markdown("  \n".join(lines))
