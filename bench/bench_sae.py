"""SAE benchmark: batched top-K feature extraction against one record at a time through sae-lens,
and SAE training throughput with its peak memory against the number of stored tokens.

    .venv/bin/python bench/bench_sae.py            # full (several minutes on 2 cores)
    .venv/bin/python bench/bench_sae.py --quick    # fewer records and steps

One run, SmolLM2-135M, the built-in prompt_responses records (prompt + response, teacher
forcing), an SAE of the default's shape (TopK, 2048 features, k 32, resid_post layer 15; its
weights are random: speed does not depend on them, and a fresh machine has no trained SAE).
Each method runs in its own child process so its peak memory (ru_maxrss) is its own; the
figures that matter are the ratios measured in the same run.

Extraction (top 50 features at the last prompt token of each record):
  ours       `python -m extraction sae` in-process: batches of 16, the pass stopped after
             layer 15, encoded with the SAE, written sparsely to a real store and committed
  usual      what scripts do: TransformerLens `run_with_cache` on one record at a time, then
             sae-lens's `encode` on the cached activations and `torch.topk`
Training: `train-sae` for the same number of steps on synthetic `all` runs of N and 4N tokens
(d_model 576, both larger than the shuffle buffer, so both stream): tokens/s and peak RSS.
Targets: ours / usual >= 5x; peak RSS at 4N / at N <= 1.2x (flat in the stored tokens).
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
HOOK, LAYER, D_SAE, K, TOP_K = "resid_post", 15, 2048, 32, 50
REPEATS = 2  # best of: on a shared 2-core machine one pass mostly measures the neighbours


def _records(n: int, work: Path) -> Path:
    lines = (ROOT / "data" / "prompt_responses.jsonl").read_text().splitlines()
    path = work / f"records-{n}.jsonl"
    path.write_text("\n".join(lines[i % len(lines)] for i in range(n)) + "\n")
    return path


def _random_sae(work: Path, d_in: int) -> Path:
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=D_SAE, k=K,
                        metadata=SAEMetadata(hook_name=f"blocks.{LAYER}.hook_{HOOK}"))  # fmt: skip
    folder = work / "sae"
    TopKSAE(cfg).save_model(folder)
    return folder


def extraction_child(method: str, n: int, work: Path) -> dict:
    import torch

    from extraction.loading import load
    from extraction.sae.extract import encode_record, extract_features, prepare_sae
    from extraction.sae.source import load_sae
    from settings.sae import SaeSettings
    from store import open_store

    dataset = _records(n, work)
    folder = _random_sae(work, 576)
    settings = SaeSettings(
        model=MODEL,
        dataset=str(dataset),
        sae=str(folder),
        top_k=TOP_K,
        device="cpu",
        backend="hf" if method == "ours" else "transformer_lens",
    )
    plan = prepare_sae(settings, open_store(work / "store", create=True))
    loaded = load(plan.model, settings.backend, "cpu")
    sae = load_sae(plan.sae, "cpu")
    seconds = float("inf")
    for attempt in range(REPEATS if method == "ours" else 1):
        started = time.perf_counter()
        if method == "ours":
            extract_features(plan, work / f"store-{attempt}", progress=False, loaded=loaded,
                             sae=sae)  # fmt: skip
        else:
            model, tokenizer = loaded.backend.model, loaded.tokenizer
            for record in plan.records:
                encoded = encode_record(tokenizer, record, False, settings.max_length)
                tokens = torch.tensor([encoded.ids])
                with torch.inference_mode():
                    _, cache = model.run_with_cache(tokens, names_filter=plan.sae.hook_name)
                    acts = sae.encode(cache[plan.sae.hook_name][0, encoded.answer_start - 1])
                    top = torch.topk(acts, TOP_K)
                _ = [(int(i), float(v)) for i, v in zip(top.indices, top.values, strict=True)]
        seconds = min(seconds, time.perf_counter() - started)
    return {"method": method, "records": n, "seconds": seconds, "records_per_s": n / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def training_child(tokens: int, steps: int, work: Path) -> dict:
    from extraction.sae.train import plan_training, train
    from settings.sae import TrainSaeSettings
    from store import open_store
    from tests.support.synthetic import label_rows, write_run

    per_record = 64
    n = tokens // per_record
    write_run(work / "store", "synthetic", label_rows(["a", "b"], n // 2), d_model=576,
              n_layers=1, positions=("all",), n_tokens=[per_record] * (n // 2 * 2),
              dtype="float16", batch_rows=256)  # fmt: skip
    store = open_store(work / "store")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    settings = TrainSaeSettings(run="synthetic", layer=0, d_sae=D_SAE, k=K,
                                training_tokens=steps * 512, device="cpu")  # fmt: skip
    result = train(plan_training(settings, store), store, progress=False)
    return {"tokens": tokens, "steps": steps,
            "tokens_per_s": result.card.timings["tokens_per_s"],
            "explained_variance": result.card.metrics["explained_variance"],
            "rss_before_mb": before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def run_child(*args: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="actx-bench-sae-") as work:
        out = subprocess.run(
            [sys.executable, __file__, "--work", work, *args],
            capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--extract", help=argparse.SUPPRESS)
    parser.add_argument("--train", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=120, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=60, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.extract:
        print(json.dumps(extraction_child(args.extract, args.n, args.work)))
        return
    if args.train:
        print(json.dumps(training_child(args.train, args.steps, args.work)))
        return

    n = 48 if args.quick else 120
    steps = 20 if args.quick else 60
    results = {}
    for method in ("ours", "usual"):
        r = results[method] = run_child("--extract", method, "--n", str(n))
        print(
            f"extract {method:6s} {r['records_per_s']:7.2f} records/s   peak RSS "
            f"{r['peak_rss_mb']:6.0f} MB   ({n} records in {r['seconds']:.1f} s)",
            flush=True,
        )
    small_tokens = 80_000 if args.quick else 100_000
    trained = {}
    for tokens in (small_tokens, 4 * small_tokens):
        r = trained[tokens] = run_child("--train", str(tokens), "--steps", str(steps))
        print(f"train   {tokens:7d} stored tokens  {r['tokens_per_s']:8.0f} tokens/s   peak RSS "
              f"{r['peak_rss_mb']:6.0f} MB ({r['rss_before_mb']:.0f} MB before training)",
              flush=True)  # fmt: skip
    big, small = trained[4 * small_tokens], trained[small_tokens]
    print("\nratios (same run):")
    speed = results["ours"]["records_per_s"] / results["usual"]["records_per_s"]
    print(f"  extraction ours / usual one at a time   {speed:5.2f}x   target >= 5")
    memory = big["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"  training peak RSS 4N / N tokens stored  {memory:5.2f}x   target <= 1.2 (flat)")


if __name__ == "__main__":
    main()
