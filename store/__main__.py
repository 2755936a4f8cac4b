"""Command line for the store: `python -m store snapshot ...` and `python -m store summarize ...`.

    python -m store snapshot --store store_data --runs ID[,ID] --layers 0,5,10 --out snapshot
    python -m store summarize --store store_data [--runs all|ID[,ID]] [--force]

`summarize` writes the summaries (per-label sums, a fixed subsample) of runs committed before
runs had them, one pass over each run's vectors with a progress bar on stderr; runs whose
summaries are up to date are left alone unless `--force`. One line per run on stdout.

Layers take the grammar of `extraction run` (`all`, `5`, `0,4,8`, `10-20`, `-1`; `--layers -1,0`
works too). Damaged runs are skipped with a `skipped runs/<folder>: <reason>` line on stderr.
Bad input exits with status 2 and one `error: ...` line on stderr. The last stdout line is the
snapshot's size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from settings.run import LAYERS_HELP, join_option_values
from store.catalog import DamagedRun
from store.errors import StoreError, one_line
from store.reader import open_store
from store.snapshot import snapshot
from store.summarize import summarize_run

VALUE_FLAGS = ("--layers",)  # values that may start with '-' (a negative layer)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other bad-input path
        print(f"error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m store", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    snap = sub.add_parser("snapshot", help="copy chosen runs and layers into a small new store")
    snap.add_argument("--store", required=True, type=Path, help="the source store")
    snap.add_argument(
        "--runs", required=True, help="run ids or unambiguous prefixes, comma-separated, or all"
    )
    snap.add_argument("--layers", default="all", help=LAYERS_HELP)
    snap.add_argument("--out", required=True, type=Path, help="the new store (a new folder)")
    snap.add_argument("--readouts", action="store_true",
                      help="also copy the models' unembeddings, for reading directions as words "
                      "(57 MB for SmolLM2, 336 MB for Gemma-3-270M)")  # fmt: skip
    summ = sub.add_parser("summarize", help="write the summaries of runs committed without them")
    summ.add_argument("--store", required=True, type=Path, help="the store")
    summ.add_argument(
        "--runs", default="all", help="run ids or unambiguous prefixes, comma-separated, or all"
    )
    summ.add_argument("--force", action="store_true", help="rewrite summaries that look fine")
    return parser


def _skipped(damaged: DamagedRun) -> None:
    print(f"skipped {damaged.folder}: {damaged.reason}", file=sys.stderr)


def _snapshot(args: argparse.Namespace) -> int:
    runs = args.runs.strip()
    names = "all" if runs == "all" else [r.strip() for r in runs.split(",") if r.strip()]
    result = snapshot(args.store, names, args.out, args.layers, on_skip=_skipped,
                      readouts=args.readouts)  # fmt: skip
    for run_id in result.copied:
        print(f"copied {run_id}")
    for set_id in result.vector_sets:
        print(f"copied vector set {set_id}")
    size = result.size_bytes
    print(
        f"snapshot of {len(result.copied)} runs in {args.out}: {size / 1e6:.2f} MB ({size} bytes)"
    )
    return 0


def _progress_bar(run_id: str):
    """A tqdm bar on stderr when tqdm is installed (the hosted app's install lacks it)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bar = tqdm(desc=f"summarize {run_id}", unit="row", unit_scale=True, file=sys.stderr,
               leave=False, disable=None)  # fmt: skip

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


def _summarize(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    runs = args.runs.strip()
    if runs == "all":
        run_ids = [m.run_id for m in store.runs()]
        for damaged in store.damaged_runs():
            _skipped(damaged)
    else:
        run_ids = [store.resolve_run_id(r.strip()) for r in runs.split(",") if r.strip()]
    if not run_ids:
        raise StoreError("no runs to summarize")
    for run_id in dict.fromkeys(run_ids):
        update, close = _progress_bar(run_id)
        try:
            done = summarize_run(args.store, run_id, force=args.force, progress=update)
        finally:
            close()
        if done.written:
            print(f"summarized {run_id}: {done.sites} sites, subsample of {done.subsample} "
                  f"samples, {done.seconds:.1f} s")  # fmt: skip
        else:
            print(f"up to date {run_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = join_option_values(sys.argv[1:] if argv is None else argv, VALUE_FLAGS)
    args = build_parser().parse_args(argv)
    try:
        return {"snapshot": _snapshot, "summarize": _summarize}[args.command](args)
    except (StoreError, ValueError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
