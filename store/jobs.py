"""Job registry: extraction runs started from the app, as detached processes, kept in STORE/jobs/.

A job is one `python -m extraction run ...` with a run id chosen up front. Its record
(`jobs/<job_id>/job.json`, rewritten atomically) holds the state (queued, running, done, failed,
cancelled), the process ids, times, the exact command, the run id and, when it failed, the one
line that says why. Progress is read from the run's own `progress.json`; the log is
`jobs/<job_id>/log.txt`.

Who starts a queued job: its own worker. `launch` spawns `python -m store.jobworker` in a new
session (so it and the extraction it starts form one process group, detached from the app: they
survive page reloads, closed browsers and app restarts). The worker waits until fewer than
`max_running` jobs run and no older job is queued, marks itself running, starts the extraction as
its child, waits for it, and records the outcome. So queued jobs start without any browser open and
without a long-lived supervisor; the worker costs one sleeping Python process (no torch) per job.

Concurrency: every state change happens under one registry lock (`jobs/.lock`, fcntl.flock, which
excludes threads of one process as well as other processes). `launch` looks for a queued or
running job with the same settings fingerprint under that lock, so two sessions clicking Launch at
once get one job. Each transition checks the state it expects (a worker does not overwrite a
cancel).

Dead processes: `reconcile` (run by every `list_jobs`, `launch` and waiting worker) marks an active
job whose worker is gone (pid missing, a zombie, or reused: the /proc start time differs) as failed
with the last error line of its log, kills a leftover extraction child, and removes the partial run.

Read-only mode: `launch`, `cancel` and `save_upload` refuse when passed `read_only=True` or when
ACTX_READ_ONLY is set in the environment, whatever the caller passed. Caveat: Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from store import layout
from store.atomic import atomic_write_bytes, atomic_write_text
from store.errors import StoreError
from store.manifest import HOOKS, POSITIONS, STORAGE_DTYPES, validate_run_id
from store.writer import is_locked

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
READ_ONLY_ENV = "ACTX_READ_ONLY"
DEFAULT_MAX_RUNNING = 1
DEFAULT_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv")  # what extraction.datasets reads
REPO_ROOT = Path(__file__).resolve().parent.parent  # `python -m extraction` runs from here
_LAYERS = re.compile(r"^(all|-?\d+(-\d+)?(,-?\d+(-\d+)?)*)$")
_BUILTIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


class ReadOnlyError(StoreError):
    """A write was attempted while the app is in read-only (hosted) mode."""


def env_read_only() -> bool:
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _refuse_if_read_only(read_only: bool, action: str) -> None:
    if read_only or env_read_only():
        raise ReadOnlyError(f"read-only mode: cannot {action}")


def _check_text(kind: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind} {value!r} is empty")
    if len(value) > 500 or any(ord(c) < 32 for c in value):
        raise ValueError(f"{kind} {value[:80]!r} is too long or has control characters")


@dataclass(frozen=True)
class JobSpec:
    """What to extract: the subset of `python -m extraction run` options the app offers."""

    model: str  # embedded name, Hugging Face id or local folder
    dataset: str  # built-in dataset name, or the path of a file in STORE/uploads
    hooks: tuple[str, ...] = ("resid_post",)
    layers: str = "all"
    positions: tuple[str, ...] = ("last", "mean")
    dtype: str = "float16"
    name: str | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        _check_text("model", self.model)
        _check_text("dataset", self.dataset)
        for kind, values, allowed in (
            ("hooks", self.hooks, HOOKS),
            ("positions", self.positions, POSITIONS),
        ):
            if not values:
                raise ValueError(f"{kind} must not be empty")
            for value in values:
                if value not in allowed:
                    raise ValueError(
                        f"unknown {kind[:-1]} {value!r}; choose from {', '.join(allowed)}"
                    )
        if not _LAYERS.match(self.layers.replace(" ", "")):
            raise ValueError(f"bad layers {self.layers!r}; use all, 5, 0,4,8, 10-20 or -1")
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from float16, float32")
        if self.name is not None:
            validate_run_id(self.name)
        if not 1 <= self.batch_size <= 1024:
            raise ValueError(f"batch size {self.batch_size} must be 1..1024")

    def argv(self, store_root: Path, run_id: str) -> tuple[str, ...]:
        # `--opt=value`: a value that starts with '-' (layers -1) is never read as an option.
        args = [
            sys.executable, "-m", "extraction", "run",
            f"--model={self.model}", f"--dataset={self.dataset}",
            f"--hooks={','.join(self.hooks)}", f"--layers={self.layers.replace(' ', '')}",
            f"--positions={','.join(self.positions)}", f"--dtype={self.dtype}",
            f"--batch-size={self.batch_size}", f"--store={store_root}", f"--run-id={run_id}",
            "--no-progress",
        ]  # fmt: skip
        if self.name:
            args.append(f"--name={self.name}")
        return tuple(args)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        data = dict(data)
        for key in ("hooks", "positions"):
            data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class Job:
    """One job record, as stored in `jobs/<job_id>/job.json`."""

    job_id: str
    spec: JobSpec
    fingerprint: str
    run_id: str
    command: tuple[str, ...]
    log_path: str
    created_at: float
    state: str = "queued"
    max_running: int = DEFAULT_MAX_RUNNING
    started_at: float | None = None
    ended_at: float | None = None
    pid: int | None = None  # the worker: session leader, so also the process group id
    pid_start: int | None = None  # /proc start time of `pid`: guards against pid reuse
    child_pid: int | None = None  # the extraction process
    child_start: int | None = None
    returncode: int | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        validate_run_id(self.job_id)
        validate_run_id(self.run_id)
        if self.state not in STATES:
            raise ValueError(f"unknown job state {self.state!r}; choose from {', '.join(STATES)}")
        if self.max_running < 1:
            raise ValueError(f"max running jobs {self.max_running} must be >= 1")
        if not self.command:
            raise ValueError("command must not be empty")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Job:
        data = json.loads(text)
        data["spec"] = JobSpec.from_dict(data["spec"])
        data["command"] = tuple(data["command"])
        return cls(**data)


@dataclass(frozen=True)
class JobStatus:
    """A job with what the page shows live: samples done of total, and the last log lines."""

    job: Job
    done: int | None = None
    total: int | None = None
    log_tail: tuple[str, ...] = field(default_factory=tuple)


# -- files and locking ---------------------------------------------------------------------------
@contextlib.contextmanager
def _registry_lock(root: Path) -> Iterator[None]:
    layout.jobs_dir(root).mkdir(parents=True, exist_ok=True)
    with open(layout.jobs_lock_path(root), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(root: Path, job: Job) -> None:
    atomic_write_text(layout.job_record_path(layout.job_dir(root, job.job_id)), job.to_json())


def read_job(root: str | Path, job_id: str) -> Job:
    path = layout.job_record_path(layout.job_dir(Path(root), job_id))
    try:
        return Job.from_json(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"no job {job_id!r} in {root}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"job record {path} is unreadable: {exc}") from exc


def _all_jobs(root: Path) -> list[Job]:
    folder = layout.jobs_dir(root)
    if not folder.is_dir():
        return []
    jobs = []
    for entry in folder.iterdir():
        if layout.job_record_path(entry).is_file():
            with contextlib.suppress(StoreError):  # a foreign or broken folder is not a job
                jobs.append(read_job(root, entry.name))
    return sorted(jobs, key=lambda j: (j.created_at, j.job_id))


# -- processes -----------------------------------------------------------------------------------
def _proc_start(pid: int | None) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process; None if there is none."""
    if not pid:
        return None
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child (else it stays a zombie)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces and ')'
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: int | None, start: int | None) -> bool:
    now = _proc_start(pid)
    return now is not None and (start is None or now == start)


def _kill_tree(job: Job, timeout: float) -> None:
    """SIGTERM the job's process group, then SIGKILL what is left after `timeout` seconds."""
    recorded = ((job.pid, job.pid_start), (job.child_pid, job.child_start))
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        # Only processes whose start time matches the record: a reused pid is left alone.
        live = [(pid, start) for pid, start in recorded if _alive(pid, start)]
        if not live:
            return
        # The worker leads its own session, so its pid is the group id, which the extraction
        # child (and anything it spawned) inherits: one killpg reaches the whole tree.
        for target in (job.pid, *(pid for pid, _ in live)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if target == job.pid:
                    os.killpg(target, sig)
                else:
                    os.kill(target, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p, s) for p, s in live):
            time.sleep(0.05)


def _remove_partial_run(root: Path, run_id: str, wait: float = 5.0) -> bool:
    """Delete the job's run folder unless it committed. Waits for its writer lock to go."""
    run = layout.run_dir(root, run_id)
    if not run.exists() or layout.is_committed(run):
        return False
    deadline = time.monotonic() + wait
    while is_locked(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_locked(run):
        return False
    shutil.rmtree(run, ignore_errors=True)
    return True


# -- logs ----------------------------------------------------------------------------------------
def log_tail(path: str | Path, lines: int = 12, max_bytes: int = 16384) -> tuple[str, ...]:
    """The last lines of a log; progress bars' carriage returns count as line ends."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ()
    text = data.decode("utf-8", errors="replace")
    rows = [row.rstrip() for row in re.split(r"[\r\n]+", text) if row.strip()]
    return tuple(rows[-lines:])


def last_error_line(path: str | Path) -> str | None:
    """The line that says why a job failed: `error: ...`, a traceback's last line, or the last."""
    rows = log_tail(path, lines=200, max_bytes=65536)
    for row in reversed(rows):
        if row.startswith("error:"):
            return row
    for row in reversed(rows):
        if _TRACEBACK_END.match(row):
            return row
    return rows[-1] if rows else None


# -- registry ------------------------------------------------------------------------------------
def _finish_dead(root: Path, job: Job) -> Job:
    """The worker is gone without recording an outcome: clean up and say what is known."""
    _kill_tree(job, timeout=2.0)  # a child may outlive a worker killed alone
    run = layout.run_dir(root, job.run_id)
    if job.state == "running" and layout.is_committed(run):
        return replace(job, state="done", ended_at=time.time())
    _remove_partial_run(root, job.run_id)
    why = last_error_line(job.log_path)
    where = "before it started" if job.state == "queued" else "without recording an exit"
    message = f"the job's process died {where}" + (f"; last log line: {why}" if why else "")
    return replace(job, state="failed", ended_at=time.time(), error=message)


def _reconcile_locked(root: Path) -> list[Job]:
    jobs = _all_jobs(root)
    for index, job in enumerate(jobs):
        if job.active and job.pid is not None and not _alive(job.pid, job.pid_start):
            jobs[index] = _finish_dead(root, job)
            _write(root, jobs[index])
    return jobs


def reconcile(root: str | Path) -> list[Job]:
    """Mark jobs whose processes died without a word as failed; return every job, oldest first."""
    root = Path(root)
    with _registry_lock(root):
        return _reconcile_locked(root)


def _fingerprint(spec: JobSpec) -> str:
    fields = asdict(spec)
    dataset = Path(spec.dataset)
    if dataset.is_file():  # an upload: its bytes, not just its name
        fields["dataset_sha256"] = hashlib.sha256(dataset.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _check_dataset(root: Path, dataset: str) -> None:
    """A built-in name, or a file inside STORE/uploads: no widget or URL can point elsewhere."""
    if _BUILTIN_NAME.match(dataset):
        return
    uploads = layout.uploads_dir(root).resolve()
    path = Path(dataset).resolve()
    if not path.is_relative_to(uploads) or not path.is_file():
        raise StoreError(
            f"dataset {dataset!r} is neither a built-in name nor an uploaded file in {uploads}"
        )


def _safe_base(text: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return base[:80] or "run"


def _new_ids(spec: JobSpec) -> tuple[str, str]:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    token = os.urandom(3).hex()
    model = Path(spec.model.rstrip("/")).name
    base = spec.name or _safe_base(f"{Path(spec.dataset).stem.split('-', 1)[-1]}-{model}")
    return f"job-{stamp}-{token}", validate_run_id(f"{base}-{stamp}-{token}"[:128])


def launch(
    root: str | Path,
    spec: JobSpec,
    *,
    read_only: bool,
    max_running: int = DEFAULT_MAX_RUNNING,
) -> tuple[Job, bool]:
    """Queue `spec` and spawn its worker; returns (job, created). An active job with the same
    settings is returned instead of a new one (created False)."""
    _refuse_if_read_only(read_only, "launch a run")
    root = Path(root).resolve()
    layout.runs_dir(root).mkdir(parents=True, exist_ok=True)
    _check_dataset(root, spec.dataset)
    fingerprint = _fingerprint(spec)
    with _registry_lock(root):
        for job in _reconcile_locked(root):
            if job.active and job.fingerprint == fingerprint:
                return job, False
        job_id, run_id = _new_ids(spec)
        folder = layout.job_dir(root, job_id)
        folder.mkdir(parents=True)
        log = layout.job_log_path(folder)
        job = Job(
            job_id=job_id,
            spec=spec,
            fingerprint=fingerprint,
            run_id=run_id,
            command=spec.argv(root, run_id),
            log_path=str(log),
            created_at=time.time(),
            max_running=max_running,
        )
        _write(root, job)
        with open(log, "ab") as handle:
            worker = subprocess.Popen(
                [sys.executable, "-m", "store.jobworker", "--store", str(root), "--job", job_id],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: cancel kills it all, reloads don't
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        job = replace(job, pid=worker.pid, pid_start=_proc_start(worker.pid))
        _write(root, job)
        return job, True


def run_worker(root: str | Path, job_id: str, poll: float = 0.5) -> int:
    """The body of `python -m store.jobworker`: wait for a slot, run the extraction, record it."""
    root = Path(root)
    while True:
        with _registry_lock(root):
            jobs = _reconcile_locked(root)
            me = next((j for j in jobs if j.job_id == job_id), None)
            if me is None or me.state != "queued":
                return 0  # cancelled (or finished) while waiting
            running = sum(j.state == "running" for j in jobs)
            ahead = [j for j in jobs if j.state == "queued" and j.job_id != job_id][:1]
            first = not ahead or (ahead[0].created_at, ahead[0].job_id) > (me.created_at, job_id)
            if running < me.max_running and first:
                print(f"[job] starting: {' '.join(me.command[1:])}", flush=True)
                child = subprocess.Popen(me.command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
                me = replace(
                    me,
                    state="running",
                    started_at=time.time(),
                    child_pid=child.pid,
                    child_start=_proc_start(child.pid),
                )
                _write(root, me)
                break
        time.sleep(poll)
    returncode = child.wait()
    with _registry_lock(root):
        me = read_job(root, job_id)
        if me.state != "running":
            return returncode  # cancelled meanwhile: cancel owns the outcome
        committed = layout.is_committed(layout.run_dir(root, me.run_id))
        if returncode == 0 and committed:
            me = replace(me, state="done", ended_at=time.time(), returncode=0)
        else:
            _remove_partial_run(root, me.run_id)
            why = last_error_line(me.log_path) or f"exited with status {returncode}"
            me = replace(me, state="failed", ended_at=time.time(), returncode=returncode, error=why)
        _write(root, me)
    print(f"[job] {me.state}", flush=True)
    return returncode


def cancel(root: str | Path, job_id: str, *, read_only: bool, timeout: float = 10.0) -> Job:
    """Stop a queued or running job: kill its whole process tree, remove the partial run."""
    _refuse_if_read_only(read_only, "cancel a job")
    root = Path(root).resolve()
    with _registry_lock(root):
        job = read_job(root, job_id)
        if not job.active:
            return job
        # Recorded first, so neither the worker nor a reconcile writes another outcome.
        job = replace(job, state="cancelled", ended_at=time.time(), error="cancelled")
        _write(root, job)
    _kill_tree(job, timeout)
    with _registry_lock(root):
        if layout.is_committed(layout.run_dir(root, job.run_id)):
            # It finished before the signal landed: keep the run, say so.
            job = replace(job, state="done", error=None)
        else:
            _remove_partial_run(root, job.run_id)
        _write(root, job)
    return job


def list_jobs(root: str | Path, tail_lines: int = 8) -> list[JobStatus]:
    """Every job, newest first, with live progress and its log tail (reconciles first)."""
    root = Path(root).resolve()
    statuses = []
    for job in reversed(reconcile(root)):
        done = total = None
        progress = layout.progress_path(layout.run_dir(root, job.run_id))
        with contextlib.suppress(OSError, ValueError):
            payload = json.loads(progress.read_text())
            done, total = int(payload["done"]), int(payload["total"])
        statuses.append(JobStatus(job, done, total, log_tail(job.log_path, tail_lines)))
    return statuses


# -- uploads -------------------------------------------------------------------------------------
def sanitize_filename(name: str) -> str:
    """A safe single file name: no folders, only [A-Za-z0-9._-], a dataset suffix, <= 100 chars."""
    base = re.split(r"[\\/]", str(name))[-1]
    stem, dot, suffix = base.rpartition(".")
    suffix = f".{suffix.lower()}" if dot else ""
    if suffix not in UPLOAD_SUFFIXES:
        raise StoreError(f"file {name!r} is not a dataset: use one of {', '.join(UPLOAD_SUFFIXES)}")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:90] or "dataset"
    return stem + suffix


def save_upload(
    root: str | Path,
    filename: str,
    data: bytes,
    *,
    read_only: bool,
    max_bytes: int = DEFAULT_UPLOAD_BYTES,
) -> Path:
    """Store uploaded bytes as STORE/uploads/<sha12>-<safe name>; validate the contents first."""
    _refuse_if_read_only(read_only, "upload a dataset")
    if len(data) > max_bytes:
        raise StoreError(
            f"file {filename!r} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB"
        )
    safe = sanitize_filename(filename)
    folder = layout.uploads_dir(Path(root).resolve())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{safe}"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


def list_uploads(root: str | Path) -> list[Path]:
    folder = layout.uploads_dir(Path(root).resolve())
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix in UPLOAD_SUFFIXES),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
