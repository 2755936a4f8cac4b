"""Helpers for the job tests: waiting, planting records by hand, and a fake extraction.

`FakeExtraction` puts a package named `extraction` first on the PYTHONPATH that workers inherit.
Its `__init__` appends the real package's folder to `__path__`, so `extraction.datasets` (which
the worker imports) is the real module while `python -m extraction` runs the fake `__main__`: a
Python snippet the test chooses. Every fake run appends its argv to `runs.jsonl`, so a test sees
exactly what the worker executed. Nothing in the code under test knows about this: it is the
environment the operator controls, not the store, that points Python at the fake.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import extraction
from jobs import processes

REAL_EXTRACTION = Path(extraction.__file__).resolve().parent


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def alive(pid: int | None) -> bool:
    return processes.proc_start(pid) is not None


class FakeExtraction:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.package = folder / "extraction"
        self.package.mkdir(parents=True)
        self.runs = folder / "runs.jsonl"
        (self.package / "__init__.py").write_text(f"__path__.append({str(REAL_EXTRACTION)!r})\n")
        self.use("pass")

    def use(self, script: str) -> None:
        """Make every extraction the worker starts run `script` (after recording its argv)."""
        prelude = (
            "import json, sys\n"
            f"with open({str(self.runs)!r}, 'a') as _f:\n"
            "    _f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        )
        (self.package / "__main__.py").write_text(prelude + script + "\n")

    def argvs(self) -> list[list[str]]:
        if not self.runs.exists():
            return []
        return [json.loads(line) for line in self.runs.read_text().splitlines()]


SLEEPER = "import time; print('working', flush=True); time.sleep(120)"


def settings_dict(**fields) -> dict:
    from settings.run import RunSettings

    return RunSettings(**{"model": "tiny", "dataset": "emotions", **fields}).to_dict()


def job_id(index: int) -> str:
    return f"job-20240101-000000-{index:06x}"


def record(index: int, **fields) -> dict:
    """A valid job record for `job_id(index)`, with `fields` replacing its keys."""
    data = {
        "job_id": job_id(index),
        "run_id": f"planted-20240101-000000-{index:06x}",
        "settings": settings_dict(),
        "created_at": time.time(),
        "state": "queued",
        "started_at": None,
        "ended_at": None,
        "pid": None,
        "pid_start": None,
        "child_pid": None,
        "child_start": None,
        "returncode": None,
        "error": None,
    }
    data.update(fields)
    return data


def plant(root: Path, index: int, content: bytes | dict | None = None, **fields) -> Path:
    """Write a record (bytes as given, or a dict as JSON) into jobs/<job_id(index)>/job.json."""
    folder = root / "jobs" / job_id(index)
    folder.mkdir(parents=True, exist_ok=True)
    if content is None:
        content = record(index, **fields)
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    (folder / "job.json").write_bytes(raw)
    return folder


def slow_exec(command: list[str], seconds: float) -> list[str]:
    """`command`, started through a program that sleeps `seconds` then execs it: a worker whose
    exec takes that long. The command travels as one JSON argument, so until the exec the
    process's command line is not the worker's (as during a real exec, when it is empty)."""
    code = "import json, os, sys, time; time.sleep(float(sys.argv[1])); c = json.loads(sys.argv[2])"
    return [sys.executable, "-c", code + "; os.execv(c[0], c)", str(seconds), json.dumps(command)]


def env_without_read_only() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ACTX_READ_ONLY"}
