"""`python -m store.jobworker --store DIR --job ID`: the detached process behind one app job.

Started by `store.jobs.launch` in its own session; it waits for a free slot, runs the extraction
as its child and records the outcome (see store.jobs). Imports nothing heavy: no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from store.jobs import run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store.jobworker", description=__doc__)
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--job", required=True)
    args = parser.parse_args(argv)
    return run_worker(args.store, args.job)


if __name__ == "__main__":
    sys.exit(main())
