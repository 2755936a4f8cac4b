"""Where the job registry lives inside a store, and how its files are read without trusting them.

    STORE/
      jobs/
        .lock                registry lock (fcntl): every state change holds it
        <job_id>/job.json    one job record, rewritten atomically on every state change
        <job_id>/log.txt     stdout and stderr of the job's worker and extraction
      uploads/<sha12>-<name> datasets uploaded through the app (content-addressed)

Only `jobs/` builds these paths (`store/` knows `runs/`). Every path of a job is derived from its
job id, which must look like one we make (`job-<UTC stamp>-<6 hex>`); nothing a record says
(a log path, a command) is ever used as a path. Files are opened with O_NOFOLLOW and O_NONBLOCK
and must be regular files: a planted symlink (`log.txt -> /etc/passwd`) or FIFO is refused,
not read, and reads are bounded in size.
"""

from __future__ import annotations

import re
from pathlib import Path

from store.fs import is_uri


def local_store_root(root: str | Path) -> Path:
    """The store folder a job layer call works in; JobError for a store on object storage
    (jobs, uploads and steering requests live in a local store's folder, with fcntl locks)."""
    from jobs.errors import JobError

    if is_uri(root):
        raise JobError(
            "this store is on object storage: the app starts no jobs in it; run the command "
            "line (python -m extraction ... --store <the store's URI>) and the result shows up here"
        )
    return Path(root).resolve()


JOB_ID = re.compile(r"^job-\d{8}-\d{6}-[0-9a-f]{6}$")
_STAMP_TOKEN = re.compile(r"-(\d{8}-\d{6}-[0-9a-f]{6})$")


def validate_job_id(job_id: object) -> str:
    """Return `job_id` if it is one of ours (`job-YYYYmmdd-HHMMSS-xxxxxx`), else ValueError."""
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        shown = job_id[:80] if isinstance(job_id, str) else job_id
        raise ValueError(f"job id {shown!r} is not valid: expected job-YYYYmmdd-HHMMSS-xxxxxx")
    return job_id


def job_id_for(run_id: str) -> str:
    """The job id that goes with a new run id (`<base>-<stamp>-<hex>`): both share the tail, so
    a record's run id can be checked to belong to its job folder."""
    match = _STAMP_TOKEN.search(run_id)
    if not match:
        raise ValueError(f"run id {run_id[:80]!r} has no <stamp>-<hex> tail")
    return f"job-{match[1]}"


def run_belongs_to_job(run_id: str, job_id: str) -> bool:
    return run_id.endswith(job_id[len("job") :])


def jobs_dir(root: Path) -> Path:
    return root / "jobs"


def lock_path(root: Path) -> Path:
    return jobs_dir(root) / ".lock"


def job_dir(root: Path, job_id: str) -> Path:
    return jobs_dir(root) / validate_job_id(job_id)


def record_path(folder: Path) -> Path:
    return folder / "job.json"


def log_path(folder: Path) -> Path:
    return folder / "log.txt"


def uploads_dir(root: Path) -> Path:
    return root / "uploads"
