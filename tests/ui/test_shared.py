"""ui.shared: the per-run read-only decision and the per-frame memo (`derived`).

Both exist for served views' cost (bench/bench_load.py); what they must not do is serve a stale
or unbounded answer: read-only stays fail-closed from one script run to the next, and a memo
keyed by URL values keeps a bounded number per frame and goes with its frame.
"""

from __future__ import annotations

import gc

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ui import shared
from ui.shared import DERIVED_PER_FRAME, derived


def _decide_twice() -> None:
    """An app run: decide, let the test's hook change the secrets file, decide again."""
    from pathlib import Path

    import streamlit as st

    from ui.shared import read_only

    first = read_only()
    change = st.session_state.get("change")
    if change is not None:
        Path(change[0]).write_text(change[1])
    st.write(f"{first} {read_only()}")


def _run(at: AppTest, change: tuple[str, str] | None = None) -> str:
    at.session_state["change"] = change
    at.run()
    assert not at.exception, at.exception
    return at.markdown[0].value


def test_read_only_is_decided_once_per_run_and_anew_for_the_next(secrets_file):
    at = AppTest.from_function(_decide_twice)
    # Turned on by a secrets file written during a run: that run keeps its decision ...
    assert _run(at, (str(secrets_file), "read_only = true")) == "False False"
    # ... the next run sees it from its first question.
    assert _run(at) == "True True"
    # A file broken during a run: read-only from the next run on (fails closed).
    assert _run(at, (str(secrets_file), "read_only = [[[")) == "True True"
    assert _run(at, (str(secrets_file), "read_only = false")) == "True True"
    assert _run(at) == "False False"


def test_a_run_longer_than_the_bound_asks_again(secrets_file, monkeypatch):
    monkeypatch.setattr(shared, "RUN_MEMO_SECONDS", 0.0)
    at = AppTest.from_function(_decide_twice)
    assert _run(at, (str(secrets_file), "read_only = true")) == "False True"


def test_the_environment_is_read_on_every_question(secrets_file, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    assert shared.read_only() is True  # outside a run: no memo at all
    monkeypatch.setenv("ACTX_READ_ONLY", "0")
    assert shared.read_only() is False
    secrets_file.write_text("read_only = true")
    assert shared.read_only() is True  # the env's explicit off never overrides a file's on
    assert shared.setting("ACTX_STORE") == "store_data"


def test_derived_is_made_once_per_frame_and_key():
    frame = pd.DataFrame({"a": [1, 2, 3]})
    calls = []

    def make(key):
        calls.append(key)
        return key * 2

    assert derived(frame, ("x",), lambda: make(1)) == 2
    assert derived(frame, ("x",), lambda: make(1)) == 2
    assert derived(frame, ("y",), lambda: make(2)) == 4
    assert calls == [1, 2]
    other = pd.DataFrame({"a": [1, 2, 3]})  # equal content, another frame: its own values
    assert derived(other, ("x",), lambda: make(3)) == 6
    assert calls == [1, 2, 3]


def test_derived_keeps_a_bounded_number_of_keys_per_frame():
    """Keys may come from a URL (a visitor's run selection): past the bound, values are made
    and handed out, not kept."""
    frame = pd.DataFrame({"a": [1]})
    made = []
    for i in range(DERIVED_PER_FRAME + 10):
        derived(frame, ("k", i), lambda i=i: made.append(i) or i)
    assert len(made) == DERIVED_PER_FRAME + 10
    last = DERIVED_PER_FRAME + 5
    assert derived(frame, ("k", last), lambda: made.append("again") or -1) == -1  # not kept
    assert derived(frame, ("k", 0), lambda: made.append("again") or -1) == 0  # kept


def test_derived_values_go_with_their_frame():
    frame = pd.DataFrame({"a": [1]})
    ident = id(frame)
    derived(frame, ("x",), lambda: "value")
    assert ident in shared._FRAME_MEMO
    del frame
    gc.collect()
    assert ident not in shared._FRAME_MEMO


@pytest.mark.parametrize("unhashable", [[1, 2], {"a": 1}])
def test_derived_of_a_value_without_weak_references_is_not_kept(unhashable):
    made = []
    for _ in range(2):
        assert derived(unhashable, ("x",), lambda: made.append(1) or "v") == "v"
    assert len(made) == 2
