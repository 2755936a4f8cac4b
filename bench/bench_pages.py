"""Analysis-page benchmark: per-page timings, and the directions path at 100,000 samples.

    .venv/bin/python bench/bench_pages.py                       # store_data + 100k synthetic
    .venv/bin/python bench/bench_pages.py --store /data/acts    # another store
    .venv/bin/python bench/bench_pages.py --skip-synthetic      # pages only
    .venv/bin/python bench/bench_pages.py --samples 20000       # a smaller synthetic store

Part 1, pages (default store: both embedded models, every layer). Each page's script runs through
Streamlit's AppTest with its default view: once cold (empty caches, so every statistic is
computed) and then REPEATS times warm (what a user waits for after the first visit, or after
changing a widget back). A run covers the widgets, the cached compute calls and building and
serialising every chart, but not the browser drawing them. Then a breakdown for the same default
views: the compute calls cold and warm, and the chart builds (altair -> Vega-Lite dict).

Part 2, a synthetic single-model store of N samples (default 100,000; 4 labels; d=576; float16;
written once with store.RunWriter and kept in --synthetic-dir). The directions page's compute
path (stream every layer, directions, stability, AUC, one layer's PCA) runs in a child process,
and so does the baseline of loading every layer's vectors at once (`Store.layer_vectors`), so
each peak RSS is its own (Linux VmHWM, reset after the imports). tracemalloc peaks count
numpy/Python allocations only (Arrow and DuckDB allocate outside it), so RSS is the figure to
compare. Figures are printed; no
thresholds are asserted (timings on a shared machine are noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = ("pages/runs.py", "pages/directions.py", "pages/cross_model.py", "pages/pairs.py")
REPEATS = 5
SYN_LABELS = ("gratitude", "anger", "apology", "neutral")
SYN_D, SYN_LAYERS, SYN_HOOK, SYN_POSITION = 576, 6, "resid_post", "last"


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


# -- part 1: pages -----------------------------------------------------------------------------
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


def _timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def _breakdown(store_path: str) -> list[tuple[str, float, float, float]]:
    """(page, compute cold s, compute warm s, chart build s) for each page's default view."""
    import altair as alt

    from store import open_store
    from ui import charts, controls
    from ui import compute as c
    from ui import pairs_compute as pc
    from ui.context import StoreView

    store = open_store(store_path)
    key = StoreView(store_path, tuple(store.run_ids()))
    runs = c.run_summaries(key).frame.set_index("run_id")
    chosen = runs.loc[controls.default_runs_by_labels(runs)]
    run_a, run_b = list(chosen.index[:2])
    pair_run = next(r for r in runs.index if runs.loc[r, "has_pairs"])
    layer = chosen.loc[run_a, "layers"][len(chosen.loc[run_a, "layers"]) // 2]

    def directions():
        profile = c.directions_for(key, chosen, "resid_post", "last", "neutral")
        detail = c.layer_detail(key, run_a, "resid_post", "last", layer,
                                "neutral", "anger")  # fmt: skip
        return profile, detail

    def cross():
        return c.cross_model(key, run_a, run_b, "resid_post", "last", "anger",
                             "neutral")  # fmt: skip

    def pairs():
        return pc.pair_profile(key, pair_run, "resid_post", "last")

    def direction_charts(result):
        profile, detail = result
        labels = charts.label_colours(chosen.loc[run_a, "labels"])
        return [
            charts.lines(profile.per_label, "depth", "l2_rel", "label", dash="model", title="",
                         x_title="", y_title="", colours=labels,
                         dashes=charts.series_dashes(runs, "model")),
            charts.lines(profile.cosines, "depth", "cosine", "pair", title="", x_title="",
                         y_title="", colours=charts.pair_colours(chosen.loc[run_a, "labels"])),
            charts.heatmap(detail.cosines, "label_b", "label_a", "cosine", title="",
                           x_title="", y_title=""),
            charts.histogram(detail.projections, "projection", "label", title="", colours=labels),
            charts.scatter(detail.scores, "pc1", "pc2", "label", title="", x_title="",
                           y_title="", colours=labels),
        ]  # fmt: skip

    def cross_charts(result):
        frames = (result.cka, result.rsa, result.procrustes)
        return [charts.heatmap(f, "layer_b", "layer_a", "value", title="", x_title="",
                               y_title="") for f in frames]  # fmt: skip

    def pair_charts(result):
        table = pc.dimension_table(result, result.layers[0], 10, True)
        return [
            charts.lines(result.per_layer, "layer", "mean_abs", "category", title="",
                         x_title="", y_title="",
                         colours=charts.category_colours(result.per_layer["category"])),
            charts.heatmap(pc.dimension_layers(result, table["dimension"].tolist()),
                           "dimension", "layer", "score", title="", x_title="", y_title=""),
        ]  # fmt: skip

    rows = []
    for name, compute, build in (
        ("directions", directions, direction_charts),
        ("cross_model", cross, cross_charts),
        ("pairs", pairs, pair_charts),
    ):
        result, cold = _timed(compute)
        _, warm = _timed(compute)
        built, _ = _timed(build, result)
        started = time.perf_counter()
        for chart in built:
            (chart.to_dict() if isinstance(chart, alt.TopLevelMixin) else chart)
        rows.append((name, cold, warm, time.perf_counter() - started))
    return rows


def bench_pages(store_path: str) -> None:
    os.environ["ACTX_STORE"] = store_path
    from store import open_store

    runs = open_store(store_path).runs()
    print(f"== pages over {store_path}: {len(runs)} runs")
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
    from streamlit import cache_data

    cache_data.clear()
    for name, cold, warm, build in _breakdown(store_path):
        print(f"{name:<22}{cold:>16.3f}{warm:>16.4f}{build:>15.3f}")


# -- part 2: 100,000 samples -------------------------------------------------------------------
def build_synthetic(folder: Path, samples: int) -> tuple[Path, str]:
    from store import open_store
    from tests.support.synthetic import write_run

    run_id = f"synthetic-{samples}"
    root = folder / f"store-{samples}"
    if run_id in open_store(root, create=True).run_ids():
        return root, run_id
    per_label = samples // len(SYN_LABELS)
    rows = [{"id": f"s{label[:3]}{i}", "text": f"{label} {i}", "label": label}
            for label in SYN_LABELS for i in range(per_label)]  # fmt: skip
    started = time.perf_counter()
    write_run(
        root, run_id, rows, d_model=SYN_D, n_layers=SYN_LAYERS, hooks=(SYN_HOOK,),
        positions=(SYN_POSITION,), dtype="float16", model="synthetic-576", signal=0.3,
        batch_rows=8192,
    )  # fmt: skip
    print(f"   built {run_id} in {time.perf_counter() - started:.1f} s")
    return root, run_id


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


def measure(kind: str, root: str, run_id: str) -> dict:
    """Child process: one way of getting the directions page's numbers; time and memory."""
    from store import open_store
    from ui import compute as c
    from ui.context import StoreView

    floor_mb = _reset_peak_rss()
    tracemalloc.start()
    store = open_store(root)
    key = StoreView(root, tuple(store.run_ids()))
    started = time.perf_counter()
    if kind == "stream":
        stats = c.layer_stats(key, run_id, SYN_HOOK, SYN_POSITION)
        profile = c.direction_profile(key, run_id, SYN_HOOK, SYN_POSITION, "neutral")
        c.layer_detail(key, run_id, SYN_HOOK, SYN_POSITION, stats.layers[-1], "neutral",
                       "anger")  # fmt: skip
        extra = {"kept_per_label": int(profile.per_label["n_target"].iloc[0]),
                 "auc_last_layer": round(float(profile.per_label["auc"].iloc[-1]), 3)}  # fmt: skip
    else:  # what a page would do without streaming: every layer's vectors in memory at once
        X, samples, layers = store.layer_vectors(run_id, SYN_HOOK, SYN_POSITION)
        extra = {"array_mb": round(X.nbytes / 1e6, 1)}
    seconds = time.perf_counter() - started
    _, traced_peak = tracemalloc.get_traced_memory()
    return {"seconds": seconds, "floor_mb": floor_mb, "rss_mb": _peak_rss_mb(),
            "traced_mb": traced_peak / 1e6, **extra}  # fmt: skip


def _child(kind: str, root: Path, run_id: str) -> dict:
    command = [sys.executable, __file__, "--measure", kind, str(root), run_id]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_synthetic(folder: Path, samples: int) -> None:
    print(f"\n== directions page on a synthetic store: {samples:,} samples, {SYN_LAYERS} layers, "
          f"d={SYN_D}, float16, {len(SYN_LABELS)} labels")  # fmt: skip
    root, run_id = build_synthetic(folder, samples)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    print(f"   store {root} ({size:,.0f} MB on disk)")
    stream = _child("stream", root, run_id)
    load_all = _child("load-all", root, run_id)
    print(f"{'':<42}{'time s':>8}{'RSS start':>11}{'RSS peak':>10}{'growth':>8}{'traced':>8}")
    for name, r in (("directions path, streamed (ui.compute)", stream),
                    ("baseline: all layers loaded at once", load_all)):  # fmt: skip
        print(f"{name:<42}{r['seconds']:>8.1f}{r['floor_mb']:>11.0f}{r['rss_mb']:>10.0f}"
              f"{r['rss_mb'] - r['floor_mb']:>8.0f}{r['traced_mb']:>8.0f}")  # fmt: skip
    print("   (MB, each in its own process; RSS start = after imports; growth = peak - start;"
          " traced = tracemalloc peak, numpy/Python allocations only)")  # fmt: skip
    print(f"   streamed path kept {stream['kept_per_label']} samples per label for stability/AUC/"
          f"PCA (last-layer AUC {stream['auc_last_layer']}); the baseline's array alone is "
          f"{load_all['array_mb']:,.0f} MB and grows with the sample count")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(ROOT / "store_data"))
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--synthetic-dir", type=Path, default=Path("/tmp/actx-bench-pages"))
    parser.add_argument("--skip-pages", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--measure", nargs=3, metavar=("KIND", "ROOT", "RUN_ID"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    _quiet_streamlit()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    if not args.skip_pages:
        bench_pages(args.store)
    if not args.skip_synthetic:
        bench_synthetic(args.synthetic_dir, args.samples)


if __name__ == "__main__":
    main()
