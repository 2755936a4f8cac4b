"""Job registry: launch, list, reconcile and cancel the app's jobs, kept in STORE/jobs/.

A job is one `python -m extraction <verb>` of a registered kind (jobs.kinds: `run` is an
extraction run) with its output id chosen up front, executed by its own detached worker
(`python -m jobs.worker`, see jobs.worker): the worker waits until fewer than `max_running` jobs
run and no older queued job has a live worker, marks itself running, starts the extraction as its
child and records the outcome. So queued jobs start without any browser open and without a
long-lived supervisor; a worker costs one sleeping Python process (no torch).

Concurrency: every state change happens under one registry lock (`jobs/.lock`, fcntl.flock, which
excludes threads of one process as well as other processes). `launch` looks for an active job
of the same kind with equal settings under that lock, so two sessions clicking Launch at once get
one job. Each
transition checks the state it expects (a worker does not overwrite a cancel).

Trust: a store is copied, synced and shared, so every record is read strictly (jobs.records) and a
folder that does not read is listed as broken, never raised and never counted in the queue. What
a record claims is checked before it is acted on: processes are signalled only when verified
(jobs.processes), the inputs (a dataset, a run) are re-checked by the kind's `prepare` and the
command rebuilt by the worker, paths come from the job id. `reconcile` (run by every
`list_jobs`, `launch` and waiting worker) closes active jobs that cannot go on:

* a recorded worker that is not verifiably alive (gone, a zombie, a reused pid, no start time):
  failed at once, with the last error line of its log; a leftover verified extraction is killed
  and the partial output of a job that was running is removed (its kind's `remove_partial`);
* a queued job with no worker at all (its launch died half-way): failed once it is older than
  ACTX_QUEUE_HOURS (settings.env, default 24). Until then it is shown, but it never holds up jobs
  behind it.

Read-only mode: `launch` and `cancel` refuse (ReadOnlyError) when passed `read_only=True` or when
`settings.env.read_only()` says so; `list_jobs` then writes nothing. Caveat: Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from jobs import paths, processes
from jobs.errors import JobError, refuse_if_read_only
from jobs.kinds import kind_named, kind_of
from jobs.logs import last_error_line, log_tail
from jobs.paths import local_store_root
from jobs.records import (
    MAX_ERROR_CHARS,
    BrokenJob,
    Job,
    JobListing,
    JobStatus,
    printable,
    read_record,
    write_record,
)
from settings import env
from settings.run import new_run_id
from store import StoreError, open_store

log = logging.getLogger("activation_explorer.jobs")
DEFAULT_MAX_RUNNING = 1


# -- files and locking ---------------------------------------------------------------------------
@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the registry lock of `root` (creating jobs/ and its lock file if needed)."""
    try:
        paths.jobs_dir(root).mkdir(parents=True, exist_ok=True)
        fd = os.open(
            paths.lock_path(root), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
    except OSError as exc:
        raise JobError(f"cannot open the job registry: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_job(root: Path, job: Job) -> None:
    write_record(paths.job_dir(root, job.job_id), job)


def _scan(root: Path) -> tuple[list[Job], list[BrokenJob]]:
    """Every readable job (oldest first) and every entry of jobs/ that is not one."""
    folder = paths.jobs_dir(root)
    jobs: list[Job] = []
    broken: list[BrokenJob] = []
    try:
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return [], [BrokenJob("jobs", "the jobs folder cannot be listed")]
    for entry in entries:
        if entry.name == paths.lock_path(root).name:
            continue
        reason = None
        if not paths.JOB_ID.match(entry.name):
            reason = "the folder name is not a job id"
        elif entry.is_symlink():
            reason = "a symbolic link, not a job folder"
        elif not entry.is_dir():
            reason = "not a folder"
        else:
            try:
                jobs.append(read_record(entry))
            except FileNotFoundError:
                reason = "no job.json"
            except OSError as exc:
                reason = f"job.json cannot be read ({exc.strerror or type(exc).__name__})"
            except ValueError as exc:
                reason = f"job.json is malformed: {exc}"
        if reason:
            broken.append(BrokenJob(printable(entry.name), reason[:300]))
    jobs.sort(key=lambda j: (j.created_at, j.job_id))
    return jobs, broken


def read_job(root: str | Path, job_id: str) -> Job:
    """One job by id; JobError if the id is not valid, the job is unknown or its record broken."""
    root = local_store_root(root)
    try:
        folder = paths.job_dir(root, job_id)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    if folder.is_symlink():
        raise JobError(f"job {job_id} is a symbolic link, not a job folder")
    try:
        return read_record(folder)
    except FileNotFoundError:
        raise JobError(f"no job {job_id!r} in this store") from None
    except (OSError, ValueError) as exc:
        raise JobError(f"job record of {job_id} is unreadable: {exc}") from None


# -- closing jobs that cannot go on ---------------------------------------------------------------
def queue_hours() -> float:
    """ACTX_QUEUE_HOURS; a value that is not a positive number falls back to the default."""
    try:
        return float(env.positive_number("ACTX_QUEUE_HOURS", float))
    except ValueError as exc:
        log.warning("%s; using %s", exc, env.BY_NAME["ACTX_QUEUE_HOURS"].default)
        return float(env.BY_NAME["ACTX_QUEUE_HOURS"].default)


def _error(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _log_of(root: Path, job: Job) -> Path:
    return paths.log_path(paths.job_dir(root, job.job_id))


def _close_dead(root: Path, job: Job, what: str, act: bool = True) -> Job:
    """The worker is gone (or was never ours) without recording an outcome: say what is known.

    Only a verified leftover extraction is killed; only a job that was running can have left a
    partial run, so a queued record never removes anything. `act=False` (read-only mode) only
    computes the outcome: nothing is signalled or removed.
    """
    if act:
        processes.stop_job(job, root, timeout=2.0)
    kind = kind_named(job.kind)
    if job.state == "running":
        if kind.is_committed(root, job.run_id):
            return replace(job, state="done", ended_at=time.time())
        if act:
            kind.remove_partial(root, job.run_id)
    why = last_error_line(_log_of(root, job))
    message = what + (f"; last log line: {why}" if why else "")
    return replace(job, state="failed", ended_at=time.time(), error=_error(message))


def _closed(root: Path, job: Job, now: float, max_age: float, act: bool) -> Job | None:
    """The job's new record if it cannot go on, else None."""
    if not job.active:
        return None
    if job.pid is None:
        if job.state == "running":
            return _close_dead(root, job, "the record names no worker process", act)
        age = now - job.created_at
        if age > max_age or age < -3600:  # far in the future: not a time we wrote
            hours = max_age / 3600
            return replace(
                job,
                state="failed",
                ended_at=now,
                error=f"no worker picked this job up within {hours:g} hours",
            )
        return None
    if job.pid_start is None:
        return _close_dead(root, job, "its worker cannot be verified (no start time recorded)", act)
    if not processes.is_worker(job.pid, job.pid_start, root, job.job_id):
        where = "before it started" if job.state == "queued" else "without recording an exit"
        return _close_dead(root, job, f"the job's process died {where}", act)
    return None


def reconcile_locked(root: Path, *, write: bool = True) -> tuple[list[Job], list[BrokenJob]]:
    """`reconcile` for a caller that holds the lock (or, with write=False, writes nothing)."""
    processes.reap()
    jobs, broken = _scan(root)
    now, max_age = time.time(), queue_hours() * 3600
    for index, job in enumerate(jobs):
        closed = _closed(root, job, now, max_age, act=write)
        if closed is None:
            continue
        jobs[index] = closed
        if write:
            try:
                write_job(root, closed)
            except OSError as exc:  # e.g. a store on a read-only disk: shown, not recorded
                log.warning("cannot record the outcome of %s: %s", job.job_id, exc)
    return jobs, broken


def reconcile(root: str | Path) -> list[Job]:
    """Close jobs that cannot go on; return every readable job, oldest first."""
    root = local_store_root(root)
    if not paths.jobs_dir(root).is_dir():
        return []
    if env.read_only():
        return reconcile_locked(root, write=False)[0]
    with locked(root):
        return reconcile_locked(root)[0]


# -- launch and cancel ---------------------------------------------------------------------------
@contextlib.contextmanager
def _as_job_error(action: str) -> Iterator[None]:
    """A failing disk (full, read-only, permissions) becomes one line, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise JobError(f"cannot {action}: {exc.strerror or exc}") from None


def launch(
    root: str | Path,
    settings: object,
    *,
    read_only: bool,
    max_running: int = DEFAULT_MAX_RUNNING,
) -> tuple[Job, bool]:
    """Queue `settings` (the settings record of a job kind: RunSettings for a run) and spawn
    its worker; returns (job, created). An active job of the same kind with the same settings
    is returned instead of a new one (created False). A worker that cannot be started leaves
    its job failed with the reason, and raises JobError."""
    refuse_if_read_only(read_only, "launch a run")
    kind = kind_of(settings)
    if type(max_running) is not int or max_running < 1:
        raise JobError(f"max running jobs {max_running!r:.40} must be a whole number >= 1")
    root = local_store_root(root)
    try:
        open_store(root, create=True, writable=True)
    except StoreError as exc:
        raise JobError(f"cannot use the store folder: {exc}") from None
    kind.prepare(root, settings)  # refused here already, not only when the worker starts
    with locked(root), _as_job_error("launch the job"):
        for job in reconcile_locked(root)[0]:
            if job.active and job.kind == kind.name and job.settings == settings:
                return job, False
        run_id = new_run_id(kind.output_base(settings))
        job = Job(
            job_id=paths.job_id_for(run_id), run_id=run_id, settings=settings,
            created_at=time.time(), kind=kind.name,
        )  # fmt: skip
        folder = paths.job_dir(root, job.job_id)
        folder.mkdir(parents=True)
        write_job(root, job)
        command = processes.worker_command(root, job.job_id, max_running)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            log_fd = os.open(paths.log_path(folder), flags, 0o644)
            try:
                worker = processes.spawn_worker(command, folder, log_fd)
            finally:
                os.close(log_fd)
        except OSError as exc:
            why = f"its worker could not be started: {exc.strerror or exc}"
            write_job(root, replace(job, state="failed", ended_at=time.time(), error=why))
            raise JobError(f"job {job.job_id} failed: {why}") from None
        # Recorded only once /proc shows it as this job's worker (see processes.verified_start):
        # until then any reconcile would take it for dead.
        start = processes.verified_start(
            worker, lambda start: processes.is_worker(worker.pid, start, root, job.job_id)
        )
        job = replace(job, pid=worker.pid, pid_start=start)
        if start is None:  # exited (or never became the worker) before we could verify it
            job = _close_dead(root, job, "its worker exited at once or never started")
        write_job(root, job)
        return job, True


def cancel(root: str | Path, job_id: str, *, read_only: bool, timeout: float = 10.0) -> Job:
    """Stop a queued or running job: kill its verified processes, remove its partial output."""
    refuse_if_read_only(read_only, "cancel a job")
    root = local_store_root(root)
    with locked(root), _as_job_error("cancel the job"):
        job = read_job(root, job_id)
        if not job.active:
            return job
        was_running = job.state == "running"
        # Recorded first, so neither the worker nor a reconcile writes another outcome.
        job = replace(job, state="cancelled", ended_at=time.time(), error="cancelled")
        write_job(root, job)
    processes.stop_job(job, root, timeout)
    kind = kind_named(job.kind)
    with locked(root), _as_job_error("record the cancel"):
        if kind.is_committed(root, job.run_id):
            # It finished before the signal landed: keep the output, say so.
            job = replace(job, state="done", error=None)
            write_job(root, job)
        elif was_running:
            kind.remove_partial(root, job.run_id)
    return job


# -- listing -------------------------------------------------------------------------------------
def list_jobs(root: str | Path, tail_lines: int = 8) -> JobListing:
    """Every readable job, newest first, with live progress and its log tail (reconciled
    first), and every broken record with its reason. In read-only mode nothing is written."""
    root = local_store_root(root)
    if not paths.jobs_dir(root).is_dir():
        return JobListing()
    if env.read_only():
        jobs, broken = reconcile_locked(root, write=False)
    else:
        with locked(root):
            jobs, broken = reconcile_locked(root)
    statuses = []
    for job in reversed(jobs):
        done, total = kind_named(job.kind).progress(root, job.run_id)
        statuses.append(JobStatus(job, done, total, log_tail(_log_of(root, job), tail_lines)))
    return JobListing(tuple(statuses), tuple(broken))
