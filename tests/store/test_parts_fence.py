"""Several writers of one run, fenced (store.writer, "Several writers of one run").

A killed Ray driver's workers can outlive it and write parts while a resumed attempt works on
the same run. These tests play both attempts with parts-only writers in one process, on a
folder and on the object store of the test S3 server: the old attempt's writer is refused once
the new attempt reserved its parts, a part it slipped in before that is dropped at commit, and
the new reservation's numbers never meet the old one's. A damaged or planted fence file fences
everyone off and reserves nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from settings.run import RunSettings
from store import RunManifest, StoreError, layout, open_store
from store.fs import RemoteStore
from store.writer import RunWriter

D = 4
SAMPLES = pa.table({"sample_idx": pa.array(range(6), pa.int32()), "label": ["a", "b"] * 3})


def _new_run(root) -> RunWriter:
    settings = {"config": RunSettings(model="m", dataset="d").to_dict()}
    driver = RunWriter.create(root, "r", settings, d_model=D, dtype="float32")
    driver.write_samples(SAMPLES)
    return driver


def _write(worker: RunWriter, part: int, batch: list[int]) -> None:
    rows = np.arange(len(batch) * D, dtype=np.float32).reshape(len(batch), D)
    worker.add("resid_post", "last", 0, np.asarray(batch), np.full(len(batch), -1), rows)
    worker.end_batch(batch)
    worker.flush(part=part)


def _parts(root, run_id="r") -> list[str]:
    if isinstance(root, str):
        files = RemoteStore(root).run_files(run_id)
        return sorted(rel.split("/")[1] for rel in files if rel.startswith("vectors/"))
    return sorted(p.name for p in (root / "runs" / run_id / "vectors").glob("part-*.parquet"))


def _play_two_attempts(root) -> RunWriter:
    """Attempt 1 reserves 3 parts, its worker writes part 0 and is 'killed'; attempt 2 resumes,
    reserves 2 parts past attempt 1's; attempt 1's worker is then refused; attempt 2's worker
    writes the rest. Returns attempt 2's writer, reopened to commit with the parts it knows."""
    first = _new_run(root)
    fence1 = first.reserve_parts(3)
    assert (fence1.start, fence1.end) == (0, 3)
    old_worker = RunWriter.parts_only(root, "r", fence=fence1.token, d_model=D, dtype="float32")
    _write(old_worker, fence1.start, [0, 1])
    first.close()  # the driver is killed: its lock goes with its process

    second = RunWriter.resume(root, "r", d_model=D, dtype="float32")
    assert second.done_samples == {0, 1} and second.earlier_parts == [0]
    fence2 = second.reserve_parts(2)
    assert (fence2.start, fence2.end) == (3, 5)  # past attempt 1's whole range
    before = _parts(root)
    with pytest.raises(StoreError, match="taken over by a newer attempt"):
        _write(old_worker, fence1.start + 1, [2, 3])
    assert _parts(root) == before  # the refused writer wrote nothing
    new_worker = RunWriter.parts_only(root, "r", fence=fence2.token, d_model=D, dtype="float32")
    _write(new_worker, fence2.start, [2, 3])
    _write(new_worker, fence2.start + 1, [4, 5])
    earlier = second.earlier_parts
    second.close()
    return RunWriter.resume(
        root, "r", keep_parts={*earlier, fence2.start, fence2.start + 1}, d_model=D,
        dtype="float32",
    )  # fmt: skip


def _commit(writer: RunWriter) -> None:
    writer.write_samples(SAMPLES)
    writer.drop_fence()
    writer.commit(RunManifest(
        run_id="r", name="r", model="synthetic", model_source="synthetic",
        architecture="synthetic", weights_sha256="0" * 64, n_layers=1, d_model=D, backend="hf",
        weight_processing="none", hooks=("resid_post",), layers=(0,), positions=("last",),
        dtype="float32", dataset_name="synth", dataset_sha256="0" * 64, n_samples=6,
        created_at="2026-12-03T00:00:00+00:00",
    ))  # fmt: skip


def test_a_fenced_off_worker_cannot_write_and_a_stray_part_is_dropped(tmp_path):
    root = tmp_path / "store"
    writer = _play_two_attempts_with_a_stray(root)
    assert writer.dropped_parts == [2]
    assert writer.done_samples == set(range(6)) and writer.rows_written == 6
    assert _parts(root) == ["part-00000.parquet", "part-00003.parquet", "part-00004.parquet"]
    assert not (root / "runs/r/tokens/part-00002.parquet").exists()
    _commit(writer)
    assert not layout.fence_path(root / "runs" / "r").exists()
    _, samples = open_store(root).vectors("r", hook="resid_post", layer=0)
    assert sorted(samples["sample_idx"].tolist()) == list(range(6))  # each sample once


def _play_two_attempts_with_a_stray(root) -> RunWriter:
    """As `_play_two_attempts`, with a part attempt 1 slipped in between attempt 2's scan and
    its reservation (a worker that checked the fence just before it changed)."""
    original = RunWriter.reserve_parts

    def reserve_after_a_stray(self, count):
        if self.earlier_parts:  # attempt 2: attempt 1's worker writes part 2 first
            stray = RunWriter.parts_only(root, "r", d_model=D, dtype="float32")
            _write(stray, 2, [2])
        return original(self, count)

    RunWriter.reserve_parts = reserve_after_a_stray
    try:
        return _play_two_attempts(root)
    finally:
        RunWriter.reserve_parts = original


def test_two_attempts_on_an_object_store(s3_store):
    writer = _play_two_attempts(s3_store)
    assert writer.dropped_parts == [] and writer.done_samples == set(range(6))
    assert layout.FENCE_FILE in RemoteStore(s3_store).run_files("r")  # kept through a resume
    _commit(writer)
    assert layout.FENCE_FILE not in RemoteStore(s3_store).run_files("r")
    assert _parts(s3_store) == ["part-00000.parquet", "part-00003.parquet", "part-00004.parquet"]
    _, samples = open_store(s3_store).vectors("r", hook="resid_post", layer=0)
    assert sorted(samples["sample_idx"].tolist()) == list(range(6))


@pytest.mark.parametrize(
    "planted",
    [
        b"not json",
        b'{"token": "x", "start": 0, "end": 3}',  # not a token of ours
        json.dumps({"token": "a" * 32, "start": 0, "end": 10**12}).encode(),  # past any name
        json.dumps({"token": "a" * 32, "start": 5, "end": 2}).encode(),
        b"{" * 5000,  # too long to be ours
    ],
)
def test_a_damaged_or_planted_fence_reserves_nothing_and_lets_no_one_write(tmp_path, planted):
    root = tmp_path / "store"
    driver = _new_run(root)
    fence = driver.reserve_parts(2)
    worker = RunWriter.parts_only(root, "r", fence=fence.token, d_model=D, dtype="float32")
    layout.fence_path(root / "runs" / "r").write_bytes(planted)
    with pytest.raises(StoreError, match="taken over"):
        _write(worker, 0, [0])
    assert _parts(root) == []
    again = driver.reserve_parts(2)  # the driver's own next part is past its first reservation
    assert (again.start, again.end) == (2, 4)


def test_a_fence_that_is_a_link_or_gone_lets_no_one_write(tmp_path):
    root = tmp_path / "store"
    driver = _new_run(root)
    fence = driver.reserve_parts(1)
    path = layout.fence_path(root / "runs" / "r")
    saved = path.read_bytes()
    (tmp_path / "elsewhere.json").write_bytes(saved)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.json")  # the same token, through a link: refused
    worker = RunWriter.parts_only(root, "r", fence=fence.token, d_model=D, dtype="float32")
    with pytest.raises(StoreError, match="taken over"):
        _write(worker, 0, [0])
    path.unlink()
    driver.drop_fence()
    with pytest.raises(StoreError, match="taken over"):
        _write(worker, 0, [0])
    path.write_bytes(saved)
    _write(worker, 0, [0])  # the token back in place: writes
    assert _parts(root) == ["part-00000.parquet"]
