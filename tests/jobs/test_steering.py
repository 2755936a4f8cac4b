"""The steering service: a real worker process answers queued requests with the model kept
loaded, refuses nothing it should answer, trusts no file it did not check, and leaves when idle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from jobs import JobError, ReadOnlyError, steering
from jobs.processes import proc_start
from settings.vectors import SteerSettings
from tests.jobs.helpers import alive, slow_exec, wait_for


@pytest.fixture
def service(tiny_paired_store, tmp_path, monkeypatch):
    """A copy of the paired store; whatever worker the test starts is stopped afterwards."""
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    monkeypatch.setenv("ACTX_STEER_IDLE_S", "20")
    root = tmp_path / "store"
    shutil.copytree(tiny_paired_store["root"], root)
    yield {"root": root.resolve(), "set_id": tiny_paired_store["set_id"]}
    record = steering.WorkerRecord.read(root.resolve())
    if steering.is_worker(record, root.resolve()):
        os.kill(record.pid, signal.SIGTERM)
        wait_for(lambda: not alive(record.pid), 30, "the worker to stop")


def _request(set_id, **changes) -> SteerSettings:
    fields = {"prompt": "Hello there", "vector_set": set_id, "strength": 2.0,
              "max_new_tokens": 4, **changes}  # fmt: skip
    return SteerSettings(**fields)


def _answer(root, req_id, timeout=180.0):
    return wait_for(lambda: steering.poll(root, req_id), timeout, f"an answer to {req_id}")


@pytest.mark.slow  # seconds: a worker process loads the model
def test_one_worker_answers_requests_with_its_model_loaded_then_leaves(service, monkeypatch):
    """One worker's life: started in place of a planted record, two requests on one model
    load, a malformed request answered as failed, then an idle exit."""
    monkeypatch.setenv("ACTX_STEER_IDLE_S", "6")
    root = service["root"]
    (root / "steering").mkdir()
    me = os.getpid()  # a live process with its real start time, but not a steering worker
    steering.WorkerRecord(me, proc_start(me), time.time()).write(root)
    assert steering.live_worker(root) is None
    first = _answer(root, steering.submit(root, _request(service["set_id"]), read_only=False))
    assert first.state == "done", first.error
    assert set(first.answers) == {"baseline", "steered", "control"} and first.layers == (0, 1, 2, 3)
    worker = steering.live_worker(root)
    assert worker is not None and worker.pid != me  # a real worker replaced the planted record
    second = _answer(root, steering.submit(root, _request(service["set_id"], strength=0.0),
                                           read_only=False))  # fmt: skip
    assert second.state == "done" and len(set(second.answers.values())) == 1
    assert steering.live_worker(root) == worker  # the same process answered
    log = steering.log_path(root).read_text()
    assert log.count("loaded ") == 1, log  # one model load for both requests
    # A malformed request in the queue is answered as failed; the worker goes on.
    bad = steering.new_request_id()
    steering.request_path(root, bad).write_text('{"settings": {"prompt": "x", "rm -rf": 1}}')
    outcome = _answer(root, bad)
    assert outcome.state == "failed" and "unknown steer setting 'rm -rf'" in outcome.error
    third = _answer(root, steering.submit(root, _request(service["set_id"], layers="2"),
                                          read_only=False))  # fmt: skip
    assert third.state == "done" and third.layers == (2,)
    assert steering.live_worker(root) == worker
    wait_for(lambda: not alive(worker.pid), 60, "the idle worker to exit")
    assert not steering.worker_record_path(root).exists()
    # With no worker, a request nobody will answer reads as failed, not pending forever.
    orphan = steering.new_request_id()
    steering.request_path(root, orphan).write_text(
        json.dumps({"settings": _request(service["set_id"]).to_dict()})
    )
    assert steering.poll(root, orphan).state == "failed"
    (root / "steering" / "worker.json").write_text('{"pid": "1; rm -rf /"}')
    assert steering.live_worker(root) is None


def test_read_only_mode_refuses_and_writes_nothing(service, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    with pytest.raises(ReadOnlyError):
        steering.submit(service["root"], _request(service["set_id"]), read_only=False)
    with pytest.raises(ReadOnlyError):
        steering.submit(service["root"], _request(service["set_id"]), read_only=True)
    assert not (service["root"] / "steering").exists()


def test_requests_for_unknown_sets_are_refused_before_anything_starts(service):
    with pytest.raises(JobError, match="no committed vector set 'nope'"):
        steering.submit(service["root"], _request("nope"), read_only=False)
    with pytest.raises(JobError, match="needs SteerSettings"):
        steering.submit(service["root"], {"prompt": "x"}, read_only=False)
    assert steering.live_worker(service["root"]) is None
    for hostile in ("../../etc/passwd", "req-1", "x" * 300):
        with pytest.raises(ValueError, match="request id"):
            steering.poll(service["root"], hostile)


def test_a_malformed_result_reads_as_failed(service):
    root = service["root"]
    (root / "steering" / "results").mkdir(parents=True)
    req_id = steering.new_request_id()
    steering.result_path(root, req_id).write_text('{"state": "done", "answers": {"x": 1}}')
    outcome = steering.poll(root, req_id)
    assert outcome.state == "failed" and "malformed" in outcome.error
    steering.result_path(root, req_id).unlink()
    steering.result_path(root, req_id).symlink_to("/etc/passwd")
    assert "unreadable" in steering.poll(root, req_id).error


def test_a_worker_still_in_its_exec_is_not_taken_for_gone(service, monkeypatch):
    """A poll right after the submit, while the new worker's exec is still under way (its
    command line not yet in /proc: stretched to 0.5 s here), used to find no live worker and
    fail the request ("the steering worker stopped")."""
    root = service["root"]
    real = steering.worker_command
    monkeypatch.setattr(steering, "worker_command", lambda *a: slow_exec(real(*a), 0.5))
    req_id = steering.submit(root, _request(service["set_id"]), read_only=False)
    assert steering.live_worker(root) is not None
    assert steering.poll(root, req_id) is None  # pending, not failed
