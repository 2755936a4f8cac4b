"""Command line for the store: `python -m store snapshot ...`.

    python -m store snapshot --store store_data --runs ID[,ID] --layers 0,5,10 --out snapshot

Bad input exits with status 2 and one `error: ...` line on stderr. The last stdout line is the
snapshot's size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from store.errors import StoreError
from store.reader import open_store
from store.snapshot import parse_layer_list, snapshot


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other bad-input path
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m store", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    snap = sub.add_parser("snapshot", help="copy chosen runs and layers into a small new store")
    snap.add_argument("--store", required=True, type=Path, help="the source store")
    snap.add_argument(
        "--runs", required=True, help="run ids or unambiguous prefixes, comma-separated, or all"
    )
    snap.add_argument("--layers", default="all", help="all, or a list like 0,5,10 (-1 = last)")
    snap.add_argument("--out", required=True, type=Path, help="the new store (a new folder)")
    return parser


def _snapshot(args: argparse.Namespace) -> int:
    source = open_store(args.store)
    if args.runs.strip() == "all":
        run_ids = source.run_ids()
    else:
        run_ids = [source.resolve_run_id(r.strip()) for r in args.runs.split(",") if r.strip()]
    size = snapshot(args.store, run_ids, args.out, parse_layer_list(args.layers))
    for run_id in run_ids:
        print(f"copied {run_id}")
    print(f"snapshot of {len(run_ids)} runs in {args.out}: {size / 1e6:.2f} MB ({size} bytes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"snapshot": _snapshot}[args.command](args)
    except (StoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
