"""What SAEs and feature runs share: a checked listing and lookups by id or prefix.

SAEs (`store.saes`) and feature runs (`store.features`) are each a folder of the store whose
entries are read like runs: the manifest strictly through `store.catalog`, then the entry's
other files checked (once per file version) by the kind's `problem`. A `Shelf` lists the healthy
entries and the damaged ones with their reasons, and finds one by id or unambiguous prefix.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from settings.run import validate_run_id
from store.catalog import CatalogKind, DamagedRun, ManifestCatalog
from store.errors import StoreError, one_line


def id_check(noun: str) -> Callable[[str], str]:
    """The check of a folder name for `noun`s: a run id's rules, messages naming the noun."""

    def check(name: str) -> str:
        try:
            return validate_run_id(name)
        except ValueError as exc:
            raise ValueError(str(exc).replace("run id", f"{noun} id", 1)) from None

    return check


class Shelf:
    """The entries of one CatalogKind in a store: subclasses say which files an entry has
    (`files`) and what is wrong with them (`problem`)."""

    def __init__(self, root: Path, kind: CatalogKind) -> None:
        self.root = Path(root)
        self.kind = kind
        self._catalog = ManifestCatalog(self.root, kind)
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
        key = self.kind.id_of(record)
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
        record = self._catalog.get(self._catalog.resolve(name))
        damage = self._damage(record)
        if damage is not None:
            raise StoreError(f"{self.kind.noun} {self.kind.id_of(record)!r} is damaged: "
                             f"{damage.reason}")  # fmt: skip
        return record
