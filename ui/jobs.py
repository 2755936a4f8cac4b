"""What the New run page needs beyond widgets: settings, model names, upload checks, job labels.

Light on purpose: it imports `extraction.datasets` (standard library only) but never
`extraction.models`, `runner`, `capture` or `loading`, which pull in torch. The embedded model
names are therefore copied here; tests/ui/test_new_run.py keeps them equal to
`extraction.models.EMBEDDED`.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from extraction.datasets import Dataset, parse_dataset
from store.errors import StoreError
from store.jobs import DEFAULT_UPLOAD_BYTES, JobStatus, sanitize_filename
from ui.context import setting

EMBEDDED_MODELS = ("smollm2-135m", "gemma3-270m")
MODEL_KINDS = ("Embedded", "Hugging Face id or local folder")
DATASET_KINDS = ("Built-in or uploaded", "Upload a file")
STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/autorenew:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
}


def _positive(key: str, env: str, default: str, kind=int):
    raw = setting(key, env, default)
    try:
        value = kind(raw)
    except ValueError:
        raise StoreError(f"setting {env}={raw!r} is not a number") from None
    if value <= 0:
        raise StoreError(f"setting {env}={raw!r} must be > 0")
    return value


def max_running() -> int:
    """How many jobs may run at once (ACTX_MAX_JOBS, default 1); later launches queue."""
    return _positive("max_jobs", "ACTX_MAX_JOBS", "1")


def upload_limit_bytes() -> int:
    """Largest accepted upload (ACTX_UPLOAD_MB, default 20 MB)."""
    default = str(DEFAULT_UPLOAD_BYTES // (1024 * 1024))
    return int(_positive("upload_mb", "ACTX_UPLOAD_MB", default, float) * 1024 * 1024)


def check_upload(filename: str, data: bytes, limit: int) -> Dataset:
    """Validate an uploaded dataset before it is stored; errors name the line (DatasetError)."""
    if len(data) > limit:
        raise StoreError(
            f"file {filename!r} is {len(data) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB"
        )
    safe = sanitize_filename(filename)
    return parse_dataset(data, Path(safe).stem, safe)


def upload_label(path: Path) -> str:
    """`<sha12>-name.jsonl` -> `name.jsonl (uploaded)`."""
    return f"{path.name.split('-', 1)[-1]} (uploaded)"


def describe(status: JobStatus) -> str:
    job = status.job
    name = job.spec.name or job.run_id
    path = Path(job.spec.dataset)
    dataset = upload_label(path) if path.suffix else job.spec.dataset
    return f"{STATE_ICONS[job.state]} **{job.state}** · `{name}` · {job.spec.model} · {dataset}"


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


def prefill_query(
    model: str, dataset: str, hooks: tuple[str, ...], positions: tuple[str, ...]
) -> dict[str, str | list[str]]:
    """URL query parameters that open the New run page with these settings filled in.

    `dataset` is what the Dataset box lists: a built-in name or an upload's label. The keys are
    the page's widget keys (its widgets are bound to the URL).
    """
    embedded = model in EMBEDDED_MODELS
    return {
        "model_kind": MODEL_KINDS[0] if embedded else MODEL_KINDS[1],
        ("model_embedded" if embedded else "model_other"): model,
        "dataset_kind": DATASET_KINDS[0],
        "dataset_pick": dataset,
        "hooks": list(hooks),
        "positions": list(positions),
    }
