"""Results that every session of this server shares: small values derived from a store view.

`st.cache_data` hashes its arguments with Streamlit's hasher and unpickles a fresh copy of the
value on every hit; for a page's cheap derivations that cost more than the derivation saved
(a served view called a dozen of them: bench/bench_load.py). `shared` keeps one value per
argument tuple in this process and hands out that same object: the arguments must be hashable
(a `StoreView`, run ids as a tuple, strings) and callers must treat the value as read-only
(pandas: filter, select, `assign`; never assign into it). The read-only mode is part of every
key, since what a visitor may be shown depends on it. Exceptions are not kept.

`clear_all()` forgets every value, e.g. after a run's summaries were rebuilt in this process
(the view, and so every key, stays the same then).

Two smaller memos live here too, since every ui module needs them: `read_only()` decided once
per script run, and `derived(frame, key, make)`, a value worked out once per shared frame.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from settings import env

P = ParamSpec("P")
R = TypeVar("R")
_ALL: list[Callable] = []


def shared(
    maxsize: int = 64, keep: Callable[[R], bool] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: keep the last `maxsize` results of a function of hashable positional
    arguments, shared by every session (see the module notes). `keep(value)` false: hand the
    value out but do not keep it (e.g. a result that names a run the store failed to read, so
    the next view tries again)."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        lock = threading.Lock()
        items: OrderedDict[tuple, R] = OrderedDict()

        @functools.wraps(fn)
        def cached(*args: P.args) -> R:
            key = (read_only(), args)
            with lock:
                if key in items:
                    items.move_to_end(key)
                    return items[key]
            value = fn(*args)  # outside the lock: two sessions may compute it both, once
            if keep is not None and not keep(value):
                return value
            with lock:
                items[key] = value
                while len(items) > maxsize:
                    items.popitem(last=False)
            return value

        def clear() -> None:
            with lock:
                items.clear()

        cached.clear = clear  # type: ignore[attr-defined]
        _ALL.append(cached)
        return cached

    return wrap


RUN_MEMO_SECONDS = 2.0  # the longest a run reuses the files' verdict (a longer run asks again)


def read_only() -> bool:
    """`settings.env.read_only()`, with the secrets files looked at once per script run.

    A view asks a dozen times (every `shared` key, every message that may name a path), and
    each time stats every secrets file (bench/bench_load.py). The environment is still read on
    every call; the files' verdict is reused within one run, for at most `RUN_MEMO_SECONDS`, so
    a change to them counts from the next run on. Outside a script run: asked every time.
    """
    return env.read_only(_run_secrets())


def setting(name: str) -> str:
    """`settings.env.setting(name)`, with the secrets files looked at once per script run."""
    return env.setting(name, _run_secrets())


def _run_secrets() -> tuple[dict[str, object], bool]:
    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None:
        return env.read_secrets()
    run = ctx.cursors  # a new dict at the start of every run (ScriptRunContext.reset)
    memo = getattr(ctx, "_actx_secrets", None)
    now = time.monotonic()
    if memo is not None and memo[0] is run and now - memo[1] < RUN_MEMO_SECONDS:
        return memo[2]
    secrets = env.read_secrets()
    ctx._actx_secrets = (run, now, secrets)
    return secrets


# id(frame) -> (a weak reference to it, what was derived from it): see `derived`.
DERIVED_PER_FRAME = 256
_FRAME_MEMO: dict[int, tuple[weakref.ref, dict]] = {}


def derived(frame, key: tuple, make: Callable[[], R]) -> R:
    """`make()`, kept while `frame` lives: most frames a page draws, shows or styles are shared
    results (`shared`: the runs table, direction profiles, pair tables) that every view passes
    again, and deriving from them again (a content hash, a table's Arrow form, a selection of
    runs) was a good part of a served view (bench/bench_load.py). So a frame must not change in
    place once passed here (shared results never do; a page passes a changed copy), and what
    `make` returns is shared too: read-only. A frame that is new on every view (an
    `st.cache_data` hit is a fresh copy) gains nothing, and loses nothing either.
    """
    known = _FRAME_MEMO.get(id(frame))
    if known is not None and known[0]() is frame:
        values = known[1]
        if key in values:
            return values[key]
        value = make()
        if len(values) < DERIVED_PER_FRAME:  # keys may come from a URL: a bounded number kept
            values[key] = value
        return value
    value = make()
    try:  # forgotten when the frame goes, before its id can be reused
        ident = id(frame)
        ref = weakref.ref(frame, lambda _, ident=ident: _FRAME_MEMO.pop(ident, None))
    except TypeError:
        return value
    _FRAME_MEMO[ident] = (ref, {key: value})
    return value


def clear_all() -> None:
    for cached in _ALL:
        cached.clear()  # type: ignore[attr-defined]
