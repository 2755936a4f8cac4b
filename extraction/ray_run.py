"""An extraction run on a Ray cluster: `python -m extraction run ... --ray [ADDRESS]`.

The driver (this process) does what a local run does before and after the forward passes: checks
the settings, dataset, model config and layers, tokenizes, opens (or resumes) the run folder,
writes the sample table and, once every part is in, the summaries, the manifest and the commit
marker. The forward passes run in Ray Data's batch inference: an actor pool (`map_batches` with a
callable class and `ActorPoolStrategy`), one loaded model per actor (`num_gpus` per actor where
the cluster has GPUs, one CPU otherwise).

The driver cuts the samples into the same batches a local run makes (`runner.pending_batches`:
shortest first, `--batch-size` each) and hands them out in blocks, each block a few batches with
their token ids. An actor captures each batch with the local run's own code
(`runner.batch_storer`) into a parts-only writer (`RunWriter.parts_only`) and writes the block as
one part file numbered `part_base + the block's number`: unique in the run, whichever actor
writes it, and the same when Ray retries the block on a restarted actor (the part is replaced
whole). Once every block is in, the driver takes the parts in as a resumed run does
(`RunWriter.resume`: rows, done samples, summaries), checks that no sample is missing and commits.
A part that repeats samples (which only a straggling worker of a killed earlier attempt could
write) fails the summaries' row count check: nothing is committed.

Kill and resume are a local run's: nothing is visible before the marker, and `--resume` (with or
without `--ray`) finds the run by its fingerprint and redoes only the samples of missing parts.
Ray restarts a killed actor and retries its block, so a killed worker costs a reload, not the run.

Caveats: the store must be reachable under the same name from every node (a shared folder, or an
object store); the model too (an embedded name, a Hugging Face id, or a folder present on every
node). `--generate` runs stay local for now. The model's readout is not saved by a Ray run
(`python -m extraction readout` saves it).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from extraction.datasets import Dataset
from extraction.models import resolve
from settings.run import RunSettings
from store import RunWriter, open_store
from store.fs import is_uri, store_location

_ADDRESS = re.compile(
    r"^(?:ray://)?(?P<host>[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:]{2,45}\]):(?P<port>\d{1,5})$"
)
CONNECT_TIMEOUT_S = 5.0
# Blocks per worker: more balance the load (a slow worker takes fewer), fewer write bigger parts.
BLOCKS_PER_WORKER = 4
INSTALL_HINT = "pip install -r requirements-cluster.txt"


def _log(message: str) -> None:
    print(f"[extraction] {message}", file=sys.stderr, flush=True)


# -- connecting ---------------------------------------------------------------------------------
def check_address(address: str) -> str:
    """`host:port`, `ray://host:port` or `auto`; a host:port must answer a TCP connection, so an
    unreachable cluster fails in seconds with a clear message (Ray itself retries for a minute)."""
    if address == "auto":
        return address
    match = _ADDRESS.match(address)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"--ray {address[:80]!r} is not an address: use host:port, "
                         "ray://host:port or auto (or no address for a local Ray)")  # fmt: skip
    host = match["host"].strip("[]")
    try:
        with socket.create_connection((host, int(match["port"])), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(
            f"--ray {address!r}: no Ray cluster answers there ({reason}); start one with "
            "`ray start --head`, or leave the address out for a local Ray"
        ) from None
    return address


@dataclass(frozen=True)
class Cluster:
    address: str  # what the run connected to ("local" for a Ray started here)
    started_here: bool
    cpus: float
    gpus: float


def connect(address: str | None) -> Cluster:
    """Connect to the cluster at `address`, or start a local Ray (or use the one this process
    is already connected to: a test's, a notebook's)."""
    if address is not None:
        check_address(address)
    try:
        import ray
    except ImportError:
        raise ValueError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    started_here = False
    if not ray.is_initialized():
        import logging

        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ValueError(f"--ray {address or 'local'}: cannot connect: {exc}") from None
        started_here = True
    resources = ray.cluster_resources()
    shown = address or ("local" if started_here else ray.get_runtime_context().gcs_address)
    return Cluster(shown, started_here, resources.get("CPU", 0.0), resources.get("GPU", 0.0))


# -- the workers --------------------------------------------------------------------------------
class PartWriter:
    """One Ray Data actor: loads the model once, then turns each block of batches into one part
    file of the run (named by the block's number). Returns one row per block: what it wrote,
    where, and on what."""

    def __init__(self, job: dict) -> None:
        started = time.perf_counter()
        from extraction.loading import placement_record
        from extraction.runner import Plan, batch_storer, load_model

        settings = RunSettings.from_dict(job["settings"])
        # The plan without its samples: the driver sends each batch's token ids.
        dataset = Dataset(job["dataset_name"], "", job["dataset_sha256"], ())
        model = resolve(settings.model, weights_sha256=job["weights_sha256"])  # not hashed again
        plan = Plan(settings, dataset, model, tuple(job["layers"]))
        self.loaded = load_model(plan)
        backend = self.loaded.backend
        self.writer = RunWriter.parts_only(
            store_location(job["store"]),
            job["run_id"],
            fence=job["fence"],
            d_model=backend.d_model,
            dtype=settings.dtype,
        )
        self.token_ids: dict[int, list[int]] = {}
        self.store = batch_storer(self.writer, self.loaded, plan, self.token_ids)
        self.part_base = int(job["part_base"])
        self.facts = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": str(backend.device),
            "architecture": backend.architecture,
            "n_layers": backend.n_layers,
            "d_model": backend.d_model,
            "backend": backend.name,
            "weight_processing": backend.weight_processing,
            "placement": json.dumps(placement_record(
                self.loaded.hf_model, settings.device_map, settings.quantize
            )),
            # Where a Ray run's start-up goes (the manifest's extra.ray, bench_ray): this
            # actor's imports and model load, and when it was ready (the driver's clock on one
            # machine; roughly, across machines).
            "load_s": round(time.perf_counter() - started, 3),
            "ready_at": time.time(),
        }  # fmt: skip

    def __call__(self, block: pa.Table) -> pa.Table:
        started = time.perf_counter()
        overflow, write_s = self.writer.overflow_values, self.writer.write_seconds
        samples = 0
        rows = block.to_pylist()
        for row in rows:
            indices = [int(i) for i in row["indices"]]
            if not indices:  # the driver's probe when nothing is left to do
                continue
            self.token_ids.clear()
            self.token_ids.update(zip(indices, row["token_ids"], strict=True))
            self.store(indices)
            self.writer.end_batch(indices)
            samples += len(indices)
        part = self.part_base + int(rows[0]["block"]) if samples else -1
        self.writer.flush(part=part if samples else None)
        return pa.table({
            "part": [part],
            "samples": [samples],
            "overflow": [self.writer.overflow_values - overflow],
            "write_s": [self.writer.write_seconds - write_s],
            "busy_s": [time.perf_counter() - started],
            **{key: [value] for key, value in self.facts.items()},
        })  # fmt: skip


class _Backend:
    """What the manifest reads from a backend, as the workers reported it."""

    def __init__(self, facts: dict, devices: list[str]) -> None:
        self.architecture = facts["architecture"]
        self.n_layers, self.d_model = facts["n_layers"], facts["d_model"]
        self.name, self.weight_processing = facts["backend"], facts["weight_processing"]
        self.device = ", ".join(devices)


# -- the driver ---------------------------------------------------------------------------------
def blocks_of(batches: list[list[int]], token_ids: list[list[int]], workers: int,
              max_batches: int) -> list[pa.Table]:  # fmt: skip
    """The batches in blocks of at most `max_batches` (a part's size), at least about
    BLOCKS_PER_WORKER blocks per worker; each row a batch: block number, indices, token ids."""
    if not batches:  # nothing left: one empty probe, so a worker still reports the backend
        batches = [[]]
    per_block = max(1, min(max_batches, math.ceil(len(batches) / (workers * BLOCKS_PER_WORKER))))
    blocks = []
    for number, start in enumerate(range(0, len(batches), per_block)):
        chunk = batches[start : start + per_block]
        blocks.append(pa.table({
            "block": pa.array([number] * len(chunk), pa.int64()),
            "indices": pa.array(chunk, pa.list_(pa.int32())),
            "token_ids": pa.array([[token_ids[i] for i in b] for b in chunk],
                                  pa.list_(pa.list_(pa.int32()))),
        }))  # fmt: skip
    return blocks


def batches_per_part(plan, d_model: int, mean_tokens: float, flush_bytes: int) -> int:
    """How many batches fill about `flush_bytes` of vectors (a local run's part size)."""
    s = plan.settings
    pooled = sum(p != "all" for p in s.positions) + ("all" in s.positions) * mean_tokens
    per_sample = (
        len(s.hooks) * len(plan.layers) * pooled * d_model * (2 if s.dtype == "float16" else 4)
    )
    return max(1, int(flush_bytes // max(1.0, per_sample * s.batch_size)))


def execute_on_ray(
    settings: RunSettings,
    store_root: str | Path,
    address: str | None = None,
    *,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    resume: bool = False,
    progress: bool = True,
    flush_bytes: int | None = None,
    run_id: str | None = None,
):
    """`runner.execute` with the forward passes on a Ray cluster; returns its RunResult."""
    from extraction import runner
    from extraction.loading import load_tokenizer, model_dims
    from store.writer import DEFAULT_FLUSH_BYTES

    started = time.perf_counter()
    store_root = store_location(str(store_root))  # every worker must find it under this name
    if settings.generate:
        raise ValueError("--generate runs cannot use --ray yet; run them without --ray")
    plan = runner.prepare(settings, local_device=False)  # the workers check the device they get
    if workers is not None and not 0 < workers <= 10_000:
        raise ValueError(f"--ray-workers {workers} must be in 1..10000")
    if gpus_per_worker is not None and not 0 <= gpus_per_worker <= 64:
        raise ValueError(f"--ray-gpus {gpus_per_worker} must be in 0..64")
    cluster = connect(address)
    try:
        import ray

        gpus = gpus_per_worker
        if gpus is None:
            gpus = 1.0 if cluster.gpus >= 1 and settings.device != "cpu" else 0.0
        if gpus and settings.device == "cpu":
            raise ValueError(f"--ray-gpus {gpus:g} with --device cpu: use one or the other")
        wants_gpu = (
            settings.device.startswith("cuda")
            or settings.quantize
            or str(settings.device_map).startswith("cuda")
        )
        if wants_gpu and not cluster.gpus:
            raise ValueError(f"the Ray cluster at {cluster.address} has no GPU for "
                             f"{settings.quantize and '--quantize' or '--device'}; "
                             "use --device cpu or a cluster with GPUs")  # fmt: skip
        if wants_gpu and not gpus:
            raise ValueError("--ray-gpus 0 gives the workers no GPU; drop it or ask for one")
        if workers is None:
            workers = int(cluster.gpus // gpus) if gpus else int(cluster.cpus)
        if workers < 1:
            raise ValueError(f"the Ray cluster at {cluster.address} has no room for a worker "
                             f"({cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs)")  # fmt: skip
        open_store(store_root, create=True, writable=True)
        tokenizer = load_tokenizer(plan.model)
        tokens = runner.tokenize(tokenizer, plan)
        _, d_model = model_dims(plan.model)
        flush = flush_bytes or DEFAULT_FLUSH_BYTES
        opened = runner.open_run(store_root, plan, d_model, resume=resume, run_id=run_id,
                          flush_bytes=flush)  # fmt: skip
        writer = opened.writer
        samples = runner.samples_table(opened.run_id, plan.dataset, tokens)
        writer.write_samples(samples)
        load_seconds = time.perf_counter() - started

        batches = runner.pending_batches(plan, tokens, writer.done_samples)
        mean_tokens = sum(tokens.lengths) / max(1, len(tokens.lengths))
        per_part = batches_per_part(plan, d_model, mean_tokens, flush)
        blocks = blocks_of(batches, tokens.ids, workers, per_part)
        # Fences off the workers of an earlier, killed attempt that may still be running.
        fence = writer.reserve_parts(len(blocks))
        earlier = writer.earlier_parts
        job = {
            "settings": settings.to_dict(), "layers": list(plan.layers),
            "dataset_name": plan.dataset.name, "dataset_sha256": plan.dataset.sha256,
            "weights_sha256": plan.model.weights_sha256,
            "store": store_root if is_uri(store_root) else str(store_root.resolve()),
            "run_id": opened.run_id, "part_base": fence.start, "fence": fence.token,
        }  # fmt: skip
        _log(f"{opened.run_id}: {sum(map(len, batches))} samples in {len(blocks)} blocks on "
             f"{workers} Ray worker(s) at {cluster.address}")  # fmt: skip
        extract_started, submitted_at = time.perf_counter(), time.time()
        reports = _run_actors(ray, blocks, job, workers, gpus, opened, plan, progress)
        extract_seconds = time.perf_counter() - extract_started
        # From handing the blocks to Ray Data to the first actor ready (Ray Data's start, the
        # actor's process, imports and model load): a Ray run's fixed cost on top of a local run.
        startup_seconds = max(0.0, min(r["ready_at"] for r in reports) - submitted_at)

        parts = [r["part"] for r in reports if r["part"] >= 0]
        # Take every part in as a resumed run does (rows, done samples, summaries): the lock is
        # let go for a moment only, and the same path serves a store on object storage.
        # Only the parts this attempt knows of: a part written meanwhile by a fenced-off worker
        # of an earlier attempt would hold samples twice.
        writer.close()
        writer = RunWriter.resume(store_root, opened.run_id, keep_parts={*earlier, *parts},
                                  d_model=d_model, dtype=settings.dtype,
                                  flush_bytes=flush)  # fmt: skip
        opened.writer = writer
        if writer.dropped_parts:
            _log(f"{opened.run_id}: dropped {len(writer.dropped_parts)} part(s) written by the "
                 "workers of an earlier, killed attempt")  # fmt: skip
        writer.drop_fence()
        writer.write_samples(samples)
        writer.overflow_values += sum(r["overflow"] for r in reports)
        missing = len(plan.dataset) - len(writer.done_samples)
        if missing:
            raise ValueError(
                f"the Ray workers left {missing} samples unstored; rerun with --resume"
            )
        writer.write_summaries()
        worker_rows = _workers(reports)
        devices = sorted({w["device"] for w in worker_rows})
        backend = _Backend(reports[0], devices)
        timings = runner.run_timings(
            started, load_seconds, extract_seconds, writer, len(plan.dataset) - opened.resumed,
            sum(r["write_s"] for r in reports),
        )  # fmt: skip
        placement = json.loads(reports[0]["placement"])
        manifest = runner.build_manifest(
            plan, opened, backend, tokenizer, tokens, timings, placement
        )
        manifest = replace(
            manifest,
            versions={**manifest.versions, "ray": ray.__version__},
            extra={**manifest.extra, "ray": {
                "ray_version": ray.__version__, "address": cluster.address,
                "n_workers": workers, "gpus_per_worker": gpus, "parts": len(parts),
                "earlier_parts": len(earlier), "dropped_parts": len(writer.dropped_parts),
                "startup_s": round(startup_seconds, 3), "workers": worker_rows,
            }},
        )  # fmt: skip
        writer.commit(manifest)
    finally:
        if cluster.started_here:
            ray.shutdown()
    return runner.finish(opened, manifest, [])


def _run_actors(ray, blocks, job, workers, gpus, opened, plan, progress) -> list[dict]:
    """Stream the blocks through an actor pool of PartWriters; the workers' reports, one per
    block, as they come in (progress bar and progress.json from them)."""
    import logging

    from tqdm import tqdm

    context = ray.data.DataContext.get_current()  # imports ray.data, which sets its log levels
    # Our bar reports progress and our error line the failure: Ray Data's logs would bury both.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    dataset = ray.data.from_arrow(blocks).map_batches(
        PartWriter,
        batch_size=None,  # a whole block per call: one part, the same block on a retry
        batch_format="pyarrow",
        fn_constructor_kwargs={"job": job},
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(blocks))),
        num_cpus=1,
        num_gpus=gpus or None,
    )
    total, done = len(plan.dataset), opened.resumed
    bar = tqdm(total=total, initial=done, desc=f"{plan.model.name} {plan.dataset.name} (Ray)",
               unit="sample", disable=not progress, file=sys.stderr)  # fmt: skip
    reports = []
    try:
        for report in dataset.iter_rows():
            reports.append(dict(report))
            done += report["samples"]
            bar.update(report["samples"])
            opened.writer.write_progress(done, total, run_id=opened.run_id)
    except ray.exceptions.RayError as exc:  # a worker that cannot load the model, say
        raise ValueError(
            f"a Ray worker failed ({worker_error(exc)}); the run {opened.run_id} stays "
            "uncommitted: fix the cause and rerun with --resume"
        ) from None
    finally:
        bar.close()
    return reports


def worker_error(exc: BaseException) -> str:
    """The last line of what a worker raised (`ValueError: ...`), not Ray's whole report."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*: ", line)]
    return (causes or lines or [type(exc).__name__])[-1][:400]


def _workers(reports: list[dict]) -> list[dict]:
    """One row per worker process: where it ran, on what, and how much it wrote."""
    rows: dict[tuple[str, int], dict] = {}
    for r in reports:
        row = rows.setdefault((r["host"], r["pid"]), {
            "host": r["host"], "pid": r["pid"], "device": r["device"], "parts": 0, "samples": 0,
            "busy_s": 0.0, "load_s": r["load_s"],
        })  # fmt: skip
        row["parts"] += r["part"] >= 0
        row["samples"] += r["samples"]
        row["busy_s"] = round(row["busy_s"] + r["busy_s"], 3)
    return list(rows.values())
