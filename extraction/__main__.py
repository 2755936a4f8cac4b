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
from store import StoreError, open_store
from store.manifest import HOOKS, POSITIONS, validate_run_id


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other bad-input path
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m extraction", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="extract activations of one model over one dataset")
    run.add_argument("--model", required=True, help=f"{', '.join(EMBEDDED)}, a folder or an HF id")
    run.add_argument("--dataset", required=True, help="a .jsonl/.csv file or a built-in name")
    run.add_argument("--hooks", type=_csv, default=("resid_post",), help=",".join(HOOKS))
    run.add_argument("--layers", default="all", help="all, 5, 0,4,8, 10-20, -1")
    run.add_argument("--positions", type=_csv, default=("last", "mean"), help=",".join(POSITIONS))
    run.add_argument("--dtype", default="float16", help="storage dtype: float16 or float32")
    run.add_argument("--backend", default="hf", help="hf or transformer_lens")
    run.add_argument("--tl-processing", default="none", help="TransformerLens: none or default")
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--max-length", type=int, default=512, help="tokens; longer are truncated")
    run.add_argument(
        "--include-first-token",
        action="store_true",
        help="include the first token in `mean` (off: it is an attention sink)",
    )
    run.add_argument("--chat-template", action="store_true", help="wrap text as a user turn")
    run.add_argument("--name", help="a name for the run (letters, digits, . _ -)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    run.add_argument("--compute-dtype", default="float32", help="float32, bfloat16, float16")
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
    defaults.add_argument("--models", type=_csv, default=tuple(EMBEDDED))
    defaults.add_argument("--no-progress", action="store_true")

    sub.add_parser("models", help="list the embedded models")
    return parser


def _run(args: argparse.Namespace) -> int:
    from extraction.runner import RunConfig, execute

    if args.run_id is not None:
        if args.resume:
            raise ValueError("--run-id and --resume cannot be combined")
        validate_run_id(args.run_id)
    config = RunConfig(
        model=args.model,
        dataset=args.dataset,
        hooks=args.hooks,
        layers=args.layers,
        positions=args.positions,
        dtype=args.dtype,
        backend=args.backend,
        batch_size=args.batch_size,
        max_length=args.max_length,
        include_first_token=args.include_first_token,
        chat_template=args.chat_template,
        name=args.name,
        device=args.device,
        compute_dtype=args.compute_dtype,
        tl_processing=args.tl_processing,
    )
    if args.flush_mb <= 0:
        raise ValueError(f"--flush-mb {args.flush_mb} must be > 0")
    result = execute(
        config,
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
    return 0


def _clean(args: argparse.Namespace) -> int:
    from store.writer import remove_uncommitted

    for run_id in remove_uncommitted(open_store(args.store).root):
        print(f"removed {run_id}")
    return 0


def _defaults(args: argparse.Namespace) -> int:
    from extraction.defaults import fill_defaults

    fill_defaults(args.store, args.models, progress=not args.no_progress)
    return 0


def _models(_args: argparse.Namespace) -> int:
    for model in EMBEDDED.values():
        print(f"{model.name}\t{model.display}\t{model.license}")
    return 0


COMMANDS = {"run": _run, "list": _list, "clean": _clean, "defaults": _defaults, "models": _models}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, DatasetError, ModelError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run stays uncommitted; rerun with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
