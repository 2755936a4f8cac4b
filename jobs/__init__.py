"""Jobs: extraction runs started from the app as detached processes, queued, watched, cancelled.

No torch, no streamlit. The app calls

    from jobs import launch, list_jobs, cancel, save_upload, list_uploads
    job, created = launch(store_root, RunSettings(model=..., dataset=...), read_only=False)
    listing = list_jobs(store_root)       # .statuses (newest first), .broken (unreadable records)

Modules: `registry` (launch, reconcile, cancel, list), `worker` (`python -m jobs.worker`, the
detached process behind one job), `records` (the strict job.json format), `processes` (commands,
/proc checks, signals), `paths` (where things live in STORE/jobs and STORE/uploads), `uploads`
(saved datasets and the one dataset check), `logs`, `errors` (JobError, ReadOnlyError).

Nothing on disk is trusted: see jobs.registry for what is checked before a record is acted on.
"""

from jobs.errors import JobError, ReadOnlyError
from jobs.logs import last_error_line, log_tail
from jobs.records import ACTIVE, STATES, BrokenJob, Job, JobListing, JobStatus
from jobs.registry import cancel, launch, list_jobs, read_job, reconcile
from jobs.uploads import UPLOAD_SUFFIXES, list_uploads, sanitize_filename, save_upload

__all__ = [
    "ACTIVE",
    "STATES",
    "UPLOAD_SUFFIXES",
    "BrokenJob",
    "Job",
    "JobError",
    "JobListing",
    "JobStatus",
    "ReadOnlyError",
    "cancel",
    "last_error_line",
    "launch",
    "list_jobs",
    "list_uploads",
    "log_tail",
    "read_job",
    "reconcile",
    "sanitize_filename",
    "save_upload",
]
