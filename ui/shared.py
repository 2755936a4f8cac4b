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
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from settings.env import read_only

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


def clear_all() -> None:
    for cached in _ALL:
        cached.clear()  # type: ignore[attr-defined]
