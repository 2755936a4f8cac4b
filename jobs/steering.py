"""The steering service: the app's requests to generate with a vector set, answered by a worker
process that keeps its model loaded between them (no torch here, nor in the app).

    STORE/steering/
      .lock                     every change of the worker record or the queue holds it
      worker.json               the live worker: pid, /proc start time, started_at
      log.txt                   the worker's output
      requests/<req_id>.json    one validated request (SteerSettings), oldest answered first
      results/<req_id>.json     its outcome: the three answers, or why it failed

    req_id = submit(store_root, SteerSettings(...), read_only=False)
    outcome = poll(store_root, req_id)       # None while pending, then a SteerOutcome

`submit` checks the request (SteerSettings validates every field; the vector set must be a
healthy set of this store), writes it atomically, and makes sure one worker runs: a worker
record is trusted only when its pid is alive with the recorded /proc start time and runs
`-m jobs.steer_worker --store=<this store>` (jobs.processes), otherwise a new worker is started
in its own session (`python -P`, working directory `STORE/steering`). The worker (jobs.steer_worker)
answers requests one at a time, oldest first, and exits after ACTX_STEER_IDLE_S seconds without
one, so trying another strength costs one generation, not a model load.

Trust: request and result files are read strictly (regular files, size-capped, exact keys, every
value validated); a malformed request is answered with a failed result naming the problem, a
malformed result reads as failed. Nothing a file says is executed, opened as a path or signalled:
the worker is found by its verified pid, the vector set by its validated id in this store, the
model by the set's manifest with its weights hash checked (extraction.steering.load_for).
Read-only mode: `submit` refuses (ReadOnlyError); nothing is started.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jobs import processes
from jobs.errors import JobError, refuse_if_read_only
from jobs.logs import last_error_line
from jobs.paths import local_store_root
from settings import env
from settings.vectors import SteerSettings
from store import StoreError, open_store
from store.atomic import atomic_write_text, read_regular

WORKER_MODULE = "jobs.steer_worker"
REQUEST_ID = re.compile(r"^req-\d{8}-\d{6}-[0-9a-f]{6}$")
MAX_REQUEST_BYTES = 64 * 1024
MAX_RESULT_BYTES = 256 * 1024
MAX_ANSWER_CHARS = 20_000
RESULT_MAX_AGE_S = 3600


# -- paths (all derived from the store root and validated ids) -------------------------------------
def steering_dir(root: Path) -> Path:
    return Path(root) / "steering"


def _requests(root: Path) -> Path:
    return steering_dir(root) / "requests"


def _results(root: Path) -> Path:
    return steering_dir(root) / "results"


def worker_record_path(root: Path) -> Path:
    return steering_dir(root) / "worker.json"


def log_path(root: Path) -> Path:
    return steering_dir(root) / "log.txt"


def validate_request_id(req_id: object) -> str:
    if not isinstance(req_id, str) or not REQUEST_ID.match(req_id):
        shown = req_id[:80] if isinstance(req_id, str) else req_id
        raise ValueError(f"request id {shown!r} is not valid: expected req-YYYYmmdd-HHMMSS-xxxxxx")
    return req_id


def request_path(root: Path, req_id: str) -> Path:
    return _requests(root) / f"{validate_request_id(req_id)}.json"


def result_path(root: Path, req_id: str) -> Path:
    return _results(root) / f"{validate_request_id(req_id)}.json"


def new_request_id() -> str:
    return f"req-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.urandom(3).hex()}"


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    folder = steering_dir(root)
    try:
        for sub in (folder, _requests(root), _results(root)):
            sub.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JobError(f"cannot open the steering queue: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_json(path: Path, limit: int) -> object:
    """A small JSON file, read without following links; ValueError/OSError if it is not one."""
    raw = read_regular(path, limit)
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({str(exc)[:100]})") from None


# -- requests --------------------------------------------------------------------------------------
def read_request(root: Path, req_id: str) -> SteerSettings:
    """A request file back as SteerSettings: exactly {"settings": {...}}, every value valid."""
    data = _read_json(request_path(root, req_id), MAX_REQUEST_BYTES)
    if not isinstance(data, dict) or set(data) != {"settings"}:
        raise ValueError("a request holds exactly one key, settings")
    return SteerSettings.from_dict(data["settings"])


def pending_requests(root: Path) -> list[str]:
    """Ids of the requests waiting, oldest first (files whose names are not ids are ignored)."""
    try:
        names = os.listdir(_requests(root))
    except OSError:
        return []
    ids = [n[: -len(".json")] for n in names if n.endswith(".json")]
    return sorted(i for i in ids if REQUEST_ID.match(i))


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SteerOutcome:
    """What a request came to: `answers` (baseline, steered, control) or `error`."""

    state: str  # done or failed
    answers: dict[str, str] = field(default_factory=dict)
    layers: tuple[int, ...] = ()
    strength: float = 0.0
    seconds: float = 0.0
    error: str | None = None

    def __post_init__(self) -> None:
        if self.state not in ("done", "failed"):
            raise ValueError(f"state {self.state!r:.40} is not done or failed")
        if (
            not isinstance(self.answers, dict)
            or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_ANSWER_CHARS
                for k, v in self.answers.items()
            )
            or set(self.answers) - {"baseline", "steered", "control"}
        ):
            raise ValueError("answers must map baseline, steered and control to text")
        if self.state == "done" and len(self.answers) != 3:
            raise ValueError("a done result has all three answers")
        if not isinstance(self.layers, tuple | list) or not all(
            type(x) is int and 0 <= x < 4096 for x in self.layers
        ):
            raise ValueError("layers must be layer numbers")
        object.__setattr__(self, "layers", tuple(self.layers))
        for name in ("strength", "seconds"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        if self.error is not None and (not isinstance(self.error, str) or len(self.error) > 2000):
            raise ValueError("error must be text of at most 2000 characters")

    @classmethod
    def from_dict(cls, data: object) -> SteerOutcome:
        if not isinstance(data, dict):
            raise ValueError("a result is a JSON object")
        known = {"state", "answers", "layers", "strength", "seconds", "error"}
        if set(data) - known:
            raise ValueError(f"unknown key {sorted(set(data) - known)[0]!r:.40}")
        if "state" not in data:
            raise ValueError("a result has a state")
        return cls(**data)


def write_result(root: Path, req_id: str, outcome: SteerOutcome) -> None:
    atomic_write_text(result_path(root, req_id), json.dumps(asdict(outcome)))


def read_result(root: Path, req_id: str) -> SteerOutcome | None:
    """The outcome of a request, None while there is none; a malformed result reads as failed."""
    try:
        data = _read_json(result_path(root, req_id), MAX_RESULT_BYTES)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return SteerOutcome("failed", error=f"the result file is unreadable: {exc}"[:300])
    try:
        return SteerOutcome.from_dict(data)
    except (ValueError, TypeError) as exc:
        return SteerOutcome("failed", error=f"the result file is malformed: {exc}"[:300])


def remove_old_results(root: Path, max_age: float = RESULT_MAX_AGE_S) -> None:
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(_results(root)):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > max_age:
                    os.unlink(entry.path)


# -- the worker process ----------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerRecord:
    pid: int
    pid_start: int
    started_at: float

    @classmethod
    def read(cls, root: Path) -> WorkerRecord | None:
        """The record, or None when absent or malformed (a malformed one is never acted on)."""
        try:
            data = _read_json(worker_record_path(root), 4096)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or set(data) != {"pid", "pid_start", "started_at"}:
            return None
        pid, start, started = data["pid"], data["pid_start"], data["started_at"]
        if type(pid) is not int or not 0 < pid < 2**31 or type(start) is not int or start < 0:
            return None
        if type(started) not in (int, float) or not math.isfinite(started):
            return None
        return cls(pid, start, float(started))

    def write(self, root: Path) -> None:
        atomic_write_text(worker_record_path(root), json.dumps(asdict(self)))


def worker_command(root: Path) -> list[str]:
    return [sys.executable, "-P", "-m", WORKER_MODULE, f"--store={root}"]


def is_worker(record: WorkerRecord | None, root: Path) -> bool:
    """The record names a live process that is this store's steering worker, started when the
    record says (a reused pid or a planted record names no worker)."""
    if record is None or processes.proc_start(record.pid) != record.pid_start:
        return False
    args = processes.proc_cmdline(record.pid)
    runs_module = any(
        a == "-m" and b == WORKER_MODULE for a, b in zip(args, args[1:], strict=False)
    )
    return runs_module and f"--store={root}" in args


def live_worker(root: Path) -> WorkerRecord | None:
    root = local_store_root(root)
    record = WorkerRecord.read(root)
    return record if is_worker(record, root) else None


def _ensure_worker_locked(root: Path) -> WorkerRecord:
    """Under the lock: the verified live worker, or a newly started one."""
    record = WorkerRecord.read(root)
    if is_worker(record, root):
        return record  # type: ignore[return-value]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        log_fd = os.open(log_path(root), flags, 0o644)
        try:
            process = processes.spawn_worker(worker_command(root), steering_dir(root), log_fd)
        finally:
            os.close(log_fd)
    except OSError as exc:
        raise JobError(f"the steering worker could not be started: {exc.strerror or exc}") from None
    # Recorded only once /proc shows it as the worker (processes.verified_start): a poll in
    # between would otherwise find no live worker and fail the request.
    start = processes.verified_start(
        process, lambda start: is_worker(WorkerRecord(process.pid, start, 0.0), root)
    )
    if start is None:
        raise JobError(
            "the steering worker exited at once or never started: "
            + (last_error_line(log_path(root)) or "")
        )
    record = WorkerRecord(process.pid, start, time.time())
    record.write(root)
    return record


def idle_seconds() -> float:
    try:
        return float(env.positive_number("ACTX_STEER_IDLE_S", float))
    except ValueError:
        return float(env.BY_NAME["ACTX_STEER_IDLE_S"].default)


# -- what the app calls ----------------------------------------------------------------------------
def submit(root: str | Path, settings: SteerSettings, *, read_only: bool) -> str:
    """Queue a steering request and make sure a worker will answer it; returns its id."""
    refuse_if_read_only(read_only, "start a steering generation")
    if not isinstance(settings, SteerSettings):
        raise JobError("submit needs SteerSettings")
    root = local_store_root(root)
    try:
        open_store(root, writable=True).vector_set(settings.vector_set)
    except StoreError as exc:
        raise JobError(str(exc)) from None
    processes.reap()
    req_id = new_request_id()
    with locked(root):
        try:
            payload = json.dumps({"settings": settings.to_dict()})
            atomic_write_text(request_path(root, req_id), payload)
        except OSError as exc:
            raise JobError(f"cannot queue the request: {exc.strerror or exc}") from None
        _ensure_worker_locked(root)
    return req_id


def poll(root: str | Path, req_id: str) -> SteerOutcome | None:
    """The outcome of `req_id`, None while it waits; failed if no worker will ever answer it."""
    root = local_store_root(root)
    validate_request_id(req_id)
    processes.reap()
    outcome = read_result(root, req_id)
    if outcome is not None:
        return outcome
    if not request_path(root, req_id).exists():
        return SteerOutcome("failed", error="the request is gone and left no result")
    if live_worker(root) is None:
        # Read again: the worker may have answered and exited since the first look.
        outcome = read_result(root, req_id)
        if outcome is not None:
            return outcome
        why = last_error_line(log_path(root)) or "no reason in its log"
        return SteerOutcome("failed", error=f"the steering worker stopped: {why}"[:500])
    return None
