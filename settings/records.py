"""The strict dict form shared by frozen settings records (run settings, every job kind's settings).

A settings record is a frozen dataclass whose constructor validates every field (ValueError
naming the bad value) and does no I/O. On disk (job.json, config.json) it is a JSON object with
exactly its field names: `settings_from_dict` refuses unknown keys, missing required keys and
anything that is not an object, so a record written for one kind is never read as another.
JSON has no tuples: lists become tuples on the way in (frozen records hold tuples) and tuples
lists on the way out. Standard library only.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

T = TypeVar("T")


def settings_to_dict(record: object) -> dict[str, Any]:
    """A settings record as a JSON-ready dict: its fields, tuples written as lists."""
    data = asdict(record)  # type: ignore[call-overload]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def settings_from_dict(cls: type[T], data: object, what: str) -> T:
    """`cls(**data)`, strictly: `data` must be an object with no unknown keys and every required
    one; errors are ValueError naming `what` (`run` -> 'unknown run setting ...')."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} settings {data!r:.80} are not an object")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise ValueError(f"unknown {what} setting {unknown[0]!r:.80}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"{what} settings incomplete: {exc}") from None
