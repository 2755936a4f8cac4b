"""The job registry: dedupe under concurrency, max-N queueing, dead processes, cancel, uploads.

Registry mechanics (dedupe, queueing, dead workers) run the real worker with a fake extraction
(tests.jobs.helpers.FakeExtraction: a Python snippet found first on the PYTHONPATH). Cancel,
failure and the partial-run cleanup run the real `python -m extraction run` on the tiny llama.
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

from jobs import (
    Job,
    JobError,
    JobListing,
    cancel,
    last_error_line,
    launch,
    list_jobs,
    log_tail,
    paths,
    read_job,
    reconcile,
    sanitize_filename,
    save_upload,
)
from jobs.worker import extraction_command
from settings.run import RunSettings
from store import open_store
from store.writer import list_uncommitted
from tests.jobs.helpers import SLEEPER, alive, wait_for
from tests.support.tiny import emotion_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def state(root: Path, job_id: str) -> str:
    return read_job(root, job_id).state


def reconciled_state(root: Path, job_id: str) -> str:
    """The state after a reconcile (what any app session's poll would record)."""
    reconcile(root)
    return state(root, job_id)


def run(name: str | None = None, **fields) -> RunSettings:
    return RunSettings(model=fields.pop("model", "tiny"), dataset="emotions", name=name, **fields)


# -- records and commands ------------------------------------------------------------------------
def test_job_record_round_trips_and_validates():
    job = Job(job_id="job-20240101-000000-abcdef", run_id="a-20240101-000000-abcdef",
              settings=run("a"), created_at=1.0)  # fmt: skip
    assert Job.from_dict(json.loads(json.dumps(job.to_dict())), job.job_id) == job
    with pytest.raises(ValueError, match="unknown job state 'paused'"):
        Job(**{**job.__dict__, "state": "paused"})
    with pytest.raises(ValueError, match="run id '../x'"):
        Job(**{**job.__dict__, "run_id": "../x"})
    with pytest.raises(ValueError, match="does not belong to job"):
        Job(**{**job.__dict__, "run_id": "a-20240101-000000-000000"})
    with pytest.raises(ValueError, match="differs from its folder"):
        Job.from_dict(job.to_dict(), "job-20240101-000000-000000")


def test_settings_the_runner_would_refuse_are_refused_before_queueing():
    # The old queue accepted 20-10, which the runner then refused after the job was queued.
    with pytest.raises(ValueError, match="bad layer range '20-10'"):
        run(layers="20-10")


def test_extraction_command_is_rebuilt_from_validated_settings(tmp_path):
    settings = RunSettings(model="m", dataset="emotions", layers="-1", name="n")
    job = Job(job_id="job-20240101-000000-abcdef", run_id="n-20240101-000000-abcdef",
              settings=settings, created_at=1.0)  # fmt: skip
    argv = extraction_command(tmp_path, job)
    assert argv[:5] == [sys.executable, "-P", "-m", "extraction", "run"]
    assert "--layers=-1" in argv and "--name=n" in argv and "--no-progress" in argv
    assert f"--store={tmp_path}" in argv and f"--run-id={job.run_id}" in argv
    # A built-in name goes to the runner as its file: nothing depends on the working directory.
    assert f"--dataset={REPO / 'data' / 'emotions.jsonl'}" in argv


def test_worker_refuses_a_job_id_that_is_not_one_of_ours(tmp_path):
    from jobs.worker import main

    for bad in ("../../etc", "job-1", "job-20240101-000000-ABCDEF"):
        with pytest.raises(SystemExit) as exited:
            main([f"--store={tmp_path}", f"--job={bad}"])
        assert exited.value.code == 2
    assert list(tmp_path.iterdir()) == []


def test_a_store_that_is_a_file_is_one_line(tmp_path):
    store = tmp_path / "store"
    store.write_text("not a folder")
    with pytest.raises(JobError, match="cannot use the store folder: store .* is not a directory"):
        launch(store, run("x"), read_only=False)
    assert list_jobs(store) == JobListing() and reconcile(store) == []


# -- uploads and paths ---------------------------------------------------------------------------
def test_uploads_are_sanitised_and_stay_in_the_store(root):
    data = b'{"text": "hi", "label": "a"}\n'
    path = save_upload(root, "../../etc/evil name!.JSONL", data, read_only=False)
    assert path.parent == (root / "uploads").resolve()
    assert path.name.endswith("-evil_name.jsonl") and path.read_bytes() == data
    assert sanitize_filename("C:\\Users\\me\\data.csv") == "data.csv"
    with pytest.raises(JobError, match="not a dataset"):
        save_upload(root, "run.sh", data, read_only=False)
    with pytest.raises(JobError, match="the limit is"):
        save_upload(root, "big.jsonl", b"x" * 2001, read_only=False, max_bytes=2000)


def test_upload_limit_is_the_setting_in_mib(root, monkeypatch):
    monkeypatch.setenv("ACTX_UPLOAD_MB", "1")
    save_upload(root, "ok.jsonl", b"x" * 2**20, read_only=False)
    with pytest.raises(JobError, match="1.0 MiB; the limit is 1 MiB"):
        save_upload(root, "big.jsonl", b"x" * (2**20 + 1), read_only=False)


def test_launch_rejects_datasets_outside_the_uploads_folder(root, tmp_path):
    outside = write_jsonl(tmp_path / "outside.jsonl", emotion_rows(1))
    (root / "uploads").mkdir(parents=True)
    (root / "uploads" / "link.jsonl").symlink_to(outside)
    for dataset in (
        str(outside),
        "../outside.jsonl",
        "outside.jsonl",
        str(root / "uploads" / ".." / "x.jsonl"),
        str(root / "uploads" / "link.jsonl"),  # a link out of the folder
        "/etc/passwd",
        "no_such_builtin",
    ):
        with pytest.raises(JobError, match="neither a built-in name"):
            launch(root, RunSettings(model="m", dataset=dataset), read_only=False)
    assert not (root / "jobs").exists() or not any((root / "jobs").iterdir())


def test_an_uploads_folder_that_is_a_link_is_refused(root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_jsonl(elsewhere / "abc-data.jsonl", emotion_rows(1))
    root.mkdir()
    (root / "uploads").symlink_to(elsewhere)
    with pytest.raises(JobError, match="symbolic link"):
        save_upload(root, "a.jsonl", b'{"text": "a", "label": "b"}\n', read_only=False)
    with pytest.raises(JobError, match="neither a built-in name"):
        launch(root, RunSettings(model="m", dataset=str(root / "uploads" / "abc-data.jsonl")),
               read_only=False)  # fmt: skip
    from jobs import list_uploads

    assert list_uploads(root) == []


def test_log_tail_and_error_line(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("loading\rLoading weights: 50%\rLoading weights: 100%\nerror: bad layer 9\n")
    assert log_tail(log, 2) == ("Loading weights: 100%", "error: bad layer 9")
    assert last_error_line(log) == "error: bad layer 9"
    log.write_text('Traceback (most recent call last):\n  File "x"\nRuntimeError: CUDA OOM\n')
    assert last_error_line(log) == "RuntimeError: CUDA OOM"
    assert last_error_line(tmp_path / "missing.txt") is None
    (tmp_path / "link.txt").symlink_to("/etc/passwd")
    assert log_tail(tmp_path / "link.txt") == ()
    os.mkfifo(tmp_path / "fifo.txt")  # would block a plain open() for reading
    assert log_tail(tmp_path / "fifo.txt") == ()


# -- dedupe and queueing (fake extraction) -------------------------------------------------------
@pytest.mark.slow
def test_same_settings_from_many_threads_start_one_job(root, fake):
    fake.use(SLEEPER)
    barrier = threading.Barrier(8)
    results = []

    def click():
        barrier.wait()
        results.append(launch(root, run("same"), read_only=False))

    threads = [threading.Thread(target=click) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(created for _, created in results) == 1
    assert len({job.job_id for job, _ in results}) == 1
    assert len(reconcile(root)) == 1


@pytest.mark.slow
def test_same_settings_from_many_processes_start_one_job(root, fake, tmp_path):
    """Real sessions are separate processes: the registry lock is an fcntl lock on a file."""
    fake.use(SLEEPER)
    root.mkdir(parents=True)
    start_at = time.time() + 3.0  # all processes are up by then; they launch at the same moment
    script = (
        "import sys, time\n"
        "from jobs import launch\n"
        "from settings.run import RunSettings\n"
        "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
        "job, created = launch(sys.argv[1], RunSettings(model='tiny', dataset='emotions'),"
        " read_only=False)\n"
        "print(job.job_id, created)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root), str(start_at)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({job_id for job_id, _ in outputs}) == 1
    assert sorted(created for _, created in outputs) == ["False"] * 3 + ["True"]


@pytest.mark.slow
def test_jobs_beyond_max_running_queue_and_start_when_a_slot_frees(root, fake):
    fake.use(SLEEPER)
    first, _ = launch(root, run("a"), read_only=False, max_running=1)
    second, _ = launch(root, run("b"), read_only=False, max_running=1)
    wait_for(lambda: state(root, first.job_id) == "running", what="first job running")
    time.sleep(1.5)  # several worker polls: the second must still wait
    assert state(root, second.job_id) == "queued"
    cancel(root, first.job_id, read_only=False)
    wait_for(lambda: state(root, second.job_id) == "running", what="queued job to start")


@pytest.mark.slow
def test_max_running_two_runs_two_at_once(root, fake):
    fake.use(SLEEPER)
    launched = [launch(root, run(n), read_only=False, max_running=2)[0] for n in "abc"]
    wait_for(lambda: [state(root, j.job_id) for j in launched] == ["running", "running", "queued"],
             what="two running, one queued")  # fmt: skip


@pytest.mark.slow
def test_worker_runs_from_any_working_directory(root, fake, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the repository nor the store
    job, _ = launch(root, run("cwd"), read_only=False)
    wait_for(lambda: reconciled_state(root, job.job_id) == "failed", what="fake run to end")
    (argv,) = fake.argvs()  # the fake ran (and failed: it wrote no run), so the worker did
    assert f"--run-id={job.run_id}" in argv


# -- processes that die without a word -----------------------------------------------------------
@pytest.mark.slow
def test_worker_killed_alone_is_detected_and_its_child_killed(root, fake):
    fake.use("import time; print('error: disk on fire', flush=True); time.sleep(120)")
    job, _ = launch(root, run("w"), read_only=False)
    job = wait_for(lambda: (j := read_job(root, job.job_id)).child_pid and j, what="child started")
    # The child's line must be in the log before the worker dies, or there is nothing to quote.
    log = paths.log_path(paths.job_dir(root, job.job_id))
    wait_for(lambda: "disk on fire" in log.read_text(), what="the child's error line")
    os.kill(job.pid, signal.SIGKILL)  # the worker only: the extraction child is left behind
    wait_for(lambda: reconciled_state(root, job.job_id) == "failed", what="dead job detected")
    failed = read_job(root, job.job_id)
    assert "died without recording an exit" in failed.error
    assert "error: disk on fire" in failed.error
    wait_for(lambda: not alive(job.child_pid), timeout=10, what="orphaned child killed")


@pytest.mark.slow
def test_queued_job_whose_worker_died_is_marked_failed(root, fake):
    fake.use(SLEEPER)
    running, _ = launch(root, run("a"), read_only=False)
    queued, _ = launch(root, run("b"), read_only=False)
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
    status = next(s for s in list_jobs(root).statuses if s.job.job_id == job.job_id)
    return status.done or 0


def _launch_and_wait_for_rows(root: Path, tiny_models, big_dataset) -> Job:
    """A long job on the tiny llama, returned once it has written its first samples."""
    upload = save_upload(root, "big.jsonl", big_dataset, read_only=False)
    job, _ = launch(
        root,
        RunSettings(model=str(tiny_models["llama"]), dataset=str(upload), batch_size=2),
        read_only=False,
    )
    wait_for(lambda: _progress(root, job) > 0, timeout=120, what="samples written")
    return job


@pytest.mark.slow
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


@pytest.mark.slow
def test_whole_tree_killed_is_detected_and_the_partial_run_removed(root, tiny_models, big_dataset):
    job = _launch_and_wait_for_rows(root, tiny_models, big_dataset)
    os.killpg(job.pid, signal.SIGKILL)  # e.g. the OOM killer: nobody records anything
    wait_for(lambda: reconciled_state(root, job.job_id) == "failed", what="dead job detected")
    assert "died without recording an exit" in read_job(root, job.job_id).error
    assert not (root / "runs" / job.run_id).exists()


@pytest.mark.slow
def test_failed_extraction_shows_its_error_line(root):
    job, _ = launch(root, RunSettings(model="/no/such/model", dataset="emotions"), read_only=False)
    wait_for(lambda: state(root, job.job_id) == "failed", timeout=60, what="job failed")
    failed = read_job(root, job.job_id)
    assert failed.error.startswith("error: unknown model '/no/such/model'")
    assert failed.returncode == 2 and "Traceback" not in failed.error
    record = json.loads((root / "jobs" / job.job_id / "job.json").read_text())
    assert record["state"] == "failed" and record["pid"] == failed.pid
    assert "command" not in record and "log_path" not in record  # nothing to trust on disk
