"""`python -m jobs.worker --store=DIR --job=ID --max-running=N`: the process behind one app job.

Started by `jobs.registry.launch` in its own session, with the job's folder as working
directory. It waits until fewer than N jobs run and no older queued job has a live worker, then
rebuilds the extraction command itself from the job record, re-validated (the kind, its
settings, the output id, and the inputs through the kind's `prepare`: for a run, the dataset is a
built-in name or a file of this store's uploads, passed on as its resolved path), starts it as
its child and records the outcome (committed or not, as the kind says; a partial output is
removed). A record edited on disk can at most change
validated settings: it never supplies a command, a path to read or a process to signal. A worker
whose record is gone, broken, not queued or names another pid exits without doing anything.
Imports nothing heavy: no torch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from jobs import paths, processes, registry
from jobs.errors import JobError
from jobs.kinds import kind_named
from jobs.logs import WORKER_TAG, last_error_line
from jobs.paths import local_store_root
from jobs.records import Job
from settings.run import validate_run_id


def extraction_command(root: Path, job: Job) -> list[str]:
    """The extraction's argv for `job`, rebuilt from its validated settings (ValueError or
    JobError if the record does not hold up)."""
    kind = kind_named(job.kind)
    settings = kind.settings.from_dict(job.settings.to_dict())
    output_id = validate_run_id(job.run_id)
    return processes.extraction_command(root, kind, output_id, kind.prepare(root, settings))


def _fail(root: Path, job: Job, why: str) -> int:
    print(f"error: {why}", flush=True)
    registry.write_job(root, replace(job, state="failed", ended_at=time.time(), error=why))
    return 2


def _start(root: Path, me: Job, max_running: int) -> tuple[Job, subprocess.Popen] | int | None:
    """Under the lock: start the extraction if it is this job's turn. Returns (job, child) once
    started, an exit status when the worker should stop, None to wait longer."""
    jobs, _broken = registry.reconcile_locked(root)
    me = next((j for j in jobs if j.job_id == me.job_id), None)
    if me is None or me.state != "queued" or me.pid != os.getpid():
        return 0  # cancelled, finished, damaged, or not ours: nothing to do
    running = sum(j.state == "running" for j in jobs)
    # After reconcile a queued job with a pid has a verified live worker; one without a pid
    # (or a broken record) never holds up the queue.
    ahead = any(
        j.state == "queued"
        and j.pid is not None
        and (j.created_at, j.job_id) < (me.created_at, me.job_id)
        for j in jobs
    )
    if running >= max_running or ahead:
        return None
    try:
        command = extraction_command(root, me)
    except (ValueError, JobError) as exc:
        return _fail(root, me, f"refused to start: {exc}")
    print(f"{WORKER_TAG} starting: {' '.join(command[2:])}", flush=True)
    try:
        child = subprocess.Popen(
            command, cwd=paths.job_dir(root, me.job_id), stdin=subprocess.DEVNULL,
            env=processes.child_env(),
        )  # fmt: skip
    except OSError as exc:
        return _fail(root, me, f"the extraction could not be started: {exc.strerror or exc}")
    me = replace(
        me, state="running", started_at=time.time(), child_pid=child.pid,
        child_start=processes.proc_start(child.pid),
    )  # fmt: skip
    registry.write_job(root, me)
    return me, child


def run_worker(root: str | Path, job_id: str, max_running: int, poll: float = 0.5) -> int:
    """Wait for a slot, run the extraction, record the outcome; returns the exit status."""
    root = local_store_root(root)
    try:
        me = registry.read_job(root, job_id)
    except JobError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    while True:
        with registry.locked(root):
            started = _start(root, me, max_running)
        if isinstance(started, tuple):
            me, child = started
            break
        if started is not None:
            return started
        time.sleep(poll)
    returncode = child.wait()
    with registry.locked(root):
        try:
            me = registry.read_job(root, job_id)
        except JobError:
            return returncode  # the record was damaged meanwhile: nothing to write into
        if me.state != "running":
            return returncode  # cancelled meanwhile: cancel owns the outcome
        kind = kind_named(me.kind)
        if returncode == 0 and kind.is_committed(root, me.run_id):
            me = replace(me, state="done", ended_at=time.time(), returncode=0)
        else:
            kind.remove_partial(root, me.run_id)
            log = paths.log_path(paths.job_dir(root, job_id))
            why = last_error_line(log) or (
                f"the extraction exited with status {returncode}"
                if returncode
                else "the extraction ended without committing its output"
            )
            me = replace(me, state="failed", ended_at=time.time(), returncode=returncode,
                         error=why[:500])  # fmt: skip
        registry.write_job(root, me)
    print(f"{WORKER_TAG} {me.state}", flush=True)
    return returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.worker", description=__doc__)
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--job", required=True, type=paths.validate_job_id)
    parser.add_argument("--max-running", type=int, default=registry.DEFAULT_MAX_RUNNING)
    args = parser.parse_args(argv)
    if args.max_running < 1:
        parser.error("--max-running must be >= 1")
    return run_worker(args.store, args.job, args.max_running)


if __name__ == "__main__":
    sys.exit(main())
