"""Ray benchmark: a `--ray` run against a local run on the same data, in the same process.

    .venv/bin/python bench/bench_ray.py            # SmolLM2-135M over the emotions, every layer
    .venv/bin/python bench/bench_ray.py --quick    # 48 samples, layers 0-9

One local Ray cluster (started once; its start-up is reported apart), then, in turn:

  local      `python -m extraction run` as it runs on one machine (all cores, one model)
  ray x1     `--ray --ray-workers 1`: one actor (one core), so one model's throughput
  ray x2     `--ray --ray-workers 2`: two actors on the machine's two cores

Each run writes the same run into a fresh store and commits it (summaries included); the wall
time is from the call to the committed run, the model load included (a Ray run loads one model
per actor), and the extraction phase is the manifest's `extract_s`. The vectors of every Ray run
are checked equal to the local run's. Figures are ratios against the local run of this process.
Goals: ray x2 at most 1.15x the local run's wall time (one machine: no speedup is possible, the
cost of Ray must stay small); ray x2 / ray x1 throughput says how it scales with workers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "smollm2-135m"


def _run(argv: list[str]) -> float:
    from extraction.__main__ import main

    started = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"run failed: {' '.join(argv)}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48 samples, layers 0-9")
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()

    import numpy as np
    import ray

    from store import open_store
    from tests.support.tiny import emotion_rows, write_jsonl

    work = Path(tempfile.mkdtemp(prefix="actx-bench-ray-"))
    dataset = "emotions"
    layers = "all"
    if args.quick:
        dataset = str(write_jsonl(work / "emo.jsonl", emotion_rows(per_label=16)))
        layers = "0-9"
    common = ["--model", args.model, "--dataset", dataset, "--layers", layers,
              "--hooks", "resid_post,mlp_out", "--no-progress"]  # fmt: skip

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cluster_s = time.perf_counter() - started
    try:
        walls, stores = {}, {}
        for name, extra in (("local", []), ("ray x1", ["--ray", "--ray-workers", "1"]),
                            ("ray x2", ["--ray", "--ray-workers", "2"])):  # fmt: skip
            stores[name] = work / name.replace(" ", "")
            walls[name] = _run(["run", *common, "--store", str(stores[name]), "--run-id", "r",
                                *extra])  # fmt: skip
    finally:
        ray.shutdown()

    manifests = {name: open_store(path).manifest("r") for name, path in stores.items()}
    local = open_store(stores["local"])
    for name in ("ray x1", "ray x2"):
        theirs = open_store(stores[name])
        for layer in manifests["local"].layers[:3]:
            a, _ = theirs.vectors("r", "resid_post", layer, "mean")
            b, _ = local.vectors("r", "resid_post", layer, "mean")
            assert np.array_equal(a, b), f"{name}: vectors differ from the local run's"

    n = manifests["local"].n_samples
    print(f"model {args.model}, {n} samples, layers {layers}, hooks resid_post+mlp_out; "
          f"local Ray start-up {cluster_s:.1f} s (not in the figures)")  # fmt: skip
    print(f"{'run':8} {'wall s':>8} {'x local':>8} {'extract s':>10} {'samples/s':>10} "
          f"{'x local':>8}")  # fmt: skip
    base_rate = n / manifests["local"].timings["extract_s"]
    for name, wall in walls.items():
        extract = manifests[name].timings["extract_s"]
        rate = n / extract
        print(f"{name:8} {wall:8.1f} {wall / walls['local']:8.2f} {extract:10.1f} "
              f"{rate:10.1f} {rate / base_rate:8.2f}")  # fmt: skip
    scaling = manifests["ray x1"].timings["extract_s"] / manifests["ray x2"].timings["extract_s"]
    overhead = walls["ray x2"] / walls["local"] - 1
    print(f"Ray overhead (ray x2 wall vs local): {overhead:+.0%} (goal <= +15%); "
          f"throughput ray x2 / ray x1: {scaling:.2f}x; vectors equal: yes")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
