"""Extraction benchmark: our capture against the bare forward pass and TransformerLens.

    .venv/bin/python bench/bench_extraction.py            # full (a few minutes on 2 cores)
    .venv/bin/python bench/bench_extraction.py --quick    # fewer samples, smaller memory check

One run, SmolLM2-135M, the same length-sorted batches of the emotions dataset for every method.
Each method runs in its own child process so its peak memory (ru_maxrss) is its own; the figures
that matter are the ratios against the floor measured in the same run, not absolute numbers.

Floor and ours are each timed REPEATS times (best kept); TransformerLens once.

Methods:
  floor      bare batched forward pass of the decoder stack, no capture
  ours       `extraction.runner.execute`: every layer's resid_post and mlp_out, last and mean,
             written to a real store and committed
  tl_single  TransformerLens run_with_cache one sample at a time (what one-off scripts do)
  tl_batch   TransformerLens run_with_cache on the same padded batches
Memory: a run with `all` positions over N sentences against one over N/10 (target <= 1.5x).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "smollm2-135m"
BATCH = 16
# The cheap methods are timed several times and the best kept: on a shared 2-core machine a
# single pass mostly measures the neighbours. TransformerLens passes are long enough as they are.
REPEATS = 3


def _rows(n: int) -> list[dict]:
    from extraction.datasets import load_dataset

    samples = load_dataset("emotions").samples
    return [
        {
            "id": f"{i}",
            "text": samples[i % len(samples)].text,
            "label": samples[i % len(samples)].label,
        }
        for i in range(n)
    ]


def _dataset_file(n: int, folder: Path) -> Path:
    path = folder / f"emotions-{n}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(n)))
    return path


def _batches(tokenizer, rows):
    from extraction.capture import make_batch

    ids = [tokenizer(r["text"])["input_ids"] for r in rows]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [
        make_batch([ids[i] for i in order[s : s + BATCH]], order[s : s + BATCH], pad_id=0)
        for s in range(0, len(order), BATCH)
    ]


def _timed(fn, batches) -> float:
    fn(batches[:1])  # warm-up: first-call allocations and kernels
    started = time.perf_counter()
    fn(batches)
    return time.perf_counter() - started


def child(method: str, n: int, work: Path) -> dict:
    import torch

    from extraction.loading import load
    from extraction.models import resolve

    torch.manual_seed(0)
    resolved = resolve(MODEL)
    backend_name = "transformer_lens" if method.startswith("tl_") else "hf"
    loaded = load(resolved, backend_name, "cpu")
    rows = _rows(n)
    batches = _batches(loaded.tokenizer, rows)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result: dict = {"method": method, "samples": n}

    if method == "floor":
        seconds = min(
            _timed(lambda bs: [loaded.backend.bare_forward(b) for b in bs], batches)
            for _ in range(REPEATS)
        )
    elif method in ("ours", "all_positions"):
        from extraction.runner import execute
        from settings.run import RunSettings

        dataset = _dataset_file(n, work)
        positions = ("all",) if method == "all_positions" else ("last", "mean")
        hooks = ("resid_post",) if method == "all_positions" else ("resid_post", "mlp_out")
        config = RunSettings(model=MODEL, dataset=str(dataset), hooks=hooks, positions=positions,
                             batch_size=BATCH, device="cpu")  # fmt: skip
        execute(config, work / "warm", progress=False, loaded=loaded, readout=False)  # warm-up
        repeats = REPEATS if method == "ours" else 1
        seconds = float("inf")
        for attempt in range(repeats):
            started = time.perf_counter()
            run = execute(
                config, work / f"store-{attempt}", progress=False, loaded=loaded, readout=False
            )
            seconds = min(seconds, time.perf_counter() - started)
        result["vector_rows"] = run.manifest.row_counts["vector_rows"]
    else:
        model = loaded.backend.model
        names = lambda name: name.endswith(("hook_resid_post", "hook_mlp_out"))  # noqa: E731

        def pool(cache, mask):
            lengths = mask.sum(1)
            for name in cache:
                hidden = cache[name]
                _ = hidden[torch.arange(len(lengths)), lengths - 1].numpy()
                _ = ((hidden * mask[..., None]).sum(1) / lengths[:, None]).numpy()

        def tl_single(bs):
            for b in bs:
                for row in range(len(b.sample_idx)):
                    n_real = int(b.attention_mask[row].sum())
                    tokens = b.input_ids[row : row + 1, :n_real]
                    with torch.inference_mode():
                        _, cache = model.run_with_cache(tokens, names_filter=names)
                    pool(cache, torch.ones_like(tokens))

        def tl_batch(bs):
            for b in bs:
                with torch.inference_mode():
                    _, cache = model.run_with_cache(
                        b.input_ids, attention_mask=b.attention_mask, names_filter=names
                    )
                pool(cache, b.attention_mask)

        seconds = _timed(tl_single if method == "tl_single" else tl_batch, batches)
    result["seconds"] = seconds
    result["samples_per_s"] = n / seconds
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["model_loaded_rss_mb"] = base_rss / 1024
    return result


def run_child(method: str, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="actx-bench-") as work:
        out = subprocess.run(
            [sys.executable, __file__, "--child", method, "--n", str(n), "--work", work],
            capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _line(label: str, r: dict) -> str:
    return f"{label:10s} {r['samples_per_s']:7.2f} samples/s   peak RSS {r['peak_rss_mb']:7.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.work)))
        return

    n = 64 if args.quick else 200
    results = {}
    for method in ("floor", "ours", "tl_single", "tl_batch"):
        results[method] = run_child(method, n)
        r = results[method]
        print(_line(method, r) + f"   ({r['samples']} samples in {r['seconds']:.1f} s)", flush=True)
    small_n, big_n = (100, 1000) if args.quick else (200, 2000)
    small = run_child("all_positions", small_n)
    big = run_child("all_positions", big_n)
    for label, r in ((f"all@{small_n}", small), (f"all@{big_n}", big)):
        print(_line(label, r) + f"   ({r['vector_rows']} vector rows)", flush=True)

    ours = results["ours"]["samples_per_s"]
    ratios = [
        ("ours / floor", ours / results["floor"]["samples_per_s"], "target >= 0.9"),
        ("ours / TL per sample", ours / results["tl_single"]["samples_per_s"], "target >= 4"),
        ("ours / TL batched", ours / results["tl_batch"]["samples_per_s"], ""),
        (
            f"peak RSS all@{big_n} / all@{small_n}",
            big["peak_rss_mb"] / small["peak_rss_mb"],
            "target <= 1.5",
        ),
    ]
    print("\nratios (same run):")
    for name, value, target in ratios:
        print(f"  {name:28s} {value:5.2f}x   {target}")


if __name__ == "__main__":
    main()
