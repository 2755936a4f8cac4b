"""Load benchmark: page views of the real Streamlit server under many concurrent sessions.

    .venv/bin/python bench/bench_load.py                       # store_data, 16 sessions, 30 s
    .venv/bin/python bench/bench_load.py --store /data/acts --sessions 8 --seconds 20
    .venv/bin/python bench/bench_load.py --targets trivial,read-only   # a subset
    .venv/bin/python bench/bench_load.py --other ../before --targets trivial,read-only,other

Each target is a real `streamlit run` server started here: `read-only` (our app with
ACTX_READ_ONLY=1 over the store), `writable` (the same app, writable), `trivial` (a one-line
`st.write` page: the baseline, measured in the same run under the same load, with the same
`.streamlit/config.toml`, so that only the page differs) and `elements` (a static page of
--elements captions and nothing else: what Streamlit itself costs for a page with about as many
elements as ours, the floor no work in our pages can go below) and `mix` (a static page of our
pages' mix: 12 select boxes, 6 line charts, 12 captions, none of their work: what Streamlit costs
for a view that looks like ours), and on request its parts alone: `selects`, `charts` (from one
Arrow table, as ours) and `pandas-charts` (from a pandas frame, converted on every view); `other`
is the read-only app of another checkout (`--other DIR`, e.g. a git worktree of an earlier commit),
so a change is measured beside what it changes, in one run, with this checkout's clients and store.
Clients drive it as a browser does: every page view is a new session (GET the page, /_stcore/health
and /_stcore/host-config, open the `/_stcore/stream` websocket, send the `rerun_script` BackMsg
with the page and its URL query, read ForwardMsgs until the run finishes), and each view picks a
random page and random filters over the store's runs (a fixed seed, so runs repeat). A view fails
when it errs, shows "This view failed", or is not finished within --timeout seconds.

Per target: a warm-up (every page and filter set once, so caches are as they would be on a
server that has been up a while), then one session alone (median latency of --single views),
then --sessions concurrent sessions for --seconds (views/s, p50 and p95 latency, failures).
The cost ratio is the trivial page's views/s over the target's (1.0: as cheap as a trivial page;
the goal is at most 2). Messages per view: the ForwardMsgs a view receives (each element, layout
block and status message is one; Streamlit's cost grows with them). The machine's load average is
printed with every figure: the numbers are only comparable at similar load.

On a shared machine views/s moves with what else runs (the same code measured 83 and 158 trivial
views/s minutes apart), so each target also reports the CPU time its server process spent per
loaded view (all its threads, from /proc; Linux only) and that cost over the trivial page's: it
counts only this server's work, whatever else the cores are doing. The clients' own CPU per view
(this process) is printed beside it: the views/s ratio includes it, the CPU ratio does not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRIVIAL_APP = 'import streamlit as st\n\nst.write("Hello, world")\n'
ELEMENTS_APP = 'import streamlit as st\n\nfor i in range({n}):\n    st.caption(f"line {{i}}")\n'
# Our pages' mix of elements with none of their work: 12 select boxes in one row, 6 line charts
# of 180 rows (6 series x 30 layers), 12 captions and a title (35 messages a view, as ours). The
# charts' data is an Arrow table made once, as ours ship it (ui.charts.draw): from a pandas frame
# Streamlit converts it again on every view (the `pandas-charts` target). `selects` and `charts`
# are its widgets and its charts alone: what each kind costs.
_FRAME = """import numpy as np
import pandas as pd
import pyarrow as pa
import streamlit as st

ARROW = {arrow}


@st.cache_resource
def frame():
    rng = np.random.default_rng(0)
    data = pd.DataFrame({{"layer": np.repeat(np.arange(30), 6),
                         "label": np.tile(list("abcdef"), 30), "value": rng.random(180)}})
    return pa.Table.from_pandas(data, preserve_index=False) if ARROW else data


"""
_SELECTS = """row = st.container(horizontal=True)
for i in range(12):
    row.selectbox(f"w{i}", ["x", "y", "z"], key=f"w{i}")
"""
_CHARTS = """spec = {"mark": "line", "encoding": {
    "x": {"field": "layer", "type": "quantitative"},
    "y": {"field": "value", "type": "quantitative"},
    "color": {"field": "label", "type": "nominal"},
}}
for i in range(6):
    st.vega_lite_chart(frame(), spec)
"""
_CAPTIONS = 'for i in range(12):\n    st.caption(f"line {i}")\n'
MIX_APP = _FRAME.format(arrow=True) + 'st.title("Mix")\n' + _SELECTS + _CHARTS + _CAPTIONS
SELECTS_APP = "import streamlit as st\n\n" + _SELECTS
CHARTS_APP = _FRAME.format(arrow=True) + _CHARTS
PANDAS_CHARTS_APP = _FRAME.format(arrow=False) + _CHARTS
STATIC_APPS = {"trivial": TRIVIAL_APP, "elements": None, "mix": MIX_APP, "selects": SELECTS_APP,
               "charts": CHARTS_APP, "pandas-charts": PANDAS_CHARTS_APP}  # fmt: skip
TARGETS = (*STATIC_APPS, "read-only", "writable", "other")
STATIC = tuple(STATIC_APPS)  # one view, no store
DEFAULT_TARGETS = ("trivial", "elements", "mix", "read-only", "writable")


# -- views ---------------------------------------------------------------------------------------
def store_views(store_path: str, max_views: int = 48) -> list[tuple[str, dict[str, list[str]]]]:
    """(page url path, URL query) for every page and a spread of filters over the store."""
    from store import open_store

    store = open_store(store_path)
    runs = store.runs()
    views: list[tuple[str, dict[str, list[str]]]] = [("", {})]  # the Runs page is the default
    for m in runs:
        views.append(("", {"run": [m.run_id]}))
    by_dataset: dict[str, list] = {}
    for m in runs:
        by_dataset.setdefault(m.dataset_sha256, []).append(m)
    for group in by_dataset.values():
        m = group[0]
        try:
            labels = sorted({str(x) for x in store.samples(m.run_id)["label"].dropna()})
        except Exception:  # a damaged run: its pages say so; nothing to vary
            continue
        pooled = [p for p in m.positions if p != "all"]
        for hook in m.hooks:
            for position in pooled:
                site = {"site": [hook], "position": [position]}
                ids = [x.run_id for x in group]
                views.append(("directions", {"runs": ids, **site}))
                for baseline in labels[:3]:
                    layer = str(m.layers[len(m.layers) // 3])
                    views.append(("directions", {"runs": ids[:1], "baseline": [baseline],
                                                 "layer": [layer], **site}))  # fmt: skip
                if len(group) > 1:
                    for label in labels[:3]:
                        views.append(("cross_model", {"runs": ids, "label": [label], **site}))
                if "pair_id" in store.samples(m.run_id):
                    views.append(("pairs", {"pairs_run": [m.run_id], **site}))
    if len(views) > max_views:  # a fixed spread, so the warm-up stays short on a big store
        views = random.Random(0).sample(views, max_views)
    return views


# -- one browser view --------------------------------------------------------------------------
async def _http_get(host: str, port: int, path: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    await reader.read()
    writer.close()


def _rerun_message(page: str, query: dict[str, list[str]]) -> bytes:
    from streamlit.proto.BackMsg_pb2 import BackMsg

    msg = BackMsg()
    msg.rerun_script.query_string = urllib.parse.urlencode(query, doseq=True)
    msg.rerun_script.page_name = page
    msg.rerun_script.page_script_hash = ""
    return msg.SerializeToString()


@dataclass
class ViewResult:
    seconds: float
    ok: bool
    reason: str = ""
    messages: int = 0


async def browse(port: int, page: str, query: dict, timeout: float) -> ViewResult:
    """One page view as a fresh browser tab: HTTP GETs, a new session, one full script run."""
    import websockets
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    host = "127.0.0.1"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            for path in ("/", "/_stcore/health", "/_stcore/host-config"):
                await _http_get(host, port, path)
            uri = f"ws://{host}:{port}/_stcore/stream"
            async with websockets.connect(uri, subprotocols=["streamlit"], max_size=None,
                                          compression=None) as ws:  # fmt: skip
                await ws.send(_rerun_message(page, query))
                failed, messages = "", 0
                async for raw in ws:
                    messages += 1
                    msg = ForwardMsg()
                    msg.ParseFromString(raw)
                    kind = msg.WhichOneof("type")
                    if kind == "page_not_found":
                        failed = "page not found"
                    elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                        element = msg.delta.new_element
                        which = element.WhichOneof("type")
                        if which == "exception" or (
                            which == "alert" and "This view failed" in element.alert.body
                        ):
                            failed = failed or "the page failed"
                    elif kind == "script_finished":
                        status = ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
                        if status != "FINISHED_EARLY_FOR_RERUN":
                            ok = status == "FINISHED_SUCCESSFULLY" and not failed
                            seconds = time.perf_counter() - started
                            return ViewResult(seconds, ok, failed or status, messages)
        return ViewResult(time.perf_counter() - started, False, "connection closed")
    except TimeoutError:
        return ViewResult(time.perf_counter() - started, False, "timed out")
    except OSError as exc:
        return ViewResult(time.perf_counter() - started, False, type(exc).__name__)


# -- load ------------------------------------------------------------------------------------
@dataclass
class Phase:
    results: list[ViewResult] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu: float = float("nan")  # CPU seconds the server process spent in the phase
    client_cpu: float = float("nan")  # CPU seconds this process (the clients) spent in it

    @property
    def ok(self) -> list[float]:
        return sorted(r.seconds for r in self.results if r.ok)

    @property
    def failures(self) -> list[ViewResult]:
        return [r for r in self.results if not r.ok]

    def percentile(self, q: float) -> float:
        ok = self.ok
        return ok[min(len(ok) - 1, int(q * len(ok)))] if ok else float("nan")

    @property
    def messages(self) -> float:
        ok = [r.messages for r in self.results if r.ok]
        return sum(ok) / len(ok) if ok else float("nan")

    @property
    def rate(self) -> float:
        return len(self.ok) / self.seconds if self.seconds else 0.0

    def per_view_ms(self, cpu: float) -> float:
        return 1000 * cpu / len(self.ok) if self.ok else float("nan")


async def load(port: int, views, sessions: int, seconds: float, timeout: float,
               seed: int) -> Phase:  # fmt: skip
    """`sessions` clients, each viewing random pages back to back until `seconds` have passed."""
    phase = Phase()
    deadline = time.perf_counter() + seconds
    rng = random.Random(seed)

    async def client() -> None:
        while time.perf_counter() < deadline:
            page, query = rng.choice(views)
            phase.results.append(await browse(port, page, query, timeout))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(sessions)))
    phase.seconds = time.perf_counter() - started
    return phase


async def sweep(port: int, views, timeout: float, sessions: int) -> Phase:
    """Every view once, `sessions` at a time (the warm-up)."""
    phase, queue = Phase(), list(views)

    async def client() -> None:
        while queue:
            page, query = queue.pop()
            phase.results.append(await browse(port, page, query, timeout))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(sessions)))
    phase.seconds = time.perf_counter() - started
    return phase


# -- servers ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A `streamlit run` process for one target; stopped on exit."""

    def __init__(self, target: str, store: str, workdir: Path, elements: int = 60,
                 other: Path | None = None) -> None:  # fmt: skip
        self.port = _free_port()
        env = {**os.environ, "ACTX_STORE": store, "PYTHONUNBUFFERED": "1"}
        env.pop("ACTX_READ_ONLY", None)
        if target in STATIC:  # run with our .streamlit/config.toml, so only the page differs
            script, cwd = workdir / f"{target}_app.py", workdir
            page = STATIC_APPS[target] or ELEMENTS_APP.format(n=elements)
            script.write_text(page)
            (workdir / ".streamlit").mkdir(exist_ok=True)
            shutil.copyfile(
                ROOT / ".streamlit" / "config.toml", workdir / ".streamlit" / "config.toml"
            )
        else:
            root = other if target == "other" else ROOT
            script, cwd = root / "app.py", root
            env["ACTX_READ_ONLY"] = "0" if target == "writable" else "1"
        self.log = open(workdir / f"{target}.log", "w")  # noqa: SIM115 - closed in stop()
        command = [
            sys.executable, "-m", "streamlit", "run", str(script), "--server.headless=true",
            f"--server.port={self.port}", "--server.address=127.0.0.1",
            "--browser.gatherUsageStats=false",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)  # fmt: skip

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET /_stcore/health HTTP/1.0\r\n\r\n")
                    if b"ok" in sock.recv(4096):
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) process `pid` has used; nan where /proc lacks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


# -- the run ---------------------------------------------------------------------------------
@dataclass
class TargetResult:
    target: str
    single: Phase
    loaded: Phase
    load_before: str
    load_after: str


def run_target(target: str, args, views, workdir: Path) -> TargetResult:
    server = Server(target, args.store, workdir, args.elements, args.other)
    try:
        server.wait_ready()
        target_views = [("", {})] if target in STATIC else views
        warm = asyncio.run(sweep(server.port, target_views, args.timeout, min(4, args.sessions)))
        if warm.failures and target not in STATIC:
            reasons = sorted({f.reason for f in warm.failures})
            print(f"   warm-up of {target}: {len(warm.failures)} failed views ({reasons})")
        before = load_average()
        single = asyncio.run(load(server.port, target_views, 1, args.single_seconds,
                                  args.timeout, args.seed))  # fmt: skip
        server_cpu, client_cpu = process_cpu(server.process.pid), time.process_time()
        loaded = asyncio.run(load(server.port, target_views, args.sessions, args.seconds,
                                  args.timeout, args.seed))  # fmt: skip
        loaded.server_cpu = process_cpu(server.process.pid) - server_cpu
        loaded.client_cpu = time.process_time() - client_cpu
        return TargetResult(target, single, loaded, before, load_average())
    finally:
        server.stop()


def report(results: list[TargetResult], sessions: int) -> None:
    base = next((r for r in results if r.target == "trivial"), None)
    head = f"\n{'target':<14}{'1 session p50 s':>16}{sessions:>4} sessions: {'views/s':>8}"
    print(f"{head}{'p50 s':>8}{'p95 s':>8}{'failed':>8}{'cost vs trivial':>17}{'msgs/view':>11}"
          f"{'server ms/view':>16}{'CPU vs trivial':>16}{'client ms/view':>16}"
          f"{'load avg':>14}")  # fmt: skip
    base_cpu = base.loaded.per_view_ms(base.loaded.server_cpu) if base else float("nan")
    for r in results:
        cost = base.loaded.rate / r.loaded.rate if base and r.loaded.rate else float("nan")
        cpu = r.loaded.per_view_ms(r.loaded.server_cpu)
        print(
            f"{r.target:<14}{r.single.percentile(0.5):>16.3f}{'':>14}{r.loaded.rate:>8.2f}"
            f"{r.loaded.percentile(0.5):>8.2f}{r.loaded.percentile(0.95):>8.2f}"
            f"{len(r.loaded.failures):>8}{cost:>16.2f}x{r.loaded.messages:>11.0f}"
            f"{cpu:>16.1f}{cpu / base_cpu:>15.2f}x"
            f"{r.loaded.per_view_ms(r.loaded.client_cpu):>16.1f}"
            f"{r.load_before:>7}->{r.load_after:<6}"
        )
        reasons = sorted({f.reason for f in r.loaded.failures})
        if reasons:
            print(f"{'':<11}failures: {', '.join(reasons)}")
    print("cost vs trivial = trivial views/s / target views/s under the same number of sessions "
          "(goal: at most 2.00x); CPU vs trivial = the server's CPU per view over the trivial "
          "page's (robust to other work on the machine)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(ROOT / "store_data"))
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--single-seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help=f"any of {', '.join(TARGETS)}")  # fmt: skip
    parser.add_argument("--elements", type=int, default=60,
                        help="captions on the `elements` target's page")  # fmt: skip
    parser.add_argument("--other", type=Path, default=None,
                        help="a checkout whose read-only app is the `other` target")  # fmt: skip
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}; choose from {', '.join(TARGETS)}")
    if args.other and "other" not in targets:
        targets.append("other")
    if "other" in targets and not (args.other and (args.other / "app.py").is_file()):
        parser.error(f"target 'other' needs --other DIR, a checkout with app.py (got {args.other})")
    views = store_views(args.store)
    pages = sorted({page or "runs" for page, _ in views})
    print(f"== load: {args.sessions} sessions x {args.seconds:g} s per target over {args.store}; "
          f"{len(views)} views over pages {', '.join(pages)}")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory(prefix="actx-bench-load-") as folder:
        for target in targets:
            print(f"-- {target} (load average {load_average()})", flush=True)
            results.append(run_target(target, args, views, Path(folder)))
    report(results, args.sessions)


if __name__ == "__main__":
    main()
