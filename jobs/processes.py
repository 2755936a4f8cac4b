"""Processes of a job: the commands we start, and checks before anything is signalled.

Two commands, both built here from validated values and never read from disk:

* the worker, `python -P -m jobs.worker --store=ROOT --job=ID --max-running=N`, in its own
  session (so it and the extraction it starts form one process group, detached from the app);
* the extraction, `python -P -m extraction <verb> <settings.argv()> --store=ROOT <output flag>=ID
  ...` as the job's kind says (jobs.kinds; a `run` job: `run ... --run-id=RUN --no-progress`),
  the worker's child.

Both run with the job's folder as working directory, so nothing depends on where the app was
started. `-P` keeps that folder (which lies in a store that may be shared) off `sys.path`: a file
planted there as `extraction.py` is never imported. The code is found through the installed
package (`pip install -e .`); the folder holding `jobs/` is appended to PYTHONPATH as a fallback
for an uninstalled checkout.

Signals: a pid from a record is signalled only when the live process's /proc start time equals
the recorded one AND its command line is that job's worker (or extraction). A record without a
start time, or with a wrong one, names a process that is never signalled. An extraction is
recognised by its kind's verb right after `-m extraction`, the store and its output id. Linux
only (/proc).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.kinds import JobKind, kind_named
from store.atomic import read_regular

WORKER_MODULE = "jobs.worker"
EXTRACTION_MODULE = "extraction"
CODE_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds jobs/ and extraction/
_SPAWNED: dict[int, subprocess.Popen] = {}  # workers this process started, reaped when they end
EXEC_TIMEOUT_S = 10.0  # a spawned worker that /proc does not show as one by then is killed


def worker_command(root: Path, job_id: str, max_running: int) -> list[str]:
    return [
        sys.executable, "-P", "-m", WORKER_MODULE,
        f"--store={root}", f"--job={job_id}", f"--max-running={max_running}",
    ]  # fmt: skip


def extraction_command(root: Path, kind: JobKind, output_id: str, settings: Any) -> list[str]:
    # `--opt=value` everywhere: a value starting with '-' (layers -1) is never read as an option.
    return [
        sys.executable, "-P", "-m", EXTRACTION_MODULE,
        *kind.command_args(settings, root, output_id),
    ]  # fmt: skip


def child_env() -> dict[str, str]:
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(CODE_ROOT) not in paths:
        paths.append(str(CODE_ROOT))  # after the caller's entries: theirs win
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}


def spawn_worker(command: list[str], cwd: Path, log_fd: int) -> subprocess.Popen:
    """Start a worker in a new session, output to `log_fd`. Raises OSError if it cannot start."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own process group: cancel kills it all, reloads don't
        env=child_env(),
    )
    _SPAWNED[process.pid] = process
    return process


def verified_start(
    process: subprocess.Popen, verify: Callable[[int], bool], timeout: float = EXEC_TIMEOUT_S
) -> int | None:
    """The start time of `process`, just spawned by this process, once `verify(start)` holds
    (once /proc shows the command it was given); None if it exits first, or if it is still
    not verified after `timeout` seconds (it is then killed).

    Popen returns as soon as the exec has begun, but the kernel installs the new command line
    later in the exec, once the program is loaded: until then /proc/PID/cmdline is empty
    (measured on a 2-core machine: 4 ms median, 11 ms at most, longer when it is busy). A
    record written before then names a worker that a reconcile in that window (another
    session, a waiting worker, the app's next poll) cannot verify, and so fails as dead.
    Killing it on timeout is safe: it is our child, not yet reaped, so its pid is still its own.
    """
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        start = proc_start(process.pid)
        if start is not None and verify(start):
            return start
        if time.monotonic() >= deadline:
            process.kill()
            process.wait()
            return None
        time.sleep(0.001)
    return None


def reap() -> None:
    """Collect workers of this process that have exited, so they do not linger as zombies."""
    for pid, process in list(_SPAWNED.items()):
        if process.poll() is not None:
            del _SPAWNED[pid]


# -- what /proc says -----------------------------------------------------------------------------
def proc_start(pid: int | None) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process; None if there is none."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces and ')'
        if fields[0] in ("Z", "X"):
            return None
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def proc_cmdline(pid: int) -> tuple[str, ...]:
    try:
        raw = read_regular(Path(f"/proc/{pid}/cmdline"), 1 << 16, tail=False)
    except (OSError, ValueError):
        return ()
    return tuple(raw.decode("utf-8", errors="replace").split("\0"))


def _runs_module(args: tuple[str, ...], module: tuple[str, ...]) -> bool:
    """`-m <module...>` appears in `args` (the module, then its verb if one is given)."""
    wanted = ("-m", *module)
    return any(args[i : i + len(wanted)] == wanted for i in range(len(args)))


def _verified(
    pid: int | None, start: int | None, module: tuple[str, ...], tokens: tuple[str, ...]
) -> bool:
    if pid is None or start is None or proc_start(pid) != start:
        return False
    args = proc_cmdline(pid)
    return _runs_module(args, module) and all(t in args for t in tokens)


def is_worker(pid: int | None, start: int | None, root: Path, job_id: str) -> bool:
    """`pid` is, right now, the worker of `job_id` on `root`, started at `start`."""
    return _verified(pid, start, (WORKER_MODULE,), (f"--store={root}", f"--job={job_id}"))


def is_extraction(
    pid: int | None, start: int | None, root: Path, kind: JobKind, output_id: str
) -> bool:
    """`pid` is, right now, `python -m extraction <kind's verb>` writing `output_id` on `root`."""
    tokens = (f"--store={root}", f"{kind.output_flag}={output_id}")
    return _verified(pid, start, (EXTRACTION_MODULE, kind.verb), tokens)


# -- signals -------------------------------------------------------------------------------------
def _signal(pid: int, sig: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_job(job, root: Path, timeout: float) -> None:
    """SIGTERM the job's verified processes, then SIGKILL what is left after `timeout` seconds.

    The worker leads its own process group, which its extraction (and anything that spawned)
    inherits, so one killpg reaches the whole tree. An extraction whose worker is gone is
    signalled through that group only while it is verified and still in it.
    """

    kind = kind_named(job.kind)

    def live() -> tuple[bool, bool]:
        return (
            is_worker(job.pid, job.pid_start, root, job.job_id),
            is_extraction(job.child_pid, job.child_start, root, kind, job.run_id),
        )

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        worker, child = live()
        if not (worker or child):
            return
        if worker:
            with contextlib.suppress(OSError):
                _signal(job.pid, sig, group=os.getpgid(job.pid) == job.pid)
        if child:
            with contextlib.suppress(OSError):
                in_group = os.getpgid(job.child_pid) == job.pid
                _signal(job.pid if in_group else job.child_pid, sig, group=in_group)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(live()):
            reap()
            time.sleep(0.05)
