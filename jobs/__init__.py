"""Jobs: `python -m extraction <verb>` started from the app as detached processes, queued,
watched, cancelled.

No torch, no streamlit. The app calls

    from jobs import launch, list_jobs, cancel, save_upload, list_uploads
    job, created = launch(store_root, RunSettings(model=..., dataset=...), read_only=False)
    listing = list_jobs(store_root)       # .statuses (newest first), .broken (unreadable records)

`launch` takes the settings record of any registered job kind; the type of the settings picks
the kind. Modules: `kinds` (the job kinds), `registry` (launch, reconcile, cancel, list), `worker`
(`python -m jobs.worker`, the detached process behind one job), `records` (the strict job.json
format), `processes` (commands, /proc checks, signals), `paths` (where things live in STORE/jobs
and STORE/uploads), `uploads` (saved datasets and the one dataset check), `logs`, `errors`
(JobError, ReadOnlyError).

Nothing on disk is trusted: see jobs.registry for what is checked before a record is acted on.

How to add a job kind: write its settings record (a frozen dataclass that validates in
`__post_init__`, does no I/O, and has `to_dict`, a strict `from_dict` and `argv()`; the helpers
in `settings.records` give the first two), give `python -m extraction` the verb with an option
that takes the output id, and add one `register(JobKind(...))` entry at the end of
`jobs/kinds.py`. Nothing else changes: launch, dedupe, the queue, the worker, process checks,
cancel and the strict record reading all go through the entry. For example, control vectors
computed from a committed run (the verb writes `STORE/vectors/<id>`, committed by a marker):

    @dataclass(frozen=True)
    class VectorSettings:
        run: str
        layers: str = "all"

        def __post_init__(self) -> None:
            validate_run_id(self.run)
            parse_layer_spec(self.layers)

        def to_dict(self) -> dict:
            return settings_to_dict(self)

        @classmethod
        def from_dict(cls, data: object) -> VectorSettings:
            return settings_from_dict(cls, data, "vector")

        def argv(self) -> tuple[str, ...]:
            return (f"--run={self.run}", f"--layers={self.layers}")

    register(JobKind(
        name="vectors", settings=VectorSettings, verb="vectors", output_flag="--vector-id",
        output_base=lambda s: f"vectors-{s.run[:40]}",
        is_committed=store.vectors.is_committed, remove_partial=store.vectors.remove_partial,
        prepare=lambda root, s: replace(s, run=committed_run_input(root, s.run)),
    ))

    launch(store_root, VectorSettings(run="emotions-smollm2-135m-..."), read_only=False)

`prepare` re-checks the inputs against this store at launch and again in the worker (defaults
to none; `resolve_dataset_input` for a `dataset` field, `committed_run_input` for a run id);
`progress` and `describe` are optional (progress bar, job card). A kind's output id is made as
`<output_base(settings)>-<stamp>-<hex>` and tied to its job id; its command is rebuilt by the
worker from the validated settings, never read from a record.
"""

from jobs.errors import JobError, ReadOnlyError
from jobs.kinds import KINDS, JobKind, kind_named, kind_of, register
from jobs.logs import last_error_line, log_tail
from jobs.records import ACTIVE, STATES, BrokenJob, Job, JobListing, JobStatus
from jobs.registry import cancel, launch, list_jobs, read_job, reconcile
from jobs.uploads import UPLOAD_SUFFIXES, list_uploads, sanitize_filename, save_upload

__all__ = [
    "ACTIVE",
    "STATES",
    "UPLOAD_SUFFIXES",
    "KINDS",
    "BrokenJob",
    "Job",
    "JobError",
    "JobKind",
    "JobListing",
    "JobStatus",
    "ReadOnlyError",
    "cancel",
    "kind_named",
    "kind_of",
    "last_error_line",
    "launch",
    "list_jobs",
    "list_uploads",
    "log_tail",
    "read_job",
    "reconcile",
    "register",
    "sanitize_filename",
    "save_upload",
]
