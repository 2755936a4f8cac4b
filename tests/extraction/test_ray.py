"""`python -m extraction run --ray`: a real local Ray cluster with two CPU workers.

One cluster for the session (started in a fixture, shut down in `finally`). The model is a small
random Llama (wide enough that a block takes a moment, so a worker can be killed mid-run); every
Ray run is compared with a local run of the same settings: the stored vectors must be equal,
bit for bit, in the same dtype.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from extraction.__main__ import main
from settings.run import RunSettings
from store import StoreError, open_store
from store.writer import RunWriter, list_uncommitted
from tests.jobs.helpers import wait_for
from tests.support.tiny import emotion_rows, write_jsonl

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
HOOKS = "resid_pre,resid_post"
DEADLINE_S = 600  # generous: each actor imports torch, slow on a loaded machine


def _wide_llama(folder: Path) -> Path:
    """A random Llama of 4 blocks, 128 wide (a batch takes tens of milliseconds on one core)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.support.tiny import _tokenizer

    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=259, pad_token_id=0, hidden_size=128,
                             intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2)  # fmt: skip
        LlamaForCausalLM(config).save_pretrained(folder)
        _tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """A local Ray with two CPUs (two workers of one CPU each), for the whole session. Started
    after the S3 server, so its workers inherit the AWS_* environment pointing at it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The model, a dataset of 24 long-ish samples, and a local run of them (the reference)."""
    root = tmp_path_factory.mktemp("ray")
    model = _wide_llama(root / "llama")
    rows = emotion_rows(per_label=8)
    for row in rows:
        row["text"] = (row["text"] + " ") * 6
    dataset = write_jsonl(root / "emo.jsonl", rows)
    args = ["--model", str(model), "--dataset", str(dataset), "--hooks", HOOKS,
            "--layers", "0,3", "--batch-size", "2", "--no-progress"]  # fmt: skip
    local = root / "local"
    assert main(["run", *args, "--store", str(local), "--run-id", "local"]) == 0
    return {"root": root, "args": args, "local": open_store(local)}


def _assert_same_vectors(store, run_id, local) -> None:
    for hook in HOOKS.split(","):
        for layer in (0, 3):
            for position in ("last", "mean"):
                mine, samples = store.vectors(run_id, hook, layer, position)
                theirs, _ = local.vectors("local", hook, layer, position)
                assert mine.dtype == theirs.dtype
                np.testing.assert_array_equal(mine, theirs)
    assert store.samples(run_id)["id"].tolist() == local.samples("local")["id"].tolist()
    status = store.summary_status(run_id)
    assert status is None, status


def _part_writer_pids() -> list[int]:
    """Processes of live PartWriter actors (Ray names a worker's process after its actor)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"PartWriter" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _remote_parts(s3_server, uri: str, run_id: str) -> list[str]:
    from pyarrow import fs as pafs

    base = f"{uri.split('://', 1)[1]}/runs/{run_id}/vectors"
    found = s3_server.filesystem().get_file_info(pafs.FileSelector(base, allow_not_found=True))
    return [info.path for info in found if info.base_name.startswith("part-")]


def test_a_run_into_s3_survives_a_killed_worker_and_equals_a_local_run(
    ray_cluster, work, s3_server, s3_store, monkeypatch
):
    """The issue's "done when": --ray into an s3:// store on the test server commits the same
    vectors as a local run, survives a killed worker, and shows up in the app reading that
    store (hosted read-only)."""
    argv = ["run", *work["args"], "--store", s3_store, "--run-id", "on-ray", "--ray",
            "--flush-mb", "0.001"]  # fmt: skip
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("rc", main(argv)))
    thread.start()
    try:
        wait_for(lambda: _remote_parts(s3_server, s3_store, "on-ray"), DEADLINE_S, "a part")
        alive = _part_writer_pids()
        assert alive, "no PartWriter process found"
        os.kill(alive[0], signal.SIGKILL)
    finally:
        thread.join(DEADLINE_S)
    assert outcome.get("rc") == 0

    store = open_store(s3_store)  # what the app reads with ACTX_STORE=s3://...
    assert store.run_ids() == ["on-ray"]
    manifest = store.manifest("on-ray")
    _assert_same_vectors(store, "on-ray", work["local"])
    local = work["local"].manifest("local")
    assert manifest.extra["fingerprint"] == local.extra["fingerprint"]
    assert manifest.row_counts["vector_rows"] == local.row_counts["vector_rows"]
    ray_record = manifest.extra["ray"]
    assert ray_record["ray_version"] == ray.__version__ == manifest.versions["ray"]
    assert ray_record["n_workers"] == 2 and ray_record["gpus_per_worker"] == 0
    workers = ray_record["workers"]
    assert sum(w["samples"] for w in workers) == 24
    assert {w["device"] for w in workers} == {"cpu"} and all(w["host"] for w in workers)
    # The killed actor's blocks were done again, once (whether by its restarted process or the
    # other actor is Ray's choice: equal vectors and 24 samples in all say no block was lost).
    assert not Path(f"/proc/{alive[0]}").exists() or alive[0] not in _part_writer_pids()
    assert ray_record["parts"] == len(_remote_parts(s3_server, s3_store, "on-ray"))
    assert manifest.device == "cpu" and manifest.n_layers == 4 and manifest.d_model == 128

    from streamlit import config

    from tests.ui.apptest import charts, open_page

    monkeypatch.setenv("ACTX_STORE", s3_store)
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    # A read-only run hides error details for the whole process: undo it for later tests.
    error_details = config.get_option("client.showErrorDetails")
    try:
        runs = open_page("pages/runs.py")
        directions = open_page("pages/directions.py", {"runs": "on-ray"})
    finally:
        config.set_option("client.showErrorDetails", error_details)
    assert runs.dataframe[0].value["run_id"].tolist() == ["on-ray"]
    assert not directions.error, [e.value for e in directions.error]
    # Directions draws that run: it is the one chosen, and its charts hold its labels' lines.
    assert directions.multiselect(key="runs").value == ["on-ray"]
    drawn = [frame for frame in charts(directions).values() if "label" in frame]
    assert len(drawn) >= 4 and all(len(frame) for frame in drawn)
    labels = set(open_store(s3_store).samples("on-ray")["label"]) - {"neutral"}
    assert set(drawn[0]["label"]) == labels


def test_a_killed_driver_leaves_nothing_and_resume_redoes_the_rest(ray_cluster, work, tmp_path):
    store_root = tmp_path / "store"
    parts = store_root / "runs" / "killed" / "vectors"
    argv = [sys.executable, "-m", "extraction", "run", *work["args"], "--store", str(store_root),
            "--run-id", "killed", "--ray", ray_cluster, "--flush-mb", "0.001"]  # fmt: skip
    driver = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: list(parts.glob("part-*.parquet")) or driver.poll() is not None,
                 DEADLINE_S, "the driver's first part")  # fmt: skip
        driver.kill()
    finally:
        driver.kill()
        stderr = driver.communicate(timeout=DEADLINE_S)[1].decode()
    assert driver.returncode == -signal.SIGKILL, stderr
    assert open_store(store_root).runs() == []
    assert [p.name for p in list_uncommitted(store_root)] == ["killed"]
    kept = len(list(parts.glob("part-*.parquet")))

    resume = ["run", *work["args"], "--store", str(store_root), "--resume", "--ray"]
    assert main(resume) == 0
    store = open_store(store_root)
    manifest = store.manifest("killed")
    assert 0 < manifest.row_counts["resumed_samples"] < 24
    # The killed driver's workers may outlive it and write a part or two more (before the
    # resume saw the run: kept as earlier parts; after: dropped); every part left is known.
    ray_facts = manifest.extra["ray"]
    assert ray_facts["earlier_parts"] >= kept
    on_disk = len(list(parts.glob("part-*.parquet")))
    assert ray_facts["parts"] + ray_facts["earlier_parts"] == on_disk
    assert not (parts.parent / "parts_fence.json").exists()
    _assert_same_vectors(store, "killed", work["local"])


def test_an_unreachable_address_is_one_error_line(tiny_models, tmp_path, capsys):
    dataset = write_jsonl(tmp_path / "emo.jsonl", emotion_rows(per_label=1))
    args = ["--model", str(tiny_models["gpt2"]), "--dataset", str(dataset)]
    for address, says in (("127.0.0.1:9", "no Ray cluster answers there"),
                          ("no address", "is not an address")):  # fmt: skip
        argv = ["run", *args, "--store", str(tmp_path / "s"), "--ray", address]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --ray") and says in err[0], err
    assert not (tmp_path / "s").exists()
    assert main(["run", *args, "--store", str(tmp_path / "s"), "--ray-workers", "2"]) == 2
    assert "need --ray" in capsys.readouterr().err


def test_a_worker_that_cannot_load_the_model_fails_the_run_in_one_line(
    ray_cluster, work, tmp_path, capsys
):
    store_root = tmp_path / "store"
    argv = ["run", *work["args"], "--store", str(store_root), "--ray", "--device-map",
            str(tmp_path / "absent.json")]  # fmt: skip
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: a Ray worker failed (ValueError: device map"), last
    assert "absent.json" in last and "rerun with --resume" in last
    assert open_store(store_root).runs() == []


def test_parts_only_writers_then_a_commit_through_resume(tmp_path):
    root = tmp_path / "store"
    settings = {"config": RunSettings(model="m", dataset="d").to_dict()}
    driver = RunWriter.create(root, "r", settings, d_model=4, dtype="float32")
    samples = pa.table({"sample_idx": pa.array(range(4), pa.int32()), "label": ["a", "b"] * 2})
    driver.write_samples(samples)
    worker = RunWriter.parts_only(root, "r", d_model=4, dtype="float32")
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    for part, batch in ((7, [0, 1]), (9, [2, 3])):
        worker.add("resid_post", "last", 0, np.asarray(batch), np.full(2, -1), rows)
        worker.end_batch(batch)
        worker.flush(part=part)
    assert not (root / "runs/r/summaries").exists() and driver.next_part == 0
    driver.close()
    resumed = RunWriter.resume(root, "r", d_model=4, dtype="float32")
    assert resumed.done_samples == {0, 1, 2, 3} and resumed.rows_written == 4
    assert resumed.next_part == 10
    resumed.write_samples(samples)
    assert resumed.write_summaries()
    (root / "runs/r/_COMMITTED").write_text("x")
    with pytest.raises(StoreError, match="not an uncommitted run"):
        RunWriter.parts_only(root, "r", d_model=4, dtype="float32")
