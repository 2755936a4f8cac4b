"""The run catalog: which folders of a store's `runs/` are healthy runs, and which are damaged.

A folder counts once it has a commit marker (a regular file). Its manifest is then read (at most
`layout.MANIFEST_MAX_BYTES`), parsed and validated: a folder whose name is not a run id, that is
a symbolic link, whose manifest is missing, not a regular file, too large, not UTF-8 JSON, does
not validate, or names another run id becomes a `DamagedRun` with a one-line reason, relative to
the store. Nothing here raises for one bad folder; only an unlistable `runs/` is a `StoreError`.

The same strict reading serves every kind of committed folder in a store: a `FolderKind` names
the store folder (`runs`, `saes`, `features`), the record file that describes each entry and
the validating parser of that record. `RunCatalog` is the catalog of `RUNS`.

Caveats: results are cached per folder under a stat signature (marker mtime; manifest mode, size,
mtime and inode), so a scan costs a few stats per folder and re-reads only folders that changed;
a manifest rewritten in place within the same mtime tick with the same size would go unnoticed
(writers replace manifests by rename, which changes the inode). The catalog checks manifests
only; whether a run's Parquet files open is `store.files`' job, passed to `scan` as `check`.
Thread safe: the cache has its own lock, and two threads loading the same folder at once only
read it twice.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from settings.run import validate_run_id
from store import layout
from store.errors import StoreError, one_line
from store.manifest import RunManifest


@dataclass(frozen=True)
class FolderKind:
    """One kind of committed folder: `STORE/<folder>/<id>/` described by `<record>`.

    `parse` validates a parsed record (ValueError naming the bad field) and `record_id` says
    which id it claims, which must be its folder's name. `noun` names an entry in messages.
    """

    folder: str
    record: str
    parse: Callable[[object], Any]
    record_id: Callable[[Any], str]
    noun: str


RUNS = FolderKind(
    "runs", "manifest.json", RunManifest.from_dict, lambda m: m.run_id, "run"
)  # fmt: skip


@dataclass(frozen=True)
class DamagedRun:
    """A committed-looking run folder that cannot be read: `folder` is relative to the store."""

    folder: str
    reason: str

    def __post_init__(self) -> None:
        for kind, value in (("folder", self.folder), ("reason", self.reason)):
            if not isinstance(value, str) or not value or "\n" in value or "\r" in value:
                raise ValueError(f"damaged run {kind} {value!r:.80} must be one line of text")


def _shown(name: str) -> str:
    """A folder name fit for a one-line message: odd characters escaped, length bounded."""
    text = name if name.isprintable() else repr(name)[1:-1]
    return text if len(text) <= 120 else text[:117] + "..."


class FolderCatalog:
    """The entries of one kind in a store directory, read from their records, cached per folder.

    Healthy entries are sorted newest first by their `created_at` (then id).
    """

    def __init__(self, root: Path, kind: FolderKind) -> None:
        self.kind = kind
        self.runs_dir = Path(root) / kind.folder
        self._lock = threading.Lock()
        # folder name -> (stat signature, what reading it gave)
        self._folders: dict[str, tuple[tuple, Any]] = {}

    def read(self, name: str) -> tuple[tuple | None, Any]:
        """(signature, what reading the folder gave); (None, None) if it is not a run folder."""
        folder = self.runs_dir / name
        signature = self._signature(folder)
        if signature is None:
            return None, None
        with self._lock:
            cached = self._folders.get(name)
        if cached is None or cached[0] != signature:
            cached = (signature, self._load(name, folder, signature, self.kind))
            with self._lock:
                self._folders[name] = cached
        return cached

    def scan(
        self, check: Callable[[Any], DamagedRun | None] | None = None
    ) -> tuple[list[Any], list[DamagedRun], tuple]:
        """(healthy runs newest first, damaged runs by folder, a key that changes with either).

        With `check`, a healthy-looking run for which it returns a DamagedRun counts as damaged.
        """
        try:
            with os.scandir(self.runs_dir) as entries:
                names = sorted(entry.name for entry in entries)
        except (FileNotFoundError, NotADirectoryError):
            return [], [], ()
        except OSError as exc:
            raise StoreError(
                f"cannot list the {self.kind.noun}s of this store ({exc.strerror})"
            ) from None
        healthy, damaged, key = [], [], []
        for name in names:
            signature, result = self.read(name)
            if result is not None and not isinstance(result, DamagedRun) and check is not None:
                result = check(result) or result
            if result is not None and not isinstance(result, DamagedRun):
                healthy.append(result)
                key.append((name, signature))
            elif isinstance(result, DamagedRun):
                damaged.append(result)
        with self._lock:  # forget folders that are gone
            for gone in set(self._folders) - set(names):
                del self._folders[gone]
        healthy.sort(key=lambda m: (m.created_at, self.kind.record_id(m)), reverse=True)
        return healthy, damaged, tuple(key)

    def _signature(self, folder: Path) -> tuple | None:
        """What changes when a run folder's manifest does; None if not a committed run folder."""
        try:
            if not stat.S_ISDIR(os.stat(folder).st_mode):
                return None  # a stray file in runs/ is nobody's run
            marker = os.stat(layout.marker_path(folder))
            linked = os.path.islink(folder)
        except (FileNotFoundError, NotADirectoryError):
            return None  # no marker: uncommitted, invisible until it commits
        except OSError as exc:
            return ("unreadable", exc.errno)
        if not stat.S_ISREG(marker.st_mode):
            return None  # the same rule as layout.is_committed
        if linked:  # the query connection reads only inside runs/, so such a run cannot be read
            return ("link",)
        try:
            info = os.stat(folder / self.kind.record)
        except OSError as exc:
            return ("marker", marker.st_mtime_ns, "no manifest", exc.errno)
        return ("marker", marker.st_mtime_ns, info.st_mode, info.st_size, info.st_mtime_ns,
                info.st_ino)  # fmt: skip

    @staticmethod
    def _load(name: str, folder: Path, signature: tuple, kind: FolderKind) -> Any:
        """Read and validate one folder's record (uncached); every failure is a DamagedRun."""
        record, noun = kind.record, kind.noun

        def damaged(reason: str) -> DamagedRun:
            return DamagedRun(f"{kind.folder}/{_shown(name)}", one_line(reason))

        try:
            validate_run_id(name)
        except ValueError:
            return damaged(
                f"folder name {_shown(name)!r} is not a valid {noun} id "
                "(letters, digits, '.', '_' and '-', starting with a letter or digit)"
            )
        if signature[0] == "link":
            return damaged(
                f"the folder is a symbolic link; a {noun} must be a real folder in {kind.folder}/"
            )
        if signature[0] == "unreadable":
            return damaged(f"the folder cannot be read ({os.strerror(signature[1])})")
        if signature[2] == "no manifest":
            if signature[3] == 2:  # ENOENT
                return damaged(f"it has a commit marker but no {record}")
            return damaged(f"{record} cannot be read ({os.strerror(signature[3])})")
        mode, size = signature[2], signature[3]
        if stat.S_ISDIR(mode):
            return damaged(f"{record} is a folder, not a file")
        if not stat.S_ISREG(mode):  # a FIFO would block the reader forever
            return damaged(f"{record} is not a regular file")
        if size > layout.MANIFEST_MAX_BYTES:
            return damaged(
                f"{record} is {size / 2**20:.1f} MiB, over the "
                f"{layout.MANIFEST_MAX_BYTES // 2**20} MiB limit"
            )
        try:
            with open(folder / record, "rb") as handle:
                data = handle.read(layout.MANIFEST_MAX_BYTES + 1)
        except OSError as exc:
            return damaged(f"{record} cannot be read ({exc.strerror or type(exc).__name__})")
        if len(data) > layout.MANIFEST_MAX_BYTES:
            return damaged(f"{record} is over the {layout.MANIFEST_MAX_BYTES // 2**20} MiB limit")
        if not data.strip():
            return damaged(f"{record} is empty")
        try:
            parsed = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            return damaged(f"{record} is not UTF-8 text")
        except RecursionError:
            return damaged(f"{record} is nested too deeply")
        except json.JSONDecodeError as exc:
            return damaged(f"{record} is not JSON ({exc.msg} at line {exc.lineno})")
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            return damaged(f"{record} cannot be parsed ({exc})")
        try:
            manifest = kind.parse(parsed)
        except (ValueError, TypeError, RecursionError) as exc:
            text = str(exc)  # "manifest has no 'd_model'" or "n_layers '30' must be ..."
            if text.startswith("manifest "):
                return damaged(f"{record} " + text.removeprefix("manifest "))
            return damaged(f"{record}: {text}")
        claimed = kind.record_id(manifest)
        if claimed != name:
            return damaged(
                f"{record.removesuffix('.json')} says {noun} id {_shown(claimed)!r} "
                f"but its folder is {_shown(name)!r}"
            )
        return manifest


class RunCatalog(FolderCatalog):
    """The runs of one store directory, read from their manifests and cached per folder."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, RUNS)
