"""The `vectors` job kind: the app's way to compute a vector set, through the real worker and the
real `python -m extraction vectors`."""

from __future__ import annotations

import shutil

import pytest

from jobs import JobError, ReadOnlyError, launch, read_job
from settings.vectors import VectorSettings
from store import open_store
from tests.jobs.helpers import wait_for


@pytest.fixture
def paired_root(tiny_paired_store, tmp_path, monkeypatch):
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    root = tmp_path / "store"
    shutil.copytree(tiny_paired_store["root"], root)
    return root.resolve(), tiny_paired_store["run_id"]


@pytest.mark.slow  # a worker and an extraction process: 3.1 s of wall time measured (load 9)
def test_a_vectors_job_makes_a_committed_set(paired_root):
    root, run_id = paired_root
    settings = VectorSettings(run=run_id[:12], method="mean_diff", layers="1-3")
    job, created = launch(root, settings, read_only=False)
    assert created and job.kind == "vectors" and job.run_id.startswith("mean_diff-")
    done = wait_for(lambda: (j := read_job(root, job.job_id)).state not in ("queued", "running")
                    and j, 180, "the vectors job to end")  # fmt: skip
    assert done.state == "done", done.error
    vector_set = open_store(root).vector_set(job.run_id)  # the job's output id is the set id
    assert vector_set.manifest.run_id == run_id and vector_set.layers == (1, 2, 3)


def test_bad_vectors_jobs_are_refused_at_launch(paired_root, monkeypatch):
    root, run_id = paired_root
    with pytest.raises(JobError, match="no committed run 'nope'"):
        launch(root, VectorSettings(run="nope"), read_only=False)
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    with pytest.raises(ReadOnlyError):
        launch(root, VectorSettings(run=run_id), read_only=False)
    assert not (root / "jobs").exists() or not any((root / "jobs").glob("job-*"))
