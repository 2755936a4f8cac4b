"""Fixtures of the job tests: a store root that cleans up its jobs, and the fake extraction."""

from __future__ import annotations

import os

import pytest

from jobs import cancel, reconcile
from tests.jobs.helpers import FakeExtraction


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    monkeypatch.delenv("ACTX_QUEUE_HOURS", raising=False)
    store_root = tmp_path / "store"
    yield store_root
    # Never leak a job's processes into the rest of the session.
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    for job in reconcile(store_root) if store_root.exists() else []:
        if job.active:
            cancel(store_root, job.job_id, read_only=False, timeout=2)


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeExtraction:
    """Workers started in this test run a fake `python -m extraction` (see tests.jobs.helpers)."""
    fake = FakeExtraction(tmp_path / "fake")
    paths = [str(fake.folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    return fake
