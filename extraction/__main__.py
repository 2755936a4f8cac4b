"""Command line: `python -m extraction {run,list,clean,defaults,models,train-sae,sae,vectors,
steer,readout}`.

Bad input exits with status 2 and one line on stderr (no traceback), before anything is written.
On success `run` prints the run id as its last line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
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
from settings.sae import SaeSettings, TrainSaeSettings
from settings.vectors import (
    add_steer_arguments,
    add_vector_arguments,
    steer_settings_from_args,
)
from store import StoreError, open_store
from store.atomic import atomic_write_text
from store.fs import is_uri, refuse_local_only, store_location
from store.json_records import dump_json


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2, like every other bad-input path
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m extraction", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="extract activations of one model over one dataset")
    add_run_arguments(run)  # one option per RunSettings field (settings/run.py)
    run.add_argument("--store", required=True, type=store_location)  # a folder or s3://...
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run with the same settings")  # fmt: skip
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--flush-mb", type=float, default=64.0,
                     help="MB of vectors buffered before a part file is written")  # fmt: skip
    # The app's job registry picks the id up front, so it can watch and clean up the run.
    run.add_argument("--run-id", help="use this run id (must be new; not with --resume)")
    run.add_argument("--readout", action=argparse.BooleanOptionalAction, default=None,
                     help="save the model's readout (final norm and unembedding, for reading "
                     "directions as words) unless the store has it; default: for paired "
                     "datasets only, what control vectors come from")  # fmt: skip
    run.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="run the forward passes on a Ray cluster (host:port, ray://host:port "
                     "or auto; no address: a local Ray); see extraction/ray_run.py")  # fmt: skip
    run.add_argument(
        "--ray-workers",
        type=int,
        help="with --ray: model copies (actors) [one per GPU, else per CPU]",
    )
    run.add_argument(
        "--ray-gpus",
        type=float,
        help="with --ray: GPUs per worker [1 if the cluster has GPUs, else 0]",
    )

    listing = sub.add_parser("list", help="list committed runs (or SAEs, feature runs)")
    listing.add_argument("--store", required=True, type=store_location)
    listing.add_argument("--kind", choices=("runs", "saes", "features"), default="runs")

    clean = sub.add_parser("clean", help="delete interrupted (uncommitted) runs")
    clean.add_argument("--store", required=True, type=store_location)

    defaults = sub.add_parser("defaults", help="fill a store with the default runs")
    defaults.add_argument("--store", required=True, type=store_location)
    defaults.add_argument("--models", type=parse_names, default=tuple(EMBEDDED))
    defaults.add_argument("--no-progress", action="store_true")

    sub.add_parser("models", help="list the embedded models")

    train_sae = sub.add_parser("train-sae", help="train an SAE on a run's stored activations")
    TrainSaeSettings.add_arguments(train_sae)  # one option per field (settings/sae.py)
    train_sae.add_argument("--store", required=True, type=store_location)
    train_sae.add_argument("--no-progress", action="store_true")
    train_sae.add_argument("--output-id", help="use this SAE id (must be new; the app's jobs "
                           "pick it up front)")  # fmt: skip

    sae = sub.add_parser("sae", help="read a dataset's activations as SAE features")
    SaeSettings.add_arguments(sae)
    sae.add_argument("--store", required=True, type=store_location)
    sae.add_argument("--json-out", type=Path, help="also write the records back as JSON, "
                     "each with its sae_activations")  # fmt: skip
    sae.add_argument("--no-progress", action="store_true")
    sae.add_argument("--run-id", help="use this feature run id (must be new)")
    vectors = sub.add_parser("vectors", help="control vectors from a paired run (no torch)")
    add_vector_arguments(vectors)
    vectors.add_argument("--store", required=True, type=store_location)
    vectors.add_argument("--set-id", help="use this vector set id (must be new)")
    vectors.add_argument("--pt", type=Path, help="also write the set as a .pt {layer: tensor}")
    vectors.add_argument("--gguf", type=Path, help="also write it as a llama.cpp control vector")
    vectors.add_argument("--scaled", action="store_true",
                         help="files hold unit vectors times each typical norm")  # fmt: skip

    steer = sub.add_parser("steer", help="generate with a vector set added, next to a baseline "
                           "and a random control")  # fmt: skip
    add_steer_arguments(steer)
    steer.add_argument("--store", required=True, type=store_location)
    steer.add_argument("--device", default="auto")

    readout = sub.add_parser("readout", help="save a model's final norm and unembedding into "
                             "the store, once per model (paired runs do it too)")  # fmt: skip
    readout.add_argument("--model", required=True)
    readout.add_argument("--store", required=True, type=store_location)
    return parser


def _run(args: argparse.Namespace) -> int:
    from extraction.runner import execute

    if args.run_id is not None:
        if args.resume:
            raise ValueError("--run-id and --resume cannot be combined")
        validate_run_id(args.run_id)
    if not 0 < args.flush_mb < 1e6:
        raise ValueError(f"--flush-mb {args.flush_mb} must be > 0")
    if args.ray is None and (args.ray_workers is not None or args.ray_gpus is not None):
        raise ValueError("--ray-workers and --ray-gpus need --ray")
    if args.ray is not None:
        from extraction.ray_run import execute_on_ray

        result = execute_on_ray(
            settings_from_args(args), args.store, args.ray or None,
            workers=args.ray_workers, gpus_per_worker=args.ray_gpus, resume=args.resume,
            progress=not args.no_progress, flush_bytes=int(args.flush_mb * 1024 * 1024),
            run_id=args.run_id,
        )  # fmt: skip
        print(result.run_id)
        return 0
    result = execute(
        settings_from_args(args),
        args.store,
        resume=args.resume,
        progress=not args.no_progress,
        flush_bytes=int(args.flush_mb * 1024 * 1024),
        run_id=args.run_id,
        readout=args.readout,
    )
    print(result.run_id)
    return 0


def _list(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    if args.kind != "runs":
        return _list_sae_kinds(store, args.kind)
    for m in store.runs():
        print(
            f"{m.run_id}\t{m.model}\t{m.dataset_name}\t{m.n_samples} samples\t"
            f"{len(m.layers)} layers\t{','.join(m.hooks)}\t{','.join(m.positions)}\t{m.created_at}"
        )
    # On stderr, so stdout stays one tab-separated line per healthy run.
    for damaged in store.damaged_runs():
        print(f"damaged run {damaged.folder}: {damaged.reason}", file=sys.stderr)
    return 0


def _list_sae_kinds(store, kind: str) -> int:
    if kind == "saes":
        for c in store.saes.list():
            m = c.metrics
            print(f"{c.sae_id}\t{c.model}\t{c.hook_name}\t{c.d_sae} features\tk {c.k}\t"
                  f"explained variance {m['explained_variance']:.3f}\tL0 {m['l0']:.1f}\t"
                  f"dead {m['dead_share']:.3f}\t{c.created_at}")  # fmt: skip
        damaged = store.saes.damaged()
    else:
        for f in store.features.list():
            print(f"{f.feature_run_id}\t{f.model}\t{f.dataset_name}\t{f.sae_id}\t"
                  f"{f.hook_name}\t{f.positions}\ttop {f.top_k}\t{f.n_ok}/{f.n_records} records"
                  f"\t{f.created_at}")  # fmt: skip
        damaged = store.features.damaged()
    for entry in damaged:
        print(f"damaged {entry.folder}: {entry.reason}", file=sys.stderr)
    return 0


def _clean(args: argparse.Namespace) -> int:
    from store.writer import remove_uncommitted

    store = open_store(args.store)
    root = store.location if is_uri(store.location) else store.root
    for folder in ("runs", "saes", "features"):
        for name in remove_uncommitted(root, folder):
            print(f"removed {name}" if folder == "runs" else f"removed {folder}/{name}")
    return 0


def _defaults(args: argparse.Namespace) -> int:
    refuse_local_only(args.store, "the default runs, with their SAE,")
    from extraction.defaults import default_configs, fill_defaults
    from extraction.sae.defaults import fill_sae_defaults

    fill_defaults(args.store, default_configs(args.models), progress=not args.no_progress)
    # The default SAE and its features (SmolLM2 only), for the Features page on first start.
    fill_sae_defaults(args.store, args.models, progress=not args.no_progress)
    return 0


def _models(_args: argparse.Namespace) -> int:
    for model in EMBEDDED.values():
        print(f"{model.name}\t{model.display}\t{model.license}")
    return 0


def _train_sae(args: argparse.Namespace) -> int:
    from extraction.sae.train import plan_training, train

    refuse_local_only(args.store, "saes")
    settings = TrainSaeSettings.from_args(args)
    if args.output_id is not None:
        settings = replace(settings, name=validate_run_id(args.output_id))
    store = open_store(args.store, writable=True)
    result = train(plan_training(settings, store), store, progress=not args.no_progress)
    print(result.sae_id)
    return 0


def _sae(args: argparse.Namespace) -> int:
    from extraction.sae.extract import extract_features, prepare_sae

    refuse_local_only(args.store, "features")
    if args.run_id is not None:
        validate_run_id(args.run_id)
    settings = SaeSettings.from_args(args)
    store = open_store(args.store, create=True, writable=True)
    plan = prepare_sae(settings, store)
    result = extract_features(
        plan, args.store, progress=not args.no_progress, feature_run_id=args.run_id
    )
    if args.json_out is not None:
        atomic_write_text(
            args.json_out, dump_json(store.features.export_json(result.feature_run_id))
        )
    print(result.feature_run_id)
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

    refuse_local_only(args.store, "readouts")
    open_store(args.store, create=True, writable=True)
    resolved = resolve(args.model)
    loaded = load(resolved, "hf", "cpu")
    written = save_readout(args.store, resolved, loaded.hf_model, loaded.tokenizer)
    print("saved" if written else "already there")
    return 0


COMMANDS = {
    "run": _run, "list": _list, "clean": _clean, "defaults": _defaults, "models": _models,
    "train-sae": _train_sae, "sae": _sae, "vectors": _vectors, "steer": _steer,
    "readout": _readout,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    # `--layers -2,-1`: argparse would read the list as an unknown option.
    argv = join_option_values(sys.argv[1:] if argv is None else argv,
                              ("--layers", "--layer", "--strength"))  # fmt: skip
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, DatasetError, ModelError, StoreError) as exc:  # SaeError is a ValueError
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
