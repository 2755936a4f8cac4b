"""Command line for the store: `python -m store snapshot|export|summarize ...`.

    python -m store snapshot --store store_data --runs ID[,ID] --layers 0,5,10 --out snapshot
    python -m store export --store store_data --run ID --hook resid_post --layer 12 \
        --position answer_mean --label id,label --out vectors.csv     # or .npy, .parquet
    python -m store summarize --store store_data [--runs all|ID[,ID]] [--force]

Export writes one run's vectors of one hook, layer and position (see `store.export`); it never
replaces an existing file unless `--force`, and prints what it wrote.
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

from settings.run import LAYERS_HELP, join_option_values, resolve_layers
from store.catalog import DamagedRun
from store.errors import StoreError, one_line
from store.export import (
    EXPORT_FORMATS,
    check_new_path,
    export_vectors,
    format_from_path,
    parse_label_columns,
    write_new_file,
)
from store.fs import is_uri, store_location
from store.reader import open_store
from store.snapshot import snapshot
from store.summarize import summarize_run

VALUE_FLAGS = ("--layers", "--layer")  # values that may start with '-' (a negative layer)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other bad-input path
        print(f"error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m store", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    snap = sub.add_parser("snapshot", help="copy chosen runs and layers into a small new store")
    snap.add_argument(
        "--store",
        required=True,
        type=store_location,
        help="the source store: a folder or s3://bucket/prefix",
    )
    snap.add_argument(
        "--runs", required=True, help="run ids or unambiguous prefixes, comma-separated, or all"
    )
    snap.add_argument("--layers", default="all", help=LAYERS_HELP)
    snap.add_argument("--out", required=True, type=Path, help="the new store (a new folder)")
    snap.add_argument("--readouts", action="store_true",
                      help="also copy the models' unembeddings, for reading directions as words "
                      "(57 MB for SmolLM2, 336 MB for Gemma-3-270M)")  # fmt: skip

    export = sub.add_parser("export", help="write one run's vectors as CSV, .npy or Parquet")
    export.add_argument("--store", required=True, type=store_location)
    export.add_argument("--run", required=True, help="a run id or an unambiguous prefix")
    export.add_argument("--hook", required=True, help="e.g. resid_post")
    export.add_argument("--layer", required=True, type=int, help="a layer; -1 is the last")
    export.add_argument("--position", default="last", help="last, mean or answer_mean [last]")
    export.add_argument("--label", default="label",
                        help="sample column(s) for the label column, e.g. label or id,label "
                        "(joined with ':') [label]")  # fmt: skip
    export.add_argument("--format", choices=EXPORT_FORMATS,
                        help="csv, npy or parquet [from the --out suffix]")  # fmt: skip
    export.add_argument("--out", required=True, type=Path, help="the file to write")
    export.add_argument("--force", action="store_true", help="replace --out if it exists")

    summ = sub.add_parser("summarize", help="write the summaries of runs committed without them")
    summ.add_argument("--store", required=True, type=store_location, help="the store")
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


def _export(args: argparse.Namespace) -> int:
    check_new_path(args.out, args.force)  # before reading anything
    fmt = args.format or format_from_path(args.out)
    columns = parse_label_columns(args.label)
    store = open_store(args.store)
    run_id = store.resolve_run_id(args.run)
    manifest = store.manifest(run_id)
    layer = resolve_layers((args.layer,), manifest.n_layers)[0]  # -1 is the model's last
    result = export_vectors(store, run_id, args.hook, layer, args.position, columns, fmt)
    write_new_file(args.out, result.data, force=args.force)
    print(
        f"wrote {result.rows} rows x {result.width} ({args.hook} layer {layer} {args.position} "
        f"of {run_id}) to {args.out}"
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
    if is_uri(args.store):  # summaries would change committed runs (see store.fs)
        raise StoreError("summarize changes committed runs, which an object store keeps as "
                         "written; runs written there get their summaries at commit")  # fmt: skip
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
        verbs = {"snapshot": _snapshot, "export": _export, "summarize": _summarize}
        return verbs[args.command](args)
    except (StoreError, ValueError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
