"""Job kinds: a kind defined here, in the test, goes through the same registry as `run`.

`PROBE` is a real kind: its settings record (one layer of one model over one dataset) runs as
`python -m extraction run --layers=L --hooks=resid_post --positions=last ...`, a real, fast verb.
The pytest process registers it with `jobs.kinds.register`; workers are separate processes and
learn it the way an operator's environment teaches Python anything: a `sitecustomize` first on
the PYTHONPATH they inherit loads this file and registers `PROBE` (nothing in jobs/ knows about
it). The end-to-end test runs the real extraction on the tiny llama; dedupe, cancel and the
never-run checks run the real worker with the fake extraction (tests.jobs.helpers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs import (
    KINDS,
    JobError,
    JobKind,
    ReadOnlyError,
    cancel,
    kind_of,
    launch,
    list_jobs,
    processes,
    read_job,
    register,
    save_upload,
)
from jobs.kinds import RUN, committed_run_input, resolve_dataset_input
from jobs.records import parse_record
from settings.records import settings_from_dict, settings_to_dict
from settings.run import RunSettings, check_int, check_text
from store import open_store
from store.writer import is_committed_run, remove_partial_run
from tests.jobs.helpers import alive, job_id, plant, record, wait_for
from tests.support.synthetic import write_run
from tests.support.tiny import emotion_rows

HERE = Path(__file__).resolve()


@dataclass(frozen=True)
class ProbeSettings:
    """One layer's last-token residual stream of one model over one dataset."""

    model: str
    dataset: str
    layer: int = 0

    def __post_init__(self) -> None:
        check_text("model", self.model)
        check_text("dataset", self.dataset)
        check_int("layer", self.layer, 0, 64)

    def to_dict(self) -> dict:
        return settings_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> ProbeSettings:
        return settings_from_dict(cls, data, "probe")

    def argv(self) -> tuple[str, ...]:
        return (f"--model={self.model}", f"--dataset={self.dataset}", f"--layers={self.layer}",
                "--hooks=resid_post", "--positions=last")  # fmt: skip


PROBE = JobKind(
    name="probe",
    settings=ProbeSettings,
    verb="run",
    output_flag="--run-id",
    output_base=lambda settings: f"probe-L{settings.layer}",
    is_committed=is_committed_run,
    remove_partial=remove_partial_run,
    prepare=resolve_dataset_input,
    fixed_args=("--no-progress",),
)

SITECUSTOMIZE = f"""\
import importlib.util, sys
if "jobs.worker" in sys.orig_argv:  # the worker needs the kind; its extraction child does not
    spec = importlib.util.spec_from_file_location("probe_kind_test", {str(HERE)!r})
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    from jobs.kinds import register
    register(module.PROBE)
"""


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """PROBE registered here and in every worker started from here."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    paths = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    register(PROBE)
    yield PROBE
    KINDS.pop(PROBE.name)


def probe_at(layer: int, **fields) -> ProbeSettings:
    return ProbeSettings(**{"model": "tiny", "dataset": "emotions", "layer": layer, **fields})


def state(root: Path, job_id: str) -> str:
    return read_job(root, job_id).state


# -- the registry itself -------------------------------------------------------------------------
def test_kinds_are_checked_when_registered(probe):
    assert kind_of(probe_at(1)) is probe and kind_of(RunSettings(model="m", dataset="d")) is RUN
    with pytest.raises(JobError, match="object are not the settings of a job kind"):
        kind_of(object())
    with pytest.raises(ValueError, match="'probe' is registered already"):
        register(PROBE)
    with pytest.raises(ValueError, match="ProbeSettings belongs to another job kind"):
        register(JobKind(**{**PROBE.__dict__, "name": "probe-two"}))
    with pytest.raises(ValueError, match="verb 'run; rm' of job kind"):
        JobKind(**{**PROBE.__dict__, "verb": "run; rm"})
    with pytest.raises(ValueError, match="settings of job kind probe have no to_dict"):
        JobKind(**{**PROBE.__dict__, "settings": dict})


def test_a_run_input_must_be_a_committed_run_of_this_store(root):
    run_id = write_run(root, "done-20240101-000000-abcdef", emotion_rows(2))
    assert committed_run_input(root, run_id) == run_id
    (root / "runs" / "partial-20240101-000000-abcdef").mkdir()
    for bad in ("partial-20240101-000000-abcdef", "missing", "../runs", "", None):
        with pytest.raises(JobError, match="is not a committed run of this store"):
            committed_run_input(root, bad)


def test_processes_are_recognised_by_the_kinds_verb(tmp_path, probe):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", "-m", "extraction"]
    tail = [f"--store={tmp_path}", "--run-id=x-20240101-000000-abcdef"]
    wrong = subprocess.Popen([*sleeper, "sae", *tail])
    right = subprocess.Popen([*sleeper, "run", *tail])
    try:
        for proc in (wrong, right):
            wait_for(lambda p=proc: "-m" in processes.proc_cmdline(p.pid), what="exec")
        starts = {p.pid: processes.proc_start(p.pid) for p in (wrong, right)}
        out = "x-20240101-000000-abcdef"
        assert processes.is_extraction(right.pid, starts[right.pid], tmp_path, probe, out)
        assert not processes.is_extraction(wrong.pid, starts[wrong.pid], tmp_path, probe, out)
        assert not processes.is_extraction(right.pid, starts[right.pid], tmp_path, probe, "y")
    finally:
        for proc in (wrong, right):
            proc.kill()
            proc.wait()


# -- launched, listed, finished (the real extraction) --------------------------------------------
@pytest.mark.slow  # seconds: a real extraction process
def test_a_new_kind_runs_the_real_extraction_and_is_listed(probe, root, tiny_models):
    rows = "".join(json.dumps(row) + "\n" for row in emotion_rows(per_label=1))
    upload = save_upload(root, "probe.jsonl", rows.encode(), read_only=False)
    settings = probe_at(1, model=str(tiny_models["llama"]), dataset=str(upload))
    job, created = launch(root, settings, read_only=False)
    assert created and job.kind == "probe" and job.run_id.startswith("probe-L1-")
    wait_for(lambda: state(root, job.job_id) == "done", timeout=120, what="the probe job")
    (status,) = list_jobs(root).statuses
    assert status.job.kind == "probe" and status.job.settings == settings
    manifest = open_store(root).manifest(job.run_id)
    assert manifest.layers == (1,) and manifest.hooks == ("resid_post",)
    assert manifest.positions == ("last",)
    assert json.loads((root / "jobs" / job.job_id / "job.json").read_text())["kind"] == "probe"


# -- damaged and planted records of the new shape ------------------------------------------------
def _record(index: int, **fields) -> dict:
    return record(index, **{"kind": "probe", "settings": probe_at(2).to_dict(), **fields})


PLANTED = {
    "unknown kind": ({"kind": "nope"}, "unknown job kind 'nope'"),
    "kind not text": ({"kind": ["probe"]}, "unknown job kind ['probe']"),
    "run settings as probe": ({"settings": RunSettings(model="m", dataset="d").to_dict()},
                              "unknown probe setting '"),  # the first of several, sorted
    "probe settings as run": ({"kind": "run"}, "unknown run setting 'layer'"),
    "probe settings partial": ({"settings": {"model": "m"}}, "probe settings incomplete"),
    "probe layer": ({"settings": probe_at(2).to_dict() | {"layer": "2; rm"}}, "layer '2; rm'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PLANTED))
def test_records_of_the_new_shape_are_read_strictly(probe, case):
    fields, reason = PLANTED[case]
    assert parse_record(json.dumps(_record(0)).encode(), job_id(0)).settings == probe_at(2)
    with pytest.raises(ValueError, match=reason.replace("[", r"\[")):
        parse_record(json.dumps(_record(0, **fields)).encode(), job_id(0))


# -- launched, deduped, cancelled; broken records never run (the fake extraction) ----------------
PARTIAL = """\
import sys, time
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
run = Path(args["--store"]) / "runs" / args["--run-id"]
run.mkdir(parents=True)
(run / "part-0.parquet").write_bytes(b"partial")
print("working", flush=True)
time.sleep(120)
"""


def test_a_new_kind_queues_dedupes_cancels_and_broken_records_never_run(probe, root, fake):
    for index, (fields, _reason) in enumerate(PLANTED.values(), start=1):
        plant(root, index, _record(index, **fields))
    fake.use(PARTIAL)
    job, created = launch(root, probe_at(1), read_only=False)
    again, created_again = launch(root, probe_at(1), read_only=False)
    assert created and not created_again and again.job_id == job.job_id
    # Dedupe is per kind: a run job is another job, queued behind the probe (one slot for all).
    as_run, created_run = launch(root, RunSettings(model="tiny", dataset="emotions"),
                                 read_only=False)  # fmt: skip
    assert created_run and as_run.kind == "run"
    edited, _ = launch(root, probe_at(3), read_only=False)
    path = root / "jobs" / edited.job_id / "job.json"
    record_on_disk = json.loads(path.read_text()) | {"kind": "run"}  # probe settings, run kind
    path.with_name("edit.tmp").write_text(json.dumps(record_on_disk))
    os.replace(path.with_name("edit.tmp"), path)

    running = wait_for(lambda: (j := read_job(root, job.job_id)).child_pid and j, what="child")
    partial = root / "runs" / job.run_id
    wait_for(partial.is_dir, what="the partial output")
    (argv,) = fake.argvs()  # rebuilt by the worker from the probe's own settings
    assert argv[0] == "run" and "--layers=1" in argv and "--positions=last" in argv
    statuses = {s.job.job_id: s.job for s in list_jobs(root).statuses}
    assert statuses[job.job_id].kind == "probe" and statuses[as_run.job_id].state == "queued"

    fake.use("pass")
    assert cancel(root, job.job_id, read_only=False).state == "cancelled"
    # Signalled and exiting (its command line is already gone): give the kernel a moment.
    wait_for(lambda: not alive(running.pid) and not alive(running.child_pid), timeout=10,
             what="the cancelled job's processes to end")  # fmt: skip
    assert not partial.exists()
    wait_for(lambda: len(fake.argvs()) == 2, what="the run job to run")
    runs = [next(a for a in argv if a.startswith("--run-id=")) for argv in fake.argvs()]
    assert runs == [f"--run-id={job.run_id}", f"--run-id={as_run.run_id}"]
    broken = {b.folder: b.reason for b in list_jobs(root).broken}
    assert "unknown run setting 'layer'" in broken[edited.job_id]
    assert len(broken) == len(PLANTED) + 1
    for reason in (reason for _fields, reason in PLANTED.values()):
        assert any(reason in text for text in broken.values()), reason
    wait_for(lambda: not alive(edited.pid), timeout=30, what="the edited job's worker leaves")
    assert len(fake.argvs()) == 2  # the edited record never ran


# -- read-only -----------------------------------------------------------------------------------
def test_read_only_refuses_a_new_kind_and_lists_it_without_writing(probe, root, monkeypatch):
    with pytest.raises(ReadOnlyError, match="read-only mode"):
        launch(root, probe_at(1), read_only=True)
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    with pytest.raises(ReadOnlyError, match="read-only mode"):
        launch(root, probe_at(1), read_only=False)
    assert not root.exists()
    folder = plant(root, 1, _record(1, state="running", pid=2**31 - 1, pid_start=1))
    before = (folder / "job.json").read_bytes()
    (status,) = list_jobs(root).statuses
    assert status.job.kind == "probe" and status.job.state == "failed"  # shown, not written
    assert (folder / "job.json").read_bytes() == before
    with pytest.raises(ReadOnlyError):
        cancel(root, status.job.job_id, read_only=False)
