"""`python -m jobs.steer_worker --store=DIR`: the process that answers the app's steering requests.

Started by `jobs.steering.submit` (never by hand) in its own session, with `STORE/steering` as
working directory. At start it checks, under the queue lock, that the worker record names it
(else another worker owns the queue and it exits). Then it answers requests one at a time, oldest
first: each request file is read strictly (jobs.steering.read_request), the vector set is read
from this store by its validated id, the model is the set's own (its weights hash checked) and is
kept loaded for the next request; the outcome is written as a result file and the request
removed. A request that fails (malformed, unknown set, generation error) gets a failed result
naming why; the worker goes on. After ACTX_STEER_IDLE_S seconds without a request it removes its
record (under the lock, only if nothing is pending) and exits, freeing the model's memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from jobs import steering
from jobs.logs import WORKER_TAG
from jobs.paths import local_store_root
from jobs.processes import proc_start
from store import open_store

POLL_S = 0.1


def _log(message: str) -> None:
    print(f"{WORKER_TAG} {message}", flush=True)


class Worker:
    """One store's steering worker: its queue, and the model it holds (one at a time)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loaded = None
        self.loaded_for: tuple[str, str] | None = None  # (model, weights hash) of `loaded`

    def _model(self, manifest):
        from extraction.steering import load_for

        key = (manifest.model, manifest.weights_sha256)
        if self.loaded_for != key:
            self.loaded = self.loaded_for = None  # drop the old model before loading another
            started = time.perf_counter()
            self.loaded = load_for(manifest, "auto")
            self.loaded_for = key
            _log(f"loaded {manifest.model} in {time.perf_counter() - started:.1f} s")
        return self.loaded

    def answer(self, req_id: str) -> steering.SteerOutcome:
        from extraction.steering import steer

        try:
            request = steering.read_request(self.root, req_id)
        except (OSError, ValueError) as exc:
            return steering.SteerOutcome("failed", error=f"the request is malformed: {exc}"[:500])
        try:
            vector_set = open_store(self.root).vector_set(request.vector_set)
            loaded = self._model(vector_set.manifest)
            result = steer(loaded.hf_model, loaded.tokenizer, vector_set, request)
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the service
            return steering.SteerOutcome("failed", error=str(exc)[:1000] or type(exc).__name__)
        answers = {k: v[: steering.MAX_ANSWER_CHARS] for k, v in result.answers.items()}
        return steering.SteerOutcome(
            "done", answers, result.layers, result.strength, result.seconds
        )

    def serve(self, idle: float) -> int:
        last = time.monotonic()
        while True:
            pending = steering.pending_requests(self.root)
            if not pending:
                if time.monotonic() - last > idle and self._retire():
                    return 0
                time.sleep(POLL_S)
                continue
            req_id = pending[0]
            outcome = self.answer(req_id)
            steering.write_result(self.root, req_id, outcome)
            with contextlib.suppress(OSError):
                os.unlink(steering.request_path(self.root, req_id))
            _log(f"{req_id} {outcome.state} {outcome.error or ''}".rstrip())
            steering.remove_old_results(self.root)
            last = time.monotonic()

    def _retire(self) -> bool:
        """Under the lock: give up the queue if it is empty (a request that arrives later will
        start a new worker). Returns whether this worker should exit."""
        with steering.locked(self.root):
            if steering.pending_requests(self.root):
                return False
            record = steering.WorkerRecord.read(self.root)
            if record is not None and record.pid == os.getpid():
                with contextlib.suppress(OSError):
                    os.unlink(steering.worker_record_path(self.root))
        _log("idle: exiting")
        return True


def run(root: str | Path, idle: float | None = None) -> int:
    root = local_store_root(root)
    with steering.locked(root):
        record = steering.WorkerRecord.read(root)
        if (
            record is None
            or record.pid != os.getpid()
            or record.pid_start != proc_start(os.getpid())
        ):
            _log("another worker owns this queue: exiting")
            return 0
    _log("ready")
    return Worker(root).serve(steering.idle_seconds() if idle is None else idle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.steer_worker", description=__doc__)
    parser.add_argument("--store", required=True, type=Path)
    args = parser.parse_args(argv)
    return run(args.store)


if __name__ == "__main__":
    sys.exit(main())
