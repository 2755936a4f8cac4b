"""Command line: `python -m extraction {run,list,clean,defaults,models}`.

Bad input exits with status 2 and one line on stderr (no traceback), before anything is written.
On success `run` prints the run id as its last line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from extraction.datasets import DatasetError
from extraction.models import EMBEDDED, ModelError
from settings.run import (
    add_run_arguments,
    join_option_values,
    parse_names,
    settings_from_args,
    validate_run_id,
)
from store import StoreError, open_store


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other bad-input path
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m extraction", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="extract activations of one model over one dataset")
    add_run_arguments(run)  # one option per RunSettings field (settings/run.py)
    run.add_argument("--store", required=True, type=Path)
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run with the same settings")  # fmt: skip
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--flush-mb", type=float, default=64.0,
                     help="MB of vectors buffered before a part file is written")  # fmt: skip
    # The app's job registry picks the id up front, so it can watch and clean up the run.
    run.add_argument("--run-id", help="use this run id (must be new; not with --resume)")

    listing = sub.add_parser("list", help="list committed runs")
    listing.add_argument("--store", required=True, type=Path)

    clean = sub.add_parser("clean", help="delete interrupted (uncommitted) runs")
    clean.add_argument("--store", required=True, type=Path)

    defaults = sub.add_parser("defaults", help="fill a store with the default runs")
    defaults.add_argument("--store", required=True, type=Path)
    defaults.add_argument("--models", type=parse_names, default=tuple(EMBEDDED))
    defaults.add_argument("--no-progress", action="store_true")

    sub.add_parser("models", help="list the embedded models")
    return parser


def _run(args: argparse.Namespace) -> int:
    from extraction.runner import execute

    if args.run_id is not None:
        if args.resume:
            raise ValueError("--run-id and --resume cannot be combined")
        validate_run_id(args.run_id)
    if not 0 < args.flush_mb < 1e6:
        raise ValueError(f"--flush-mb {args.flush_mb} must be > 0")
    result = execute(
        settings_from_args(args),
        args.store,
        resume=args.resume,
        progress=not args.no_progress,
        flush_bytes=int(args.flush_mb * 1024 * 1024),
        run_id=args.run_id,
    )
    print(result.run_id)
    return 0


def _list(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    for m in store.runs():
        print(
            f"{m.run_id}\t{m.model}\t{m.dataset_name}\t{m.n_samples} samples\t"
            f"{len(m.layers)} layers\t{','.join(m.hooks)}\t{','.join(m.positions)}\t{m.created_at}"
        )
    # On stderr, so stdout stays one tab-separated line per healthy run.
    for damaged in store.damaged_runs():
        print(f"damaged run {damaged.folder}: {damaged.reason}", file=sys.stderr)
    return 0


def _clean(args: argparse.Namespace) -> int:
    from store.writer import remove_uncommitted

    for run_id in remove_uncommitted(open_store(args.store).root):
        print(f"removed {run_id}")
    return 0


def _defaults(args: argparse.Namespace) -> int:
    from extraction.defaults import default_configs, fill_defaults

    fill_defaults(args.store, default_configs(args.models), progress=not args.no_progress)
    return 0


def _models(_args: argparse.Namespace) -> int:
    for model in EMBEDDED.values():
        print(f"{model.name}\t{model.display}\t{model.license}")
    return 0


COMMANDS = {"run": _run, "list": _list, "clean": _clean, "defaults": _defaults, "models": _models}


def main(argv: list[str] | None = None) -> int:
    # `--layers -2,-1`: argparse would read the list as an unknown option.
    argv = join_option_values(sys.argv[1:] if argv is None else argv, ("--layers",))
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, DatasetError, ModelError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or a vanished folder mid-run: one line, not a traceback
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the run stays uncommitted; rerun with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
