"""What the New run page needs beyond widgets: settings, model names, upload checks, job cards.

Light on purpose: it imports `extraction.models` (for the embedded model names: that module
loads neither torch nor transformers at import time) and `extraction.datasets` (standard library
only), never `extraction.runner`, `capture` or `loading`, which pull in torch. The app's settings
come from `settings.env` (the same table and read-only decision as everywhere else); a setting
that is not a positive number raises ValueError naming it, which the page shows.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import streamlit as st

from extraction.datasets import Dataset, parse_dataset
from extraction.models import EMBEDDED
from jobs import BrokenJob, JobStatus, kind_named, sanitize_filename
from jobs.uploads import check_size
from jobs.uploads import upload_label as upload_label  # the pages' import of it stays here
from settings import env
from ui.context import plain

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


def job_card(status: JobStatus, on_cancel) -> None:
    """One job in the jobs panel: state, times, Cancel (calls `on_cancel(job_id)`), progress,
    the run once done, the reason once failed, and the log tail."""
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
        if job.state == "done" and job.kind in OUTPUT_PAGES:
            page, label = OUTPUT_PAGES[job.kind]
            st.page_link(page, label=label.format(_md(job.run_id)))
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
