"""Steering worker benchmark: the first request (model load and generation) against the next
ones (generation only, the model kept loaded), as the Steering page sends them.

    .venv/bin/python bench/bench_steering.py --store STORE [--vector-set ID] [--requests 3]

STORE needs a vector set (the newest is used by default), e.g. after `python -m extraction
defaults --store STORE`, `python -m extraction vectors --run default-style-pairs-smollm2-135m
--store STORE`. Each request asks for another strength, as a person trying values would. Printed
per request: the wall time from submit to answer and the generation time the worker measured;
the figure that matters is the later requests' wall time over their generation time (goal: about
1, no model load). The worker this starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import steering  # noqa: E402
from settings.vectors import SteerSettings  # noqa: E402
from store import open_store  # noqa: E402

STRENGTHS = (0.1, 0.2, -0.1, 0.3, 0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--vector-set")
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=30)
    args = parser.parse_args()
    root = args.store.resolve()
    store = open_store(root)
    set_id = args.vector_set or store.vector_sets()[0].set_id
    if steering.live_worker(root) is not None:
        print("a steering worker is already running: the first request will not load the model")
    rows = []
    for i in range(args.requests):
        settings = SteerSettings(prompt="Tell me about your weekend.", vector_set=set_id,
                                 strength=STRENGTHS[i % len(STRENGTHS)],
                                 max_new_tokens=args.tokens)  # fmt: skip
        started = time.perf_counter()
        req_id = steering.submit(root, settings, read_only=False)
        while (outcome := steering.poll(root, req_id)) is None:
            time.sleep(0.05)
        wall = time.perf_counter() - started
        if outcome.state != "done":
            print(f"request {i + 1} failed: {outcome.error}")
            return 1
        rows.append((wall, outcome.seconds))
        ratio = wall / outcome.seconds
        print(f"request {i + 1} (strength {settings.strength:g}): {wall:6.2f} s wall, "
              f"{outcome.seconds:6.2f} s generating, ratio {ratio:.2f}")  # fmt: skip
    later = rows[1:]
    if later:
        ratio = sum(w for w, _ in later) / sum(g for _, g in later)
        print(f"later requests: wall / generation = {ratio:.2f} (goal about 1); first request "
              f"{rows[0][0] / max(w for w, _ in later):.1f}x the slowest later one")  # fmt: skip
    record = steering.live_worker(root)
    if record is not None:
        os.kill(record.pid, signal.SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
