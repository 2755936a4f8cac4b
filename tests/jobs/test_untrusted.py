"""Nothing a job record says is trusted: planted and malformed records, live victim processes,
planted log paths, workers that never start, queued records that never get a worker, and the
read-only switch as the job layer sees it.

Records are planted by hand in STORE/jobs (tests.jobs.helpers.plant), the way a copied, synced or
hostile store would carry them. Workers run a fake extraction that records its argv.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import (
    JobError,
    ReadOnlyError,
    cancel,
    launch,
    list_jobs,
    processes,
    read_job,
    reconcile,
    save_upload,
)
from jobs.records import parse_record
from settings.run import RunSettings
from tests.jobs.helpers import (
    SLEEPER,
    alive,
    job_id,
    plant,
    record,
    settings_dict,
    slow_exec,
    wait_for,
)

PASSWD_LINE = Path("/etc/passwd").read_text().splitlines()[0]


def run(name: str) -> RunSettings:
    return RunSettings(model="tiny", dataset="emotions", name=name)


def edit(root: Path, job: str, change) -> None:
    """Rewrite a job's record on disk (atomically, as a sync tool would)."""
    path = root / "jobs" / job / "job.json"
    data = json.loads(path.read_text())
    change(data)
    tmp = path.with_name("edit.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def dead_process() -> tuple[int, int]:
    """The pid and start time of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["sleep", "60"])
    start = processes.proc_start(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, start


@pytest.fixture
def victim():
    """A live process that is not ours to signal, in its own session (so a stray killpg of its
    pid would reach it too)."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


# -- edited records never run as written ---------------------------------------------------------
@pytest.mark.slow
def test_a_queued_record_edited_on_disk_never_runs_as_written(root, fake, tmp_path):
    fake.use(SLEEPER)
    first, _ = launch(root, run("first"), read_only=False, max_running=1)
    wait_for(lambda: len(fake.argvs()) == 1, what="first job running")
    queued = {name: launch(root, run(name), read_only=False)[0] for name in "bcde"}
    pwned = tmp_path / "pwned"
    planted_command = [sys.executable, "-c", f"open({str(pwned)!r}, 'w')"]
    edit(root, queued["b"].job_id, lambda d: d.update(command=planted_command))
    edit(root, queued["c"].job_id, lambda d: d["settings"].update(dataset="/etc/passwd"))
    edit(root, queued["d"].job_id, lambda d: d["settings"].update(hooks=["resid_post; rm -rf /"]))
    edit(root, queued["e"].job_id, lambda d: d.update(log_path="/etc/passwd"))
    fake.use("pass")  # what runs from now on: quick
    last, _ = launch(root, run("last"), read_only=False)
    cancel(root, first.job_id, read_only=False)

    wait_for(lambda: len(fake.argvs()) == 2, what="the last job to run")
    wait_for(lambda: read_job(root, queued["c"].job_id).state == "failed", what="c refused")
    runs = [next(a for a in argv if a.startswith("--run-id=")) for argv in fake.argvs()]
    assert runs == [f"--run-id={first.run_id}", f"--run-id={last.run_id}"]
    assert not pwned.exists()
    error = read_job(root, queued["c"].job_id).error
    assert "refused to start" in error and "neither a built-in name" in error

    listing = list_jobs(root)
    broken = {b.folder: b.reason for b in listing.broken}
    assert "unknown key 'command'" in broken[queued["b"].job_id]
    assert "unknown hook" in broken[queued["d"].job_id]
    assert "unknown key 'log_path'" in broken[queued["e"].job_id]
    assert PASSWD_LINE not in repr(listing)
    # The workers of the broken records saw them and left, without running anything.
    for name in "bde":
        wait_for(lambda n=name: not alive(queued[n].pid), timeout=10, what=f"worker {name} exits")


@pytest.mark.slow
def test_a_job_folder_planted_with_code_never_runs_it(root, fake, tmp_path):
    """Workers run with the job's folder as working directory but `-P`: a planted module in
    that folder is not on sys.path."""
    fake.use(SLEEPER)
    first, _ = launch(root, run("first"), read_only=False)
    wait_for(lambda: len(fake.argvs()) == 1, what="first job running")
    second, _ = launch(root, run("second"), read_only=False)
    pwned = tmp_path / "pwned"
    planted = root / "jobs" / second.job_id / "extraction"
    planted.mkdir()
    (planted / "__init__.py").write_text("")
    (planted / "__main__.py").write_text(f"open({str(pwned)!r}, 'w')\n")
    (root / "jobs" / second.job_id / "extraction.py").write_text(f"open({str(pwned)!r}, 'w')\n")
    fake.use("pass")
    cancel(root, first.job_id, read_only=False)
    wait_for(lambda: len(fake.argvs()) == 2, what="the second job to run")
    assert not pwned.exists()


# -- signals only to verified processes ----------------------------------------------------------
@pytest.mark.slow
def test_a_live_victim_named_in_records_is_never_signalled(root, fake, victim, tmp_path):
    fake.use("pass")
    start = processes.proc_start(victim.pid)
    assert start is not None
    # A process that looks like a worker, but of another job.
    impostor = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "-m", "jobs.worker",
         f"--store={root.resolve()}", f"--job={job_id(99)}"],
        start_new_session=True,
    )  # fmt: skip
    impostor_start = wait_for(lambda: processes.proc_start(impostor.pid), what="impostor up")
    cases = {
        1: {"state": "running", "pid": victim.pid},  # no start time
        2: {"state": "running", "pid": victim.pid, "pid_start": start + 1},  # a wrong one
        3: {"state": "running", "pid": victim.pid, "pid_start": start},  # right, not a worker
        4: {"state": "running", "child_pid": victim.pid, "child_start": start},
        5: {"state": "queued", "pid": victim.pid},
        6: {"state": "queued", "pid": victim.pid, "pid_start": start},
        7: {"state": "running", "pid": impostor.pid, "pid_start": impostor_start},
    }
    try:
        actions = {
            "cancel": lambda: [cancel(root, job_id(i), read_only=False, timeout=1) for i in cases],
            "list_jobs": lambda: list_jobs(root),
            "reconcile": lambda: reconcile(root),
            "launch": lambda: launch(root, run("other"), read_only=False),
        }
        for name, action in actions.items():
            for index, fields in cases.items():
                plant(root, index, **fields)
            action()
            time.sleep(0.3)
            assert victim.poll() is None, f"{name} signalled the victim"
            assert impostor.poll() is None, f"{name} signalled the impostor"
            if name != "cancel":
                assert all(read_job(root, job_id(i)).state == "failed" for i in cases), name
    finally:
        impostor.kill()
        impostor.wait()
    errors = {i: read_job(root, job_id(i)).error for i in cases}
    assert "cannot be verified" in errors[1] and "cannot be verified" in errors[5]
    assert "died" in errors[2] and "died" in errors[3] and "died" in errors[6]
    assert "names no worker" in errors[4]


# -- malformed records ---------------------------------------------------------------------------
DEEP = b"[" * 30000 + b"]" * 30000
NESTED = json.loads(b"[" * 500 + b"]" * 500)


def _rec(**fields):
    """A record for the job folder `index`, with `fields` changed."""
    return lambda index: json.dumps(record(index, **fields)).encode()


def _raw(data: bytes):
    return lambda _index: data


MALFORMED = {
    "garbage": (_raw(b"garbage{"), "not valid JSON"),
    "null": (_raw(b"null"), "not a JSON object"),
    "list": (_raw(b"[]"), "not a JSON object"),
    "deep": (_raw(DEEP), "nested too deeply"),
    "deep settings": (_rec(settings=settings_dict() | {"model": NESTED}), "is empty"),
    "not utf-8": (_raw(b'{"job_id": "\xff"}'), "not valid JSON"),
    "huge number": (_raw(b'{"created_at": 1' + b"0" * 5000 + b"}"), "not valid JSON"),
    "yesterday": (_rec(created_at="yesterday"), "created_at 'yesterday' is not a time"),
    "created bool": (_rec(created_at=True), "created_at True is not a time"),
    "created nan": (_rec(created_at=float("nan")), "is not a time"),
    "paused": (_rec(state="paused"), "unknown job state 'paused'"),
    "pid text": (_rec(pid="12"), "pid '12' is not a whole number"),
    "pid bool": (_rec(pid=True), "pid True is not a whole number"),
    "pid negative": (_rec(pid=-1), "pid -1 is not a whole number"),
    "unknown key": (_rec(command=["sh", "-c", "id"]), "unknown key 'command'"),
    "settings null": (_rec(settings=None), "not an object"),
    "settings partial": (_rec(settings={"model": "m"}), "incomplete"),
    "bad layers": (_rec(settings=settings_dict() | {"layers": "20-10"}), "bad layer range"),
    "other run": (_rec(run_id="x-20991231-000000-000000"), "does not belong"),
    "other job": (lambda i: json.dumps(record(i, job_id=job_id(i + 1))).encode(),
                  "differs from its folder"),
    "missing key": (lambda i: json.dumps({"job_id": job_id(i)}).encode(), "missing key 'run_id'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_records_are_refused_with_a_reason(case):
    make, reason = MALFORMED[case]
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        parse_record(make(0), job_id(0))


@pytest.mark.slow
def test_malformed_records_are_listed_as_broken_and_never_block_the_queue(root, fake, tmp_path):
    jobs_dir = root / "jobs"
    reasons = {}
    for index, (make, reason) in enumerate(MALFORMED.values(), start=1):
        plant(root, index, make(index))
        reasons[job_id(index)] = reason
    base = 1000
    (plant(root, base + 1) / "job.json").unlink()  # an empty job folder
    (plant(root, base + 2) / "job.json").unlink()
    (jobs_dir / job_id(base + 2) / "job.json").mkdir()  # job.json is a folder
    (plant(root, base + 3) / "job.json").unlink()
    (jobs_dir / job_id(base + 3) / "job.json").symlink_to("/etc/passwd")
    (jobs_dir / job_id(base + 4)).write_text("a file, not a folder")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "job.json").write_text(json.dumps(record(base + 5)))
    (jobs_dir / job_id(base + 5)).symlink_to(elsewhere)
    (jobs_dir / "not a job").mkdir()
    (jobs_dir / "not a job" / "job.json").write_text(json.dumps(record(base + 6)))
    (jobs_dir / "notes.txt").write_text("hello")
    plant(root, base + 7, b"{" + b" " * 70000 + b"}")  # over the size limit
    reasons.update({
        job_id(base + 1): "no job.json",
        job_id(base + 2): "not a regular file",
        job_id(base + 3): "symbolic links",
        job_id(base + 4): "not a folder",
        job_id(base + 5): "symbolic link",
        "not a job": "not a job id",
        "notes.txt": "not a job id",
        job_id(base + 7): "larger than",
    })  # fmt: skip

    listing = list_jobs(root)
    assert listing.statuses == ()
    broken = {b.folder: b.reason for b in listing.broken}
    assert set(broken) == set(reasons)
    for folder, reason in reasons.items():
        assert reason in broken[folder], (folder, broken[folder])
    assert PASSWD_LINE not in repr(listing)
    assert reconcile(root) == []
    with pytest.raises(JobError, match="unreadable"):
        cancel(root, job_id(1), read_only=False)

    # A new job goes straight through.
    _job, created = launch(root, run("after"), read_only=False)
    assert created
    wait_for(lambda: len(fake.argvs()) == 1, what="the new job to run")
    assert len(list_jobs(root).broken) == len(broken)


# -- log paths -----------------------------------------------------------------------------------
def test_log_paths_come_from_the_job_folder_only(root):
    pid, start = dead_process()
    folder = plant(root, 1, state="running", pid=pid, pid_start=start)
    (folder / "log.txt").symlink_to("/etc/passwd")
    plant(root, 2, log_path="/etc/passwd")
    listing = list_jobs(root)
    (status,) = listing.statuses
    assert status.job.state == "failed" and status.log_tail == ()
    assert "died without recording an exit" in status.job.error
    assert [b.reason for b in listing.broken] == ["job.json is malformed: unknown key 'log_path'"]
    assert PASSWD_LINE not in repr(listing)


# -- workers that never start, records that never got one ----------------------------------------
def test_a_worker_that_cannot_be_spawned_fails_its_job(root, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(processes, "spawn_worker", refuse)
    with pytest.raises(JobError, match="could not be started: Resource temporarily unavailable"):
        launch(root, run("x"), read_only=False)
    (status,) = list_jobs(root).statuses
    assert status.job.state == "failed" and "could not be started" in status.job.error


@pytest.mark.slow
def test_a_worker_that_exits_before_running_fails_its_job(root, monkeypatch):
    script = "print('error: the worker could not import jobs', flush=True)"
    monkeypatch.setattr(processes, "worker_command",
                        lambda *_: [sys.executable, "-c", script])  # fmt: skip
    job, _ = launch(root, run("x"), read_only=False)
    wait_for(lambda: not alive(job.pid), timeout=30, what="the worker to exit")
    (status,) = list_jobs(root).statuses
    assert status.job.state == "failed"
    assert "before it started" in status.job.error or "exited at once" in status.job.error
    assert "the worker could not import jobs" in status.job.error


def test_a_worker_still_in_its_exec_is_not_taken_for_dead(root, fake, monkeypatch):
    """Popen returns once the worker's exec has begun, but /proc shows its command line only
    when the exec is done: 4 ms later (median) on a 2-core machine, more when it is busy. A
    reconcile in between (another session, a waiting worker, the app's next poll) found no
    verifiable worker and failed the fresh job ("died before it started"). Here the exec is
    stretched to 0.5 s (tests.jobs.helpers.slow_exec)."""
    fake.use(SLEEPER)
    real = processes.worker_command
    monkeypatch.setattr(processes, "worker_command", lambda *a: slow_exec(real(*a), 0.5))
    job, _ = launch(root, run("slow-exec"), read_only=False)
    assert processes.is_worker(job.pid, job.pid_start, root.resolve(), job.job_id)
    (status,) = list_jobs(root).statuses  # a reconcile right after the launch
    assert status.job.state in ("queued", "running"), status.job.error
    wait_for(lambda: read_job(root, job.job_id).state == "running", what="the job to run")


@pytest.mark.slow
def test_queued_records_without_a_worker_expire_and_never_block(root, fake, monkeypatch):
    now = time.time()
    plant(root, 1, created_at=now - 25 * 3600)
    plant(root, 2, created_at=now - 3600)
    plant(root, 3, created_at=now + 10 * 86400)  # a time we never wrote
    pid, start = dead_process()
    plant(root, 4, created_at=now, pid=pid, pid_start=start)  # its worker is verifiably dead
    listing = list_jobs(root)
    states = {s.job.job_id: (s.job.state, s.job.error) for s in listing.statuses}
    assert states[job_id(1)] == ("failed", "no worker picked this job up within 24 hours")
    assert states[job_id(2)] == ("queued", None)
    assert states[job_id(3)][0] == "failed"
    assert states[job_id(4)][0] == "failed" and "before it started" in states[job_id(4)][1]

    # An older queued record without a worker does not hold up a new job.
    job, _ = launch(root, run("new"), read_only=False)
    wait_for(lambda: len(fake.argvs()) == 1, what="the new job to run")
    assert read_job(root, job_id(2)).state == "queued"

    monkeypatch.setenv("ACTX_QUEUE_HOURS", "0.5")
    reconcile(root)
    assert read_job(root, job_id(2)).error == "no worker picked this job up within 0.5 hours"
    monkeypatch.setenv("ACTX_QUEUE_HOURS", "soon")  # a bad setting falls back to the default
    assert len(reconcile(root)) == 5


# -- read-only -----------------------------------------------------------------------------------
READ_ONLY_CONFIGS = {
    "cwd secrets": ("cwd", "read_only = true\n"),
    "home secrets": ("home", 'ACTX_READ_ONLY = "yes"\n'),
    "broken secrets": ("cwd", "read_only = false\nread_only = false\n"),  # duplicate key
    "odd value": ("cwd", 'read_only = "enabled"\n'),
}


@pytest.mark.parametrize("config", [*READ_ONLY_CONFIGS, "empty env"])
def test_read_only_from_any_source_refuses_at_the_job_layer(root, tmp_path, monkeypatch, config):
    home, work = tmp_path / "home", tmp_path / "work"
    for folder in (home, work):
        (folder / ".streamlit").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    if config == "empty env":
        monkeypatch.setenv("ACTX_READ_ONLY", "")
    else:
        where, text = READ_ONLY_CONFIGS[config]
        ((work if where == "cwd" else home) / ".streamlit" / "secrets.toml").write_text(text)
    data = b'{"text": "hi", "label": "a"}\n'
    with pytest.raises(ReadOnlyError, match="read-only mode: cannot launch a run"):
        launch(root, run("x"), read_only=False)
    with pytest.raises(ReadOnlyError):
        cancel(root, job_id(1), read_only=False)
    with pytest.raises(ReadOnlyError):
        save_upload(root, "a.jsonl", data, read_only=False)
    assert not root.exists()


def test_read_only_flag_refuses_before_looking_at_anything(root):
    with pytest.raises(ReadOnlyError):
        launch(root, object(), read_only=True)
    with pytest.raises(ReadOnlyError):
        cancel(root, "../../etc", read_only=True)
    with pytest.raises(ReadOnlyError):
        save_upload(root, "a.jsonl", b"", read_only=True)
    assert not root.exists()


def test_listing_in_read_only_mode_writes_nothing(root, monkeypatch):
    pid, start = dead_process()
    plant(root, 1, state="running", pid=pid, pid_start=start)
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    (status,) = list_jobs(root).statuses
    assert status.job.state == "failed"  # what the page would show ...
    assert json.loads((root / "jobs" / job_id(1) / "job.json").read_text())["state"] == "running"
    assert not (root / "jobs" / ".lock").exists()  # ... with nothing written
