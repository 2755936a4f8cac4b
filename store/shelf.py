"""What the store's newer kinds of folder share: strict records, a checked listing, lookups.

SAEs (`store.saes`) and feature runs (`store.features`) are each a folder of the store whose
entries are read like runs: the record file strictly through `store.catalog`, then the entry's
other files checked (once per file version) by the kind's `problem`. A `Shelf` lists the healthy
entries and the damaged ones with their reasons, and finds one by id or unambiguous prefix.
`record_from_dict` builds a frozen dataclass from a parsed record the way `RunManifest` does:
missing required fields are named, unknown ones are kept in `extra` (newer writers may add some).
"""

from __future__ import annotations

import os
import threading
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from store.catalog import DamagedRun, FolderCatalog, FolderKind
from store.errors import StoreError, one_line


def record_from_dict(cls: type, data: object, what: str) -> Any:
    """`cls(**data)` for a record read from a file; ValueError naming what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"the {what} is not a JSON object (it is {type(data).__name__})")
    known = {f.name for f in fields(cls)}
    required = [f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING]  # fmt: skip
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"the {what} has no {missing[0]!r}")
    kwargs = {k: v for k, v in data.items() if k in known}
    unknown = {k: v for k, v in data.items() if k not in known}
    if unknown:
        if not isinstance(kwargs.get("extra", {}), dict):
            raise ValueError("extra must be an object")
        kwargs["extra"] = {**kwargs.get("extra", {}), **unknown}
    return cls(**kwargs)


class Shelf:
    """The entries of one FolderKind in a store: subclasses say which files an entry has
    (`files`) and what is wrong with them (`problem`)."""

    def __init__(self, root: Path, kind: FolderKind) -> None:
        self.root = Path(root)
        self.kind = kind
        self._catalog = FolderCatalog(self.root, kind)
        self._lock = threading.Lock()
        self._checked: dict[str, tuple[tuple, str | None]] = {}

    def files(self, record: Any) -> list[Path]:
        raise NotImplementedError

    def problem(self, record: Any) -> str | None:
        raise NotImplementedError

    def _scan(self) -> tuple[list[Any], list[DamagedRun]]:
        healthy, damaged, _ = self._catalog.scan(self._damage)
        return healthy, damaged

    def list(self) -> list[Any]:
        """Healthy committed entries, newest first."""
        return self._scan()[0]

    def damaged(self) -> list[DamagedRun]:
        """Entries that cannot be used, each with a one-line reason (never raises)."""
        return self._scan()[1]

    def _damage(self, record: Any) -> DamagedRun | None:
        key = self.kind.record_id(record)
        signature = []
        for path in self.files(record):
            try:
                info = os.lstat(path)
                signature.append((str(path), info.st_size, info.st_mtime_ns, info.st_ino))
            except OSError as exc:
                signature.append((str(path), exc.errno))
        with self._lock:
            cached = self._checked.get(key)
        if cached is None or cached[0] != tuple(signature):
            cached = (tuple(signature), self.problem(record))
            with self._lock:
                self._checked[key] = cached
        problem = cached[1]
        return DamagedRun(f"{self.kind.folder}/{key}", one_line(problem)) if problem else None

    def get(self, name: object) -> Any:
        """A healthy entry by id or unambiguous prefix; StoreError naming the problem."""
        noun = self.kind.noun
        if not isinstance(name, str) or not name:
            raise StoreError(f"{noun} {name!r:.80} is not an id")
        healthy, damaged = self._scan()
        by_id = {self.kind.record_id(record): record for record in healthy}
        if name in by_id:
            return by_id[name]
        for entry in damaged:
            if entry.folder == f"{self.kind.folder}/{name}":
                raise StoreError(f"{noun} {name!r} is damaged: {entry.reason}")
        matches = sorted(key for key in by_id if key.startswith(name))
        if len(matches) == 1:
            return by_id[matches[0]]
        if matches:
            raise StoreError(f"{noun} {name!r} is ambiguous: it starts {', '.join(matches)}")
        known = ", ".join(sorted(by_id)[:5]) or "none"
        raise StoreError(f"no {noun} {name[:80]!r} in this store ({noun}s: {known})")
