"""Conversion benchmark: an embedded model's GGUF -> fp32 folder, as transformers does it alone
and as `extraction.models` does it (each GGUF parsed once, without memmap slicing).

    .venv/bin/python bench/bench_conversion.py                  # SmolLM2 (about a minute)
    .venv/bin/python bench/bench_conversion.py --model gemma3-270m

Each way runs in its own child process, into a scratch folder (the model cache is not touched),
and is timed in wall and CPU seconds (imports excluded). The figure that matters is the ratio of
the two, measured in the same run; the last line says whether the two folders are byte-identical.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(model_name: str, way: str, out: Path) -> dict:
    """Convert in this process: `plain` (transformers alone) or `ours` (extraction.models)."""
    import transformers  # noqa: F401 - imported before the clock starts

    from extraction.models import EMBEDDED, convert_gguf

    gguf = EMBEDDED[model_name].locate_gguf(out.parent / "gguf-cache")
    wall, cpu = time.perf_counter(), _cpu()
    convert_gguf(gguf, out, parsed_once=way == "ours")
    return {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--child", nargs=2, metavar=("WAY", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.child[0], Path(args.child[1]))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-conversion-") as scratch:
        results = {}
        for way in ("plain", "ours"):
            out = Path(scratch) / way
            done = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--child", way, str(out)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode:
                raise SystemExit(f"{way} failed:\n{done.stderr[-3000:]}")
            results[way] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[way]
            print(f"{way:6s} {r['wall_s']:7.1f} s wall {r['cpu_s']:7.1f} s CPU", flush=True)
        plain, ours = results["plain"], results["ours"]
        print(f"\nratios (same run): plain / ours  wall {plain['wall_s'] / ours['wall_s']:.2f}x"
              f"  CPU {plain['cpu_s'] / ours['cpu_s']:.2f}x")  # fmt: skip
        left, right = Path(scratch) / "plain", Path(scratch) / "ours"
        names = sorted(p.name for p in left.iterdir())
        _, mismatch, errors = filecmp.cmpfiles(left, right, names, shallow=False)
        same = names == sorted(p.name for p in right.iterdir()) and not mismatch and not errors
        print(f"folders byte-identical: {'yes' if same else 'NO'} ({', '.join(names)})")


if __name__ == "__main__":
    main()
