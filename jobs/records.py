"""Job records (`jobs/<job_id>/job.json`): what is stored, and how strictly it is read back.

A record holds the job's kind (`jobs.kinds`), its validated settings (that kind's settings
record, `to_dict()`), its output id (`run_id`: a run id for a `run` job, the id of what it writes
for other kinds), its state and the process ids with their /proc start times. It holds no
command and no path: the worker rebuilds the command from the settings, and every path comes from
the job id (`jobs.paths`). Reading trusts nothing: the file must be a regular file under 64 KB,
valid UTF-8 JSON, an object with exactly the known keys, each of the right type and range, a
registered kind whose settings class reads the settings strictly (settings of another kind are
refused), the job id equal to its folder name and the output id belonging to it. Anything else
raises ValueError with a short reason, and the registry lists that folder as a `BrokenJob`
instead of failing. A record without `kind` was written before there were kinds: a `run` job.

Caveat: a valid record can still be planted. The registry checks what a record claims against
what it can derive itself (a live process's start time and command line) before acting on it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from jobs.kinds import kind_named
from jobs.paths import record_path, run_belongs_to_job, validate_job_id
from settings.run import validate_run_id
from store.atomic import read_regular

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
MAX_RECORD_BYTES = 64 * 1024
MAX_ERROR_CHARS = 2000
MAX_TIME = 1e11  # seconds since 1970: year 5138; anything later is not a time we wrote
MAX_PID = 2**31 - 1


def _time(kind: str, value: object, optional: bool) -> None:
    if value is None and optional:
        return
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= MAX_TIME:
        raise ValueError(f"{kind} {value!r:.40} is not a time")


def _int(kind: str, value: object, low: int, high: int) -> None:
    if value is not None and (type(value) is not int or not low <= value <= high):
        raise ValueError(f"{kind} {value!r:.40} is not a whole number in {low}..{high}")


@dataclass(frozen=True)
class Job:
    """One job. Constructing it validates every field (ValueError naming the bad one)."""

    job_id: str
    run_id: str  # the output's id (every kind's ids follow the run id grammar)
    settings: Any  # the settings record of `kind`
    created_at: float
    kind: str = "run"  # a name in jobs.kinds.KINDS
    state: str = "queued"
    started_at: float | None = None
    ended_at: float | None = None
    pid: int | None = None  # the worker: session leader, so also the process group id
    pid_start: int | None = None  # /proc start time of `pid`: without it, never signalled
    child_pid: int | None = None  # the extraction process
    child_start: int | None = None
    returncode: int | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        validate_job_id(self.job_id)
        kind = kind_named(self.kind)
        validate_run_id(self.run_id)
        if not run_belongs_to_job(self.run_id, self.job_id):
            raise ValueError(f"run id {self.run_id!r:.80} does not belong to job {self.job_id}")
        if type(self.settings) is not kind.settings:
            raise ValueError(f"settings of a {kind.name} job must be {kind.settings.__name__}")
        if self.state not in STATES:
            raise ValueError(
                f"unknown job state {self.state!r:.40}; choose from {', '.join(STATES)}"
            )
        _time("created_at", self.created_at, optional=False)
        _time("started_at", self.started_at, optional=True)
        _time("ended_at", self.ended_at, optional=True)
        for kind in ("pid", "child_pid"):
            _int(kind, getattr(self, kind), 1, MAX_PID)
        for kind in ("pid_start", "child_start"):
            _int(kind, getattr(self, kind), 0, 2**63)
        _int("returncode", self.returncode, -(2**31), 2**31)
        if self.error is not None and (
            not isinstance(self.error, str) or len(self.error) > MAX_ERROR_CHARS
        ):
            raise ValueError(f"error must be text of at most {MAX_ERROR_CHARS} characters")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["settings"] = self.settings.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: object, folder: str) -> Job:
        """From a parsed record: exactly the known keys; the job id must be `folder`."""
        if not isinstance(data, dict):
            raise ValueError(f"record is not a JSON object but {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r:.40}")
        missing = [k for k in ("job_id", "run_id", "settings", "created_at") if k not in data]
        if missing:
            raise ValueError(f"missing key {missing[0]!r}")
        if data["job_id"] != folder:
            raise ValueError(f"job id {data['job_id']!r:.80} differs from its folder")
        kwargs = dict(data)
        kind = kind_named(data.get("kind", "run"))  # no kind: written before there were kinds
        kwargs["settings"] = kind.settings.from_dict(data["settings"])
        return cls(**kwargs)


def parse_record(raw: bytes, folder: str) -> Job:
    """A record's bytes -> Job, or ValueError with a short reason (never another exception)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit integer
        raise ValueError(f"not valid JSON ({str(exc)[:120]})") from None
    try:
        return Job.from_dict(data, folder)
    except (TypeError, RecursionError) as exc:
        raise ValueError(f"malformed ({type(exc).__name__})") from None


def read_record(folder: Path) -> Job:
    """Read and validate `folder/job.json`: OSError if it cannot be read, ValueError if bad."""
    return parse_record(read_regular(record_path(folder), MAX_RECORD_BYTES), folder.name)


def write_record(folder: Path, job: Job) -> None:
    """Atomically replace `folder/job.json`. The temporary file is made with O_EXCL under a
    random name, so a planted symlink in the folder cannot redirect the write."""
    data = json.dumps(job.to_dict(), indent=2, sort_keys=True).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=".job.json.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, record_path(folder))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class BrokenJob:
    """A folder in jobs/ that is not a readable job: shown with its reason, otherwise ignored."""

    folder: str  # the entry's name, made printable and cut to 80 characters
    reason: str


@dataclass(frozen=True)
class JobStatus:
    """A job with what the page shows live: samples done of total, and the last log lines."""

    job: Job
    done: int | None = None
    total: int | None = None
    log_tail: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class JobListing:
    """What `list_jobs` returns: readable jobs newest first, and the broken records."""

    statuses: tuple[JobStatus, ...] = ()
    broken: tuple[BrokenJob, ...] = ()


def printable(name: str, limit: int = 80) -> str:
    """A folder name safe to show: control characters escaped, at most `limit` characters."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in name)
    return text if len(text) <= limit else text[: limit - 3] + "..."
