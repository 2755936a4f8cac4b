"""Ray benchmark: a `--ray` run against a local run on the same data, in the same process.

    .venv/bin/python bench/bench_ray.py            # SmolLM2-135M over the emotions, every layer
    .venv/bin/python bench/bench_ray.py --quick    # 48 samples, layers 0-9

One local Ray cluster (started once; its start-up is reported apart), then, in turn:

  local 1t   `python -m extraction run` with one torch thread: what one Ray actor (one CPU,
             one thread) has
  local      the same as it runs on one machine (all cores, one model)
  ray x1     `--ray --ray-workers 1`: one actor (one core), so one model's throughput; the
             first Ray Data job on the cluster, which also starts Ray Data's own actors
  ray x1 w   the same again, on a cluster that has run a Ray Data job before (how a shared
             cluster usually is)
  ray x2     `--ray --ray-workers 2`: two actors on the machine's two cores
  cli 1t     `python -m extraction run` in a new process (OMP_NUM_THREADS=1), from its start
             to its exit: what a user waits for, the imports of torch and transformers included
             (the rows above run in this process, which has imported torch already, while a
             Ray actor is always a new process that imports both)
  cli ray    `python -m extraction run --ray ADDRESS --ray-workers 1` in a new process, the
             same way, on this cluster

Each run writes the same run into a fresh store and commits it (summaries included); the wall
time is from the call to the committed run, the model load included (a Ray run loads one model
per actor), and the extraction phase is the manifest's `extract_s`. The vectors of every Ray run
are checked equal to the local run's. Figures are ratios against the local run of this process.
Goals: Ray's cost at most +15%: ray x1 against local 1t (the same core and thread, so what Ray
adds), and ray x2 against local (the whole machine either way: no speedup is possible); ray x2 /
ray x1 throughput says how it scales with workers. On a machine shared with other work, a
two-thread torch run suffers most from the neighbours (its threads wait for each other), so read
the local 1t row too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "smollm2-135m"


def _run(settings, store: Path, workers: int | None, threads: int | None = None) -> float:
    """Seconds from the call to the committed run (the local run saves no readout, as a Ray run
    does not, so both do the same work)."""
    import torch

    from extraction.ray_run import execute_on_ray
    from extraction.runner import execute

    before = torch.get_num_threads()
    started = time.perf_counter()
    if workers is None:
        torch.set_num_threads(threads or before)
        try:
            execute(settings, store, progress=False, run_id="r", readout=False)
        finally:
            torch.set_num_threads(before)
    else:
        execute_on_ray(settings, store, workers=workers, progress=False, run_id="r")
    return time.perf_counter() - started


def _cli(argv: list[str], store: Path, env: dict | None = None) -> float:
    """Seconds from starting `python -m extraction run ...` to its exit (status 0)."""
    import subprocess

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "extraction", "run", *argv, "--store", str(store),
                    "--run-id", "r", "--no-progress", "--no-readout"], cwd=ROOT, check=True,
                   env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48 samples, layers 0-9")
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()

    import numpy as np
    import ray

    from settings.run import RunSettings
    from store import open_store
    from tests.support.tiny import emotion_rows, write_jsonl

    work = Path(tempfile.mkdtemp(prefix="actx-bench-ray-"))
    dataset = "emotions"
    layers = "all"
    if args.quick:
        dataset = str(write_jsonl(work / "emo.jsonl", emotion_rows(per_label=16)))
        layers = "0-9"
    settings = RunSettings(model=args.model, dataset=dataset, layers=layers,
                           hooks=("resid_post", "mlp_out"))  # fmt: skip

    load_before = _load()
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cluster_s = time.perf_counter() - started
    try:
        walls, stores = {}, {}
        for name, workers, threads in (("local 1t", None, 1), ("local", None, None),
                                       ("ray x1", 1, None), ("ray x1 w", 1, None),
                                       ("ray x2", 2, None)):  # fmt: skip
            stores[name] = work / name.replace(" ", "")
            walls[name] = _run(settings, stores[name], workers, threads)
        argv = ["--model", args.model, "--dataset", dataset, "--layers", layers,
                "--hooks", "resid_post,mlp_out"]  # fmt: skip
        address = ray.get_runtime_context().gcs_address
        ray_argv = ["--ray", address, "--ray-workers", "1"]
        for name, extra, env in (("cli 1t", [], {"OMP_NUM_THREADS": "1"}),
                                 ("cli ray", ray_argv, {})):  # fmt: skip
            stores[name] = work / name.replace(" ", "")
            walls[name] = _cli(argv + extra, stores[name], env)
    finally:
        ray.shutdown()

    manifests = {name: open_store(path).manifest("r") for name, path in stores.items()}
    # A Ray actor computes on one thread: its vectors equal a one-thread local run's bit for bit.
    # torch's matrix products round differently with another thread count, so the all-core local
    # run differs in the last float16 bit here and there: reported, not asserted.
    reference = open_store(stores["local 1t"])
    threads_diff = 0.0
    for name in ("local", "ray x1", "ray x1 w", "ray x2", "cli 1t", "cli ray"):
        theirs = open_store(stores[name])
        for layer in manifests["local"].layers:
            a, _ = theirs.vectors("r", "resid_post", layer, "mean")
            b, _ = reference.vectors("r", "resid_post", layer, "mean")
            if name == "local":
                threads_diff = max(threads_diff, float(np.abs(a - b).max() / np.abs(b).max()))
            else:
                assert np.array_equal(a, b), f"{name}: vectors differ from the local 1t run's"

    n = manifests["local"].n_samples
    print(f"load average before {load_before}, after {_load()} (2-core machine shared with others)")
    print(f"model {args.model}, {n} samples, layers {layers}, hooks resid_post+mlp_out; "
          f"local Ray start-up {cluster_s:.1f} s (not in the figures)")  # fmt: skip
    print(f"{'run':8} {'wall s':>8} {'x local':>8} {'capture s':>10} {'samples/s':>10} "
          f"{'x local':>8}")  # fmt: skip
    capture = {name: _capture_seconds(m) for name, m in manifests.items()}
    for name, wall in walls.items():
        rate = n / capture[name]
        print(f"{name:8} {wall:8.1f} {wall / walls['local']:8.2f} {capture[name]:10.1f} "
              f"{rate:10.1f} {capture['local'] / capture[name]:8.2f}")  # fmt: skip
    print(
        "capture s: the forward passes and part writes, model loads left out (a Ray run: its "
        "busiest worker's time in its blocks)"
    )
    print(
        "where a Ray run's wall time goes: start-up = from handing the blocks to Ray Data "
        "to the first actor ready (Ray Data's start, the actor's process, its imports and "
        "model load, of which load s in the actor's constructor); busy = the busiest actor "
        "in its blocks; driver = the rest (its own preparation, waits, the commit)"
    )
    for name in ("ray x1", "ray x1 w", "ray x2"):
        record = manifests[name].extra["ray"]
        load = max(w["load_s"] for w in record["workers"])
        rest = walls[name] - record["startup_s"] - capture[name]
        print(f"  {name:8} start-up {record['startup_s']:5.1f} s (load {load:4.1f} s), busy "
              f"{capture[name]:5.1f} s, driver {rest:4.1f} s")  # fmt: skip
    print(
        f"  local 1t: {manifests['local 1t'].timings['load_s']:.1f} s of checks, imports and "
        "model load before its first batch"
    )
    scaling = capture["ray x1 w"] / capture["ray x2"]
    one = walls["ray x1"] / walls["local 1t"] - 1
    warm = walls["ray x1 w"] / walls["local 1t"] - 1
    whole = walls["ray x2"] / walls["local"] - 1
    cli = walls["cli ray"] / walls["cli 1t"] - 1
    print(f"As a user waits for it (new processes): cli ray vs cli 1t {cli:+.0%}")
    # What Ray adds whatever the run's length: its time outside the forward passes, less the
    # local run's (capture speeds swing with the neighbours' load, so they are left out).
    fixed = {name: (walls[name] - capture[name]) - (walls["local 1t"] - capture["local 1t"])
             for name in ("ray x1", "ray x1 w")}  # fmt: skip
    cold, warm_fixed = fixed["ray x1"], fixed["ray x1 w"]
    print(f"Ray's fixed cost (wall outside the forward passes, less local 1t's): {cold:.1f} s "
          f"on a cluster's first Ray Data job, {warm_fixed:.1f} s later: within +15% for runs "
          f"of {max(warm_fixed, 0) / 0.15:.0f} s or more")  # fmt: skip
    print(f"Ray's cost, wall: ray x1 vs local 1t {one:+.0%} (a cluster's first Ray Data job), "
          f"{warm:+.0%} (later jobs); ray x2 vs local {whole:+.0%} (goal <= +15%); "
          f"throughput ray x2 / ray x1: {scaling:.2f}x")  # fmt: skip
    print(
        f"vectors: every Ray run's equal to local 1t's; local (all threads) vs local 1t: "
        f"max difference {threads_diff:.1e} of the largest value (thread-count rounding)"
    )
    return 0


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _capture_seconds(manifest) -> float:
    ray_record = manifest.extra.get("ray")
    if ray_record is None:
        return manifest.timings["extract_s"]
    return max(worker["busy_s"] for worker in ray_record["workers"])


if __name__ == "__main__":
    sys.exit(main())
