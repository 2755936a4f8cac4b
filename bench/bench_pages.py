"""Analysis-page benchmark: each page's compute path at 1,000 and 100,000 samples, and the store.

    .venv/bin/python bench/bench_pages.py                       # store_data + both synthetic sizes
    .venv/bin/python bench/bench_pages.py --skip-synthetic      # the default store's pages only
    .venv/bin/python bench/bench_pages.py --skip-pages --samples 20000   # a smaller big store
    .venv/bin/python bench/bench_pages.py --skip-pages --small 10000     # past the subsample
    .venv/bin/python bench/bench_pages.py --skip-pages --repeats 5       # steadier medians

Part 1, the default store (both embedded models, every layer). Each page's script runs through
Streamlit's AppTest with its default view, once cold (empty caches) and then REPEATS times warm;
then the same views' compute paths, cold and warm, and their chart builds, on their own.

Part 2, synthetic stores written with store.RunWriter (d=576, every one of SmolLM2's 30 layers,
resid_post / last, float16, 4 labels, samples in minimal pairs of 2 categories; two runs of one
dataset on two "models", so every page has something to show), at --small (1,000) and --samples
(100,000) samples, kept in --synthetic-dir. Each page's compute path (what the page calls before
drawing: ui.compute / ui.pairs_compute) runs in its own child process, cold and then warm (the
cache hit a second visitor gets), with the child's peak RSS (Linux VmHWM, reset after the
imports) and its CPU time. The two sizes alternate, --repeats times each, and the table gives
medians: on a shared machine one child can wait seconds for a core, so the growth ratios are
ratios of medians measured side by side, and the CPU-time ratio (this process's threads, not
the wait) is printed beside the wall-clock one. The commit-time cost of summaries is the same
100,000-sample run written with and without them (same data, same process kind); the real
extraction's share comes from the `summaries_s` and `extract_s` timings of runs in --store made
by this code.

Goals (issue 13), printed beside the figures: every page under 1 s warm and under 3 s cold at
100,000 samples, cold no more than 1.5x its 1,000-sample time, peak RSS under 1 GB, summaries
adding under 5% to extraction time. Timings on a shared machine are noisy: the load average is
printed with them. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = ("pages/runs.py", "pages/directions.py", "pages/cross_model.py", "pages/pairs.py")
COMPUTE_PAGES = ("runs", "directions", "cross_model", "pairs")
REPEATS = 5
SYN_LABELS = ("gratitude", "anger", "apology", "neutral")
SYN_D, SYN_LAYERS, SYN_HOOK, SYN_POSITION = 576, 30, "resid_post", "last"
GOAL_WARM_S, GOAL_COLD_S, GOAL_GROWTH, GOAL_RSS_MB, GOAL_SUMMARY_SHARE = 1.0, 3.0, 1.5, 1024, 0.05


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _quiet_streamlit() -> None:
    """Cached functions called outside `streamlit run` warn on every call; silence that.

    Streamlit re-reads its `logger.level` option when a script runs, hence the environment
    variable and the filters.
    """
    os.environ["STREAMLIT_LOGGER_LEVEL"] = "error"
    import logging

    from streamlit import logger

    logger.set_log_level("error")
    # AppTest resets logger levels on every run; a filter stays.
    for name in ("streamlit.runtime.scriptrunner_utils.script_run_context",
                 "streamlit.runtime.caching.cache_data_api"):  # fmt: skip
        logger.get_logger(name).addFilter(lambda record: record.levelno >= logging.ERROR)


# -- what each page computes -------------------------------------------------------------------
def page_compute(page: str, view, hook: str = SYN_HOOK, position: str = SYN_POSITION):
    """The cached compute calls a page makes for its default view; returns what it draws from."""
    from ui import compute as c
    from ui import controls
    from ui import pairs_compute as pc
    from ui.runs_compute import runs_listing, runs_shown

    runs = c.run_summaries(view).frame.set_index("run_id")
    if page == "runs":  # the listing, and the table of every run with its links (no filter)
        return runs_listing(view), runs_shown(view, (), (), ())
    if page == "pairs":
        pair_run = next(r for r in runs.index if runs.loc[r, "has_pairs"])
        profile = pc.pair_profile(view, pair_run, hook, position)
        table = pc.dimension_table(profile, profile.layers[len(profile.layers) // 2], 10, True)
        return profile, pc.dimension_layers(profile, table["dimension"].tolist())
    ids = controls.default_runs_by_labels(runs)
    if len(ids) < 2:  # the synthetic dataset is pairs: every run of the first one's dataset
        ids = list(runs.index[runs["dataset_sha256"] == runs.loc[ids[0], "dataset_sha256"]])
    chosen = runs.loc[ids]
    run_a = chosen.index[0]
    labels = list(chosen["labels"].iloc[0])
    baseline = "neutral" if "neutral" in labels else labels[0]
    target = next(label for label in labels if label != baseline)
    profile = c.directions_for(view, chosen, hook, position, baseline)
    if page == "directions":
        layers = chosen.loc[run_a, "layers"]
        detail = c.layer_detail(view, run_a, hook, position, layers[len(layers) // 2], baseline,
                                target)  # fmt: skip
        return profile, detail
    run_b = chosen.index[1]  # as the page draws it: with the chance levels
    return profile, c.cross_model_drawn(view, run_a, run_b, hook, position, target, baseline)


def chart_builds(page: str, result) -> list:
    """The page's main charts built from its compute result (altair charts or specs)."""
    from ui import charts

    if page == "runs":
        return []
    if page == "pairs":
        profile, dims = result
        return [
            charts.lines(profile.per_layer, "layer", "mean_abs", "category", title="",
                         x_title="", y_title="",
                         colours=charts.category_colours(profile.per_layer["category"])),
            charts.heatmap(dims, "dimension", "layer", "score", title="", x_title="", y_title=""),
        ]  # fmt: skip
    profile, second = result
    labels = charts.label_colours(sorted(set(profile.per_label["label"])))
    built = [charts.lines(profile.per_label, "depth", "l2_rel", "label", dash="model", title="",
                          x_title="", y_title="", colours=labels,
                          dashes=charts.series_dashes(profile.per_label, "model"))]  # fmt: skip
    if page == "directions":
        built += [
            charts.heatmap(second.cosines, "label_b", "label_a", "cosine", title="", x_title="",
                           y_title=""),
            charts.histogram(second.projections, "projection", "label", title="",
                             colours=labels),
            charts.scatter(second.scores, "pc1", "pc2", "label", title="", x_title="",
                           y_title="", colours=labels),
        ]  # fmt: skip
    else:
        built += [charts.heatmap(f, "layer_b", "layer_a", "value", title="", x_title="",
                                 y_title="") for f in (second.cka, second.procrustes)]  # fmt: skip
    return built


def _serialise(chart) -> None:
    import altair as alt

    chart.to_dict() if isinstance(chart, alt.TopLevelMixin) else json.dumps(chart, default=str)


def _timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


# -- part 1: the default store -----------------------------------------------------------------
def _time_page(page: str) -> tuple[float, list[float], int]:
    from streamlit.testing.v1 import AppTest

    times = []
    for _ in range(1 + REPEATS):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.switch_page(page)
        started = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - started)
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].value}")
    charts = len(at.get("vega_lite_chart")) + len(at.get("plotly_chart"))
    return times[0], times[1:], charts


def bench_pages(store_path: str) -> None:
    os.environ["ACTX_STORE"] = store_path
    from streamlit import cache_data

    from store import open_store
    from ui.context import StoreView

    store = open_store(store_path)
    runs = store.runs()
    print(f"== pages over {store_path}: {len(runs)} runs (load average {load_average()})")
    for m in runs:
        print(f"   {m.name}: {m.n_samples} samples, {len(m.layers)} layers, d={m.d_model}")
    print(f"{'page':<22}{'cold run s':>12}{'warm run s (best / median)':>30}{'charts':>8}")
    for page in PAGES:
        cold, warm, n_charts = _time_page(page)
        warm_sorted = sorted(warm)
        median = warm_sorted[len(warm_sorted) // 2]
        print(f"{page:<22}{cold:>12.2f}{warm_sorted[0]:>18.3f} / {median:<9.3f}{n_charts:>8}")
    print("breakdown (default views; a fresh cache, so cold recomputes):")
    print(f"{'page':<22}{'compute cold s':>16}{'compute warm s':>16}{'chart build s':>15}")
    cache_data.clear()
    view = StoreView(store_path, tuple(store.run_ids()))
    for page in COMPUTE_PAGES:
        result, cold = _timed(page_compute, page, view, "resid_post", "last")
        _, warm = _timed(page_compute, page, view, "resid_post", "last")
        started = time.perf_counter()
        for chart in chart_builds(page, result):
            _serialise(chart)
        print(f"{page:<22}{cold:>16.3f}{warm:>16.4f}{time.perf_counter() - started:>15.3f}")
    extraction_share(runs)


def extraction_share(runs) -> None:
    """What summaries cost inside real extractions (runs committed by this code)."""
    timed = [m for m in runs if "summaries_s" in m.timings and m.timings.get("extract_s")]
    if not timed:
        print("   (no run in this store records summaries_s: made before summaries)")
        return
    print("summaries inside real extractions (manifest timings):")
    for m in timed:
        share = m.timings["summaries_s"] / (m.timings["extract_s"] + m.timings["summaries_s"])
        seconds = m.timings["summaries_s"]
        print(f"   {m.name:<40} summaries {seconds:7.2f} s of extract {m.timings['extract_s']:8.1f}"
              f" s: {share:6.2%} (goal < {GOAL_SUMMARY_SHARE:.0%})")  # fmt: skip


# -- part 2: synthetic stores ----------------------------------------------------------------
def synthetic_rows(samples: int) -> list[dict]:
    """Minimal pairs (sides a/b, 2 categories) that also carry one of 4 labels."""
    rows = []
    for i in range(samples // 2):
        label, category = SYN_LABELS[i % len(SYN_LABELS)], ("meaning", "grammar")[i % 2]
        for side in ("a", "b"):
            rows.append({"id": f"s{i}{side}", "text": f"{label} pair {i} side {side}",
                         "label": label, "pair_id": f"p{i}", "side": side,
                         "category": category})  # fmt: skip
    return rows


def _write(root: Path, run_id: str, rows: list[dict], model: str, seed: int,
           summaries: bool = True) -> float:  # fmt: skip
    from tests.support.synthetic import write_run

    started = time.perf_counter()
    write_run(
        root, run_id, rows, d_model=SYN_D, n_layers=SYN_LAYERS, hooks=(SYN_HOOK,),
        positions=(SYN_POSITION,), dtype="float16", model=model, signal=0.3, seed=seed,
        batch_rows=8192, dataset_name="synthetic-pairs", summaries=summaries,
    )  # fmt: skip
    return time.perf_counter() - started


def build_synthetic(folder: Path, samples: int) -> Path:
    """A store with two runs (models a and b) of one synthetic dataset; reused when there."""
    from store import open_store

    root = folder / f"store-{samples}"
    have = set(open_store(root, create=True).run_ids())
    rows = synthetic_rows(samples)
    for model, seed in (("a", 1), ("b", 2)):
        run_id = f"synthetic-{model}-{samples}"
        if run_id not in have:
            shutil.rmtree(root / "runs" / run_id, ignore_errors=True)  # an interrupted build
            seconds = _write(root, run_id, rows, f"synthetic-{model}", seed)
            print(f"   built {run_id} in {seconds:.1f} s (load average {load_average()})")
    return root


def commit_cost(folder: Path, samples: int) -> None:
    """The same run written with and without summaries, one after the other."""
    rows = synthetic_rows(samples)
    root = folder / "commit-cost"
    shutil.rmtree(root, ignore_errors=True)
    timings = {}
    for summaries in (False, True):
        name = "with" if summaries else "without"
        timings[name] = _write(root, f"cost-{name}", rows, "synthetic-a", 1, summaries)
        shutil.rmtree(root / "runs" / f"cost-{name}")  # 3.5 GB each at 100,000 samples
    extra = timings["with"] - timings["without"]
    print(f"commit-time cost of summaries, {samples:,} samples x {SYN_LAYERS} layers x {SYN_D} "
          f"(writing only, no model: the worst case; load average {load_average()}):")  # fmt: skip
    print(f"   without {timings['without']:7.1f} s, with {timings['with']:7.1f} s: "
          f"+{extra:.1f} s = {extra / timings['without']:+.1%} of writing the run")  # fmt: skip


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Current RSS in MB, after resetting the kernel's peak-RSS mark to it (Linux).

    ru_maxrss cannot serve here: Linux carries it across fork + exec, so a child would start
    with the parent's peak. VmHWM belongs to this process's memory map, and writing 5 to
    /proc/self/clear_refs resets it to the current RSS.
    """
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    current = _status_mb("VmRSS")
    return (
        current
        if current is not None
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(page: str, root: str) -> dict:
    """Child process: one page's compute path on `root`, cold then warm; time and memory."""
    import ui.compute  # noqa: F401 - imports before the RSS floor, like a running server
    import ui.pairs_compute  # noqa: F401
    from store import open_store
    from ui.context import StoreView

    store = open_store(root)
    view = StoreView(root, tuple(store.run_ids()))
    floor_mb = _reset_peak_rss()
    cpu = time.process_time()
    _, cold = _timed(page_compute, page, view)
    cold_cpu = time.process_time() - cpu
    _, warm = _timed(page_compute, page, view)
    return {"cold": cold, "cold_cpu": cold_cpu, "warm": warm, "floor_mb": floor_mb,
            "rss_mb": _peak_rss_mb()}  # fmt: skip


def _child(page: str, root: Path) -> dict:
    command = [sys.executable, __file__, "--measure", page, str(root)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{page} on {root} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def bench_synthetic(folder: Path, small: int, samples: int, cost: bool, repeats: int = 3) -> None:
    from store.summaries import PAGE_SUBSAMPLE_SIZE, SUBSAMPLE_SIZE

    print(f"\n== synthetic stores: {SYN_LAYERS} layers x d={SYN_D}, float16, two runs of one "
          f"dataset, {small:,} and {samples:,} samples (load {load_average()})")  # fmt: skip
    roots = {n: build_synthetic(folder, n) for n in (small, samples)}
    for n, root in roots.items():
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
        print(f"   {n:>7,} samples: {root} ({size:,.0f} MB on disk)")
    print(f"each cell: the median of {repeats} child processes, the two sizes alternating; growth "
          f"= cold at {samples:,} / cold at {small:,} (wall clock, and CPU time)")  # fmt: skip
    print(f"{'page':<13}{f'{small:,} cold/warm s':>20}{f'{samples:,} cold/warm s':>22}"
          f"{'growth':>9}{'CPU growth':>12}{'peak RSS MB':>13}  goals (warm < "
          f"{GOAL_WARM_S:g} s, cold < {GOAL_COLD_S:g} s, growth < {GOAL_GROWTH:g}x, "
          f"RSS < {GOAL_RSS_MB} MB)")  # fmt: skip
    for page in COMPUTE_PAGES:
        found: dict[int, list[dict]] = {small: [], samples: []}
        loads = []
        for _ in range(max(repeats, 1)):
            for n in (small, samples):
                found[n].append(_child(page, roots[n]))
            loads.append(load_average())
        a, b = ({key: _median([r[key] for r in found[n]]) for key in found[n][0]}
                for n in (small, samples))  # fmt: skip
        growth = b["cold"] / a["cold"] if a["cold"] else float("nan")
        cpu_growth = b["cold_cpu"] / a["cold_cpu"] if a["cold_cpu"] else float("nan")
        rss = max(r["rss_mb"] for n in found for r in found[n])
        verdict = " ".join([_mark(b["warm"] < GOAL_WARM_S), _mark(b["cold"] < GOAL_COLD_S),
                            _mark(growth < GOAL_GROWTH), _mark(rss < GOAL_RSS_MB)])  # fmt: skip
        print(f"{page:<13}{a['cold']:>11.2f} / {a['warm']:<6.3f}{b['cold']:>13.2f} / "
              f"{b['warm']:<6.3f}{growth:>8.2f}x{cpu_growth:>11.2f}x{rss:>13.0f}  {verdict}  "
              f"(load {', '.join(loads)})")  # fmt: skip
    print("   (cold = empty caches, warm = the cache hit a second visitor gets; RSS = the "
          "highest child peak, imports included)")  # fmt: skip
    low, high = (min(n, SUBSAMPLE_SIZE, PAGE_SUBSAMPLE_SIZE) for n in (small, samples))
    print(f"   (per-sample statistics use the page subsample: {low:,} and {high:,} samples, "
          f"at most {PAGE_SUBSAMPLE_SIZE:,} of the summaries' {SUBSAMPLE_SIZE:,}; what still "
          "grows is reading them out of the bigger stored subsample)")  # fmt: skip
    if cost:
        commit_cost(folder, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(ROOT / "store_data"))
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--synthetic-dir", type=Path, default=Path("/tmp/actx-bench-pages"))
    parser.add_argument("--skip-pages", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-commit-cost", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="child processes per page and size")
    parser.add_argument("--measure", nargs=2, metavar=("PAGE", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    _quiet_streamlit()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    if not args.skip_pages:
        bench_pages(args.store)
    if not args.skip_synthetic:
        bench_synthetic(args.synthetic_dir, args.small, args.samples, not args.skip_commit_cost,
                        args.repeats)  # fmt: skip


if __name__ == "__main__":
    main()
