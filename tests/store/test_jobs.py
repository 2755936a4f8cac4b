"""The job registry: dedupe under concurrency, max-N queueing, dead processes, cancel, safety.

Registry mechanics (dedupe, queueing, dead workers) run fake jobs: `JobSpec.argv` is patched so the
worker starts a small Python script instead of an extraction (the record keeps that command, and
the worker reads the command from the record). Cancel, failure and the partial-run cleanup run the
real `python -m extraction run` on the tiny llama folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from store import StoreError, open_store
from store import jobs as jobs_module
from store.jobs import (
    Job,
    JobSpec,
    ReadOnlyError,
    cancel,
    last_error_line,
    launch,
    list_jobs,
    log_tail,
    read_job,
    reconcile,
    sanitize_filename,
    save_upload,
)
from store.writer import list_uncommitted
from tests.support.tiny import emotion_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]
SLEEPER = "import time; print('working', flush=True); time.sleep(120)"


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def state(root: Path, job_id: str) -> str:
    return read_job(root, job_id).state


def reconciled_state(root: Path, job_id: str) -> str:
    """The state after a reconcile (what any app session's poll would record)."""
    reconcile(root)
    return state(root, job_id)


def alive(pid: int | None) -> bool:
    return jobs_module._proc_start(pid) is not None


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    store_root = tmp_path / "store"
    yield store_root
    # Never leak a job's processes into the rest of the session.
    for job in reconcile(store_root) if store_root.exists() else []:
        if job.active:
            cancel(store_root, job.job_id, read_only=False, timeout=2)


@pytest.fixture
def fake(monkeypatch):
    """Make every job run `script` (a Python one-liner) instead of an extraction."""

    def use(script: str) -> None:
        monkeypatch.setattr(
            JobSpec, "argv", lambda self, store_root, run_id: (sys.executable, "-c", script)
        )

    return use


def spec(name: str | None = None, **fields) -> JobSpec:
    return JobSpec(model=fields.pop("model", "tiny"), dataset="emotions", name=name, **fields)


# -- records and validation ----------------------------------------------------------------------
def test_job_record_round_trips_and_validates():
    job = Job(
        job_id="job-1", spec=spec("a"), fingerprint="f", run_id="a-1", command=("python",),
        log_path="/x/log.txt", created_at=1.0,
    )  # fmt: skip
    assert Job.from_json(job.to_json()) == job
    with pytest.raises(ValueError, match="unknown job state 'paused'"):
        Job(**{**job.__dict__, "state": "paused"})
    with pytest.raises(ValueError, match="run id '../x'"):
        Job(**{**job.__dict__, "run_id": "../x"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hooks": ("resid_mid",)}, "unknown hook 'resid_mid'"),
        ({"positions": ()}, "positions must not be empty"),
        ({"layers": "1;rm"}, "bad layers '1;rm'"),
        ({"dtype": "int8"}, "unknown dtype 'int8'"),
        ({"name": "a/b"}, "run id 'a/b'"),
        ({"batch_size": 0}, "batch size 0"),
        ({"model": "  "}, "model '  ' is empty"),
        ({"model": "x\n--store=/etc"}, "control characters"),
    ],
)
def test_spec_rejects_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        spec(**fields)


def test_argv_passes_values_as_single_arguments(tmp_path):
    argv = JobSpec(model="m", dataset="emotions", layers="-1", name="n").argv(tmp_path, "r-1")
    assert argv[:4] == (sys.executable, "-m", "extraction", "run")
    assert "--layers=-1" in argv and f"--store={tmp_path}" in argv and "--run-id=r-1" in argv


# -- uploads and paths ---------------------------------------------------------------------------
def test_uploads_are_sanitised_and_stay_in_the_store(root):
    data = b'{"text": "hi", "label": "a"}\n'
    path = save_upload(root, "../../etc/evil name!.JSONL", data, read_only=False)
    assert path.parent == (root / "uploads").resolve()
    assert path.name.endswith("-evil_name.jsonl") and path.read_bytes() == data
    assert sanitize_filename("C:\\Users\\me\\data.csv") == "data.csv"
    with pytest.raises(StoreError, match="not a dataset"):
        save_upload(root, "run.sh", data, read_only=False)
    with pytest.raises(StoreError, match="limit is"):
        save_upload(root, "big.jsonl", b"x" * 2001, read_only=False, max_bytes=2000)


def test_launch_rejects_datasets_outside_the_uploads_folder(root, tmp_path):
    outside = write_jsonl(tmp_path / "outside.jsonl", emotion_rows(1))
    for dataset in (str(outside), "../outside.jsonl", str(root / "uploads" / ".." / "x.jsonl")):
        with pytest.raises(StoreError, match="neither a built-in name nor an uploaded file"):
            launch(root, JobSpec(model="m", dataset=dataset), read_only=False)
    assert not (root / "jobs").exists() or not any((root / "jobs").iterdir())


def test_read_only_refuses_every_write(root, monkeypatch):
    data = b'{"text": "hi", "label": "a"}\n'
    with pytest.raises(ReadOnlyError):
        launch(root, spec(), read_only=True)
    with pytest.raises(ReadOnlyError):
        cancel(root, "job-x", read_only=True)
    with pytest.raises(ReadOnlyError):
        save_upload(root, "a.jsonl", data, read_only=True)
    # The environment wins over a caller that forgot to pass the flag.
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    with pytest.raises(ReadOnlyError, match="read-only mode: cannot launch a run"):
        launch(root, spec(), read_only=False)
    with pytest.raises(ReadOnlyError):
        save_upload(root, "a.jsonl", data, read_only=False)
    assert not (root / "jobs").exists() and not (root / "uploads").exists()


def test_log_tail_and_error_line(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("loading\rLoading weights: 50%\rLoading weights: 100%\nerror: bad layer 9\n")
    assert log_tail(log, 2) == ("Loading weights: 100%", "error: bad layer 9")
    assert last_error_line(log) == "error: bad layer 9"
    log.write_text('Traceback (most recent call last):\n  File "x"\nRuntimeError: CUDA OOM\n')
    assert last_error_line(log) == "RuntimeError: CUDA OOM"
    assert last_error_line(tmp_path / "missing.txt") is None


# -- dedupe and queueing (fake jobs) -------------------------------------------------------------
def test_same_settings_from_many_threads_start_one_job(root, fake):
    fake(SLEEPER)
    barrier = threading.Barrier(8)
    results = []

    def click():
        barrier.wait()
        results.append(launch(root, spec("same"), read_only=False))

    threads = [threading.Thread(target=click) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(created for _, created in results) == 1
    assert len({job.job_id for job, _ in results}) == 1
    assert len(reconcile(root)) == 1


def test_same_settings_from_many_processes_start_one_job(root, tiny_models):
    """Real sessions are separate processes: the registry lock is an fcntl lock on a file."""
    root.mkdir(parents=True)
    start_at = time.time() + 3.0  # all processes are up by then; they launch at the same moment
    script = (
        "import sys, time\n"
        "from store.jobs import JobSpec, launch\n"
        "time.sleep(max(0, float(sys.argv[3]) - time.time()))\n"
        "job, created = launch(sys.argv[1], JobSpec(model=sys.argv[2], dataset='emotions'),"
        " read_only=False)\n"
        "print(job.job_id, created)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root), str(tiny_models["llama"]), str(start_at)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({job_id for job_id, _ in outputs}) == 1
    assert sorted(created for _, created in outputs) == ["False"] * 3 + ["True"]


def test_jobs_beyond_max_running_queue_and_start_when_a_slot_frees(root, fake):
    fake(SLEEPER)
    first, _ = launch(root, spec("a"), read_only=False, max_running=1)
    second, _ = launch(root, spec("b"), read_only=False, max_running=1)
    wait_for(lambda: state(root, first.job_id) == "running", what="first job running")
    time.sleep(1.5)  # several worker polls: the second must still wait
    assert state(root, second.job_id) == "queued"
    cancel(root, first.job_id, read_only=False)
    wait_for(lambda: state(root, second.job_id) == "running", what="queued job to start")


def test_max_running_two_runs_two_at_once(root, fake):
    fake(SLEEPER)
    launched = [launch(root, spec(n), read_only=False, max_running=2)[0] for n in "abc"]
    wait_for(lambda: [state(root, j.job_id) for j in launched] == ["running", "running", "queued"],
             what="two running, one queued")  # fmt: skip


# -- processes that die without a word -----------------------------------------------------------
def test_worker_killed_alone_is_detected_and_its_child_killed(root, fake):
    fake("import time; print('error: disk on fire', flush=True); time.sleep(120)")
    job, _ = launch(root, spec("w"), read_only=False)
    job = wait_for(lambda: (j := read_job(root, job.job_id)).child_pid and j, what="child started")
    os.kill(job.pid, signal.SIGKILL)  # the worker only: the extraction child is left behind
    wait_for(lambda: reconciled_state(root, job.job_id) == "failed", what="dead job detected")
    failed = read_job(root, job.job_id)
    assert failed.state == "failed"
    assert "died without recording an exit" in failed.error
    assert "error: disk on fire" in failed.error
    wait_for(lambda: not alive(job.child_pid), timeout=10, what="orphaned child killed")


def test_queued_job_whose_worker_died_is_marked_failed(root, fake):
    fake(SLEEPER)
    running, _ = launch(root, spec("a"), read_only=False)
    queued, _ = launch(root, spec("b"), read_only=False)
    wait_for(lambda: state(root, running.job_id) == "running", what="first running")
    os.kill(read_job(root, queued.job_id).pid, signal.SIGKILL)
    wait_for(lambda: reconciled_state(root, queued.job_id) == "failed", what="dead queued job")
    assert "before it started" in read_job(root, queued.job_id).error


# -- the real extraction -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    return write_jsonl(path, emotion_rows(per_label=1500)).read_bytes()


def _progress(root: Path, job: Job) -> int:
    status = next(s for s in list_jobs(root) if s.job.job_id == job.job_id)
    return status.done or 0


def _launch_and_wait_for_rows(root: Path, tiny_models, big_dataset) -> Job:
    """A long job on the tiny llama, returned once it has written its first samples."""
    upload = save_upload(root, "big.jsonl", big_dataset, read_only=False)
    job, _ = launch(
        root,
        JobSpec(model=str(tiny_models["llama"]), dataset=str(upload), batch_size=2),
        read_only=False,
    )
    wait_for(lambda: _progress(root, job) > 0, timeout=120, what="samples written")
    return job


def test_cancel_kills_the_process_tree_and_leaves_no_partial_run(root, tiny_models, big_dataset):
    job = _launch_and_wait_for_rows(root, tiny_models, big_dataset)
    running = read_job(root, job.job_id)
    assert (root / "runs" / job.run_id).is_dir()  # a partial run exists right now
    cancelled = cancel(root, job.job_id, read_only=False)
    assert cancelled.state == "cancelled"
    assert not alive(running.pid) and not alive(running.child_pid)
    assert not (root / "runs" / job.run_id).exists()
    assert list_uncommitted(root) == [] and open_store(root).run_ids() == []
    # Cancelling again is harmless, and a reconcile does not overwrite the outcome.
    assert cancel(root, job.job_id, read_only=False).state == "cancelled"
    assert read_job(root, reconcile(root)[0].job_id).state == "cancelled"


def test_whole_tree_killed_is_detected_and_the_partial_run_removed(root, tiny_models, big_dataset):
    job = _launch_and_wait_for_rows(root, tiny_models, big_dataset)
    os.killpg(job.pid, signal.SIGKILL)  # e.g. the OOM killer: nobody records anything
    wait_for(lambda: reconciled_state(root, job.job_id) == "failed", what="dead job detected")
    assert "died without recording an exit" in read_job(root, job.job_id).error
    assert not (root / "runs" / job.run_id).exists()


def test_failed_extraction_shows_its_error_line(root):
    job, _ = launch(root, JobSpec(model="/no/such/model", dataset="emotions"), read_only=False)
    wait_for(lambda: state(root, job.job_id) == "failed", timeout=60, what="job failed")
    failed = read_job(root, job.job_id)
    assert failed.error.startswith("error: unknown model '/no/such/model'")
    assert failed.returncode == 2 and "Traceback" not in failed.error
    record = json.loads((root / "jobs" / job.job_id / "job.json").read_text())
    assert record["state"] == "failed" and record["pid"] == failed.pid
