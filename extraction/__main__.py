"""Command line: `python -m extraction {run,list,clean,defaults,models,vectors,steer,readout}`.

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
from settings.vectors import (
    add_steer_arguments,
    add_vector_arguments,
    steer_settings_from_args,
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

    vectors = sub.add_parser("vectors", help="control vectors from a paired run (no torch)")
    add_vector_arguments(vectors)
    vectors.add_argument("--store", required=True, type=Path)
    vectors.add_argument("--set-id", help="use this vector set id (must be new)")
    vectors.add_argument("--pt", type=Path, help="also write the set as a .pt {layer: tensor}")
    vectors.add_argument("--gguf", type=Path, help="also write it as a llama.cpp control vector")
    vectors.add_argument("--scaled", action="store_true",
                         help="files hold unit vectors times each typical norm")  # fmt: skip

    steer = sub.add_parser("steer", help="generate with a vector set added, next to a baseline "
                           "and a random control")  # fmt: skip
    add_steer_arguments(steer)
    steer.add_argument("--store", required=True, type=Path)
    steer.add_argument("--device", default="auto")

    readout = sub.add_parser("readout", help="save a model's final norm and unembedding into "
                             "the store (done by every run too)")  # fmt: skip
    readout.add_argument("--model", required=True)
    readout.add_argument("--store", required=True, type=Path)
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


def _vectors(args: argparse.Namespace) -> int:
    from extraction.control import compute_vector_set
    from settings.vectors import VectorSettings

    if args.set_id is not None:
        validate_run_id(args.set_id)
    settings = VectorSettings(run=args.run, method=args.method, hook=args.hook,
                              layers=args.layers, name=args.name)  # fmt: skip
    set_id, made = compute_vector_set(args.store, settings, args.set_id)
    if not made:
        print(f"[vectors] {set_id} has these settings already; using it", file=sys.stderr)
    if args.pt or args.gguf:
        from store.control_files import gguf_bytes, layer_arrays, pt_bytes

        vector_set = open_store(args.store).vector_set(set_id)
        arrays = layer_arrays(vector_set, args.scaled)
        if args.pt:
            args.pt.write_bytes(pt_bytes(arrays))
        if args.gguf:
            m = vector_set.manifest
            args.gguf.write_bytes(gguf_bytes(arrays, m.hook, m.architecture))
    print(set_id)
    return 0


def _steer(args: argparse.Namespace) -> int:
    from extraction.loading import pick_device
    from extraction.steering import load_for, steer

    store = open_store(args.store)
    set_id = store.resolve_vector_set(args.vector_set)
    request = steer_settings_from_args(args, set_id)
    vector_set = store.vector_set(set_id)
    pick_device(args.device)
    loaded = load_for(vector_set.manifest, args.device)
    result = steer(loaded.hf_model, loaded.tokenizer, vector_set, request)
    for variant, answer in result.answers.items():
        print(f"--- {variant}\n{answer}")
    return 0


def _readout(args: argparse.Namespace) -> int:
    from extraction.loading import load
    from extraction.models import resolve
    from extraction.readout import save_readout

    open_store(args.store, create=True, writable=True)
    resolved = resolve(args.model)
    loaded = load(resolved, "hf", "cpu")
    written = save_readout(args.store, resolved, loaded.hf_model, loaded.tokenizer)
    print("saved" if written else "already there")
    return 0


COMMANDS = {"run": _run, "list": _list, "clean": _clean, "defaults": _defaults, "models": _models,
            "vectors": _vectors, "steer": _steer, "readout": _readout}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    # `--layers -2,-1`: argparse would read the list as an unknown option.
    argv = join_option_values(sys.argv[1:] if argv is None else argv, ("--layers", "--strength"))
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
