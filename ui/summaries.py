"""Runs without usable summaries: what an analysis page shows instead of scanning every vector.

The Directions, Cross-model and Pairs pages compute from each run's summaries (store.summaries).
A run committed before summaries existed, or whose summaries are damaged or out of date, stays
in the pickers (its vectors are fine, and a link may name it), and the page names it once, with
its reason and the command that (re)builds its summaries: `python -m store summarize ...`. In a
writable app a button does the same work here, in this session (one pass over the run's
vectors, a progress bar per run), and reruns the page; in read-only mode there is only the
message and the command, which names the store by its folder. Nothing scans a run unless
somebody asks for it.

Caveat: the button works in the server process (the page waits while it runs); it is not a
job of the New run page's queue, since jobs run `python -m extraction` verbs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from store import StoreError
from store.summaries import summarize_command
from store.summarize import summarize_run
from ui.compute import run_summaries
from ui.context import StoreView, plain, public_text, read_only
from ui.shared import clear_all


def show_unavailable(view: StoreView, problems: Sequence[tuple[str, str, str]],
                     *, key: str = "summarize") -> None:  # fmt: skip
    """One warning naming each run (run id, kind, reason), the command, and (writable) a button
    that runs it here."""
    if not problems:
        return
    run_ids = [run_id for run_id, _, _ in problems]
    lines = [f"{plain(run_id)}: {plain(public_text(reason))}" for run_id, _, reason in problems]
    st.warning(
        "This page reads each run's summaries (per-label sums and a fixed subsample), never "
        "every vector, so it cannot show these runs yet:\n\n"
        + "\n".join(f"- {line}" for line in lines)
    )
    force = any(kind != "missing" for _, kind, _ in problems)
    store = view.name if read_only() else view.path
    st.code(summarize_command(store, run_ids, force=force), language="bash")
    if read_only():
        st.caption("Whoever runs this store can run that command; this copy is read-only.")
        return
    label = "this run" if len(run_ids) == 1 else f"these {len(run_ids)} runs"
    # A callback: it runs before the page's next run, which then reads the new summaries.
    st.button(f"Summarize {label} now", key=key, on_click=summarize,
              args=(view.path, run_ids, force))  # fmt: skip


def summarize(path: str | Path, run_ids: Sequence[str], force: bool) -> None:
    """Write the runs' summaries here, one bar per run; a failure is one error line each."""
    for run_id in run_ids:
        bar = st.progress(0.0, text=f"Summarizing {run_id}")

        def update(done: int, total: int, bar=bar, run_id=run_id) -> None:
            bar.progress(min(done / total, 1.0) if total else 1.0,
                         text=f"Summarizing {run_id}: {done:,} of {total:,} vectors")  # fmt: skip

        try:
            summarize_run(path, run_id, force=force, progress=update)
        except StoreError as exc:
            st.error(plain(public_text(exc)))
        finally:
            bar.empty()
    run_summaries.clear()
    clear_all()  # values derived from them (ui.shared): the view itself has not changed
