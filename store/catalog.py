"""Catalogs: which folders of a store's `runs/` (or of another kind) are healthy, which damaged.

A folder counts once it has a commit marker (a regular file). Its manifest is then read (at most
`layout.MANIFEST_MAX_BYTES`), parsed and validated: a folder whose name is not a run id, that is
a symbolic link, whose manifest is missing, not a regular file, too large, not UTF-8 JSON, does
not validate, or names another run id becomes a `DamagedRun` with a one-line reason, relative to
the store. Nothing here raises for one bad folder; only an unlistable `runs/` is a `StoreError`.

Caveats: results are cached per folder under a stat signature (marker mtime; manifest mode, size,
mtime and inode), so a scan costs a few stats per folder and re-reads only folders that changed;
a manifest rewritten in place within the same mtime tick with the same size would go unnoticed
(writers replace manifests by rename, which changes the inode). The catalog checks manifests
only; whether a run's Parquet files open is `store.files`' job, passed to `scan` as `check`.
Thread safe: the cache has its own lock, and two threads loading the same folder at once only
read it twice.

The same rules hold for every kind of committed folder with a manifest (runs, vector sets, model
readouts): `ManifestCatalog` takes a `CatalogKind` (its folder, the noun in messages, how a folder
name is checked, how a manifest is parsed and what id it claims); `RunCatalog` is the one of runs.
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


@dataclass(frozen=True)
class CatalogKind:
    """What a catalog lists: `folder` under the store root (`runs`), the `noun` its messages use
    (`run`), the check of a folder name (`validate_name`, ValueError if bad), the manifest parser
    (`from_dict`, ValueError or TypeError naming the field) and the id a manifest claims."""

    folder: str
    noun: str
    validate_name: Callable[[str], object]
    from_dict: Callable[[object], Any]
    id_of: Callable[[Any], str]


RUNS = CatalogKind("runs", "run", validate_run_id, RunManifest.from_dict, lambda m: m.run_id)


class ManifestCatalog:
    """The committed folders of one kind in a store directory, read from their manifests and
    cached per folder."""

    def __init__(self, root: Path, kind: CatalogKind) -> None:
        self.kind = kind
        self.dir = Path(root) / kind.folder
        self._lock = threading.Lock()
        # folder name -> (stat signature, what reading it gave)
        self._folders: dict[str, tuple[tuple, Any]] = {}

    def read(self, name: str) -> tuple[tuple | None, Any]:
        """(signature, what reading the folder gave); (None, None) if it is not a run folder."""
        folder = self.dir / name
        signature = self._signature(folder)
        if signature is None:
            return None, None
        with self._lock:
            cached = self._folders.get(name)
        if cached is None or cached[0] != signature:
            cached = (signature, self._load(name, folder, signature))
            with self._lock:
                self._folders[name] = cached
        return cached

    def get(self, name: str) -> Any:
        """The healthy manifest of folder `name`; StoreError for a bad name, none, or damage."""
        try:
            self.kind.validate_name(name)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        _, result = self.read(name)
        if result is None:
            raise StoreError(f"no committed {self.kind.noun} {name!r} in this store")
        if isinstance(result, DamagedRun):
            raise StoreError(f"{self.kind.noun} {name!r} is damaged: {result.reason}")
        return result

    def resolve(self, name: object) -> str:
        """A healthy folder's id, or an unambiguous prefix of one; StoreError otherwise."""
        noun = self.kind.noun
        if not isinstance(name, str):
            raise StoreError(f"{noun} {name!r:.80} is not a {noun} id")
        ids = sorted(self.kind.id_of(m) for m in self.scan()[0])
        if name in ids:
            return name
        matches = [found for found in ids if name and found.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise StoreError(f"{noun} {name!r} is ambiguous: it starts {', '.join(matches)}")
        self.get(name)  # raises the usual error for unknown, damaged or malformed ids
        raise StoreError(f"no committed {noun} {name!r} in this store")

    def scan(
        self, check: Callable[[Any], DamagedRun | None] | None = None
    ) -> tuple[list[Any], list[DamagedRun], tuple]:
        """(healthy runs newest first, damaged runs by folder, a key that changes with either).

        With `check`, a healthy-looking run for which it returns a DamagedRun counts as damaged.
        """
        try:
            with os.scandir(self.dir) as entries:
                names = sorted(entry.name for entry in entries)
        except (FileNotFoundError, NotADirectoryError):
            return [], [], ()
        except OSError as exc:
            raise StoreError(
                f"cannot list the {self.kind.folder} of this store ({exc.strerror})"
            ) from None
        healthy, damaged, key = [], [], []
        for name in names:
            signature, result = self.read(name)
            if result is None:
                continue
            if not isinstance(result, DamagedRun) and check is not None:
                result = check(result) or result
            if isinstance(result, DamagedRun):
                damaged.append(result)
            else:
                healthy.append(result)
                key.append((name, signature))
        with self._lock:  # forget folders that are gone
            for gone in set(self._folders) - set(names):
                del self._folders[gone]
        healthy.sort(key=lambda m: (m.created_at, self.kind.id_of(m)), reverse=True)
        return healthy, damaged, tuple(key)

    @staticmethod
    def _signature(folder: Path) -> tuple | None:
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
            info = os.stat(layout.manifest_path(folder))
        except OSError as exc:
            return ("marker", marker.st_mtime_ns, "no manifest", exc.errno)
        return ("marker", marker.st_mtime_ns, info.st_mode, info.st_size, info.st_mtime_ns,
                info.st_ino)  # fmt: skip

    def _load(self, name: str, folder: Path, signature: tuple) -> Any:
        """Read and validate one folder's manifest (uncached); every failure is a DamagedRun."""
        kind = self.kind

        def damaged(reason: str) -> DamagedRun:
            return DamagedRun(f"{kind.folder}/{_shown(name)}", one_line(reason))

        try:
            kind.validate_name(name)
        except ValueError as exc:
            if kind is not RUNS:
                return damaged(f"folder name {_shown(name)!r} is not valid: {exc}")
            return damaged(
                f"folder name {_shown(name)!r} is not a valid run id "
                "(letters, digits, '.', '_' and '-', starting with a letter or digit)"
            )
        if signature[0] == "link":
            return damaged(
                f"the folder is a symbolic link; a {kind.noun} must be a real folder in "
                f"{kind.folder}/"
            )
        if signature[0] == "unreadable":
            return damaged(f"the folder cannot be read ({os.strerror(signature[1])})")
        if signature[2] == "no manifest":
            if signature[3] == 2:  # ENOENT
                return damaged("it has a commit marker but no manifest.json")
            return damaged(f"manifest.json cannot be read ({os.strerror(signature[3])})")
        mode, size = signature[2], signature[3]
        if stat.S_ISDIR(mode):
            return damaged("manifest.json is a folder, not a file")
        if not stat.S_ISREG(mode):  # a FIFO would block the reader forever
            return damaged("manifest.json is not a regular file")
        if size > layout.MANIFEST_MAX_BYTES:
            return damaged(
                f"manifest.json is {size / 2**20:.1f} MiB, over the "
                f"{layout.MANIFEST_MAX_BYTES // 2**20} MiB limit"
            )
        try:
            with open(layout.manifest_path(folder), "rb") as handle:
                data = handle.read(layout.MANIFEST_MAX_BYTES + 1)
        except OSError as exc:
            return damaged(f"manifest.json cannot be read ({exc.strerror or type(exc).__name__})")
        if len(data) > layout.MANIFEST_MAX_BYTES:
            return damaged(
                f"manifest.json is over the {layout.MANIFEST_MAX_BYTES // 2**20} MiB limit"
            )
        if not data.strip():
            return damaged("manifest.json is empty")
        try:
            parsed = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            return damaged("manifest.json is not UTF-8 text")
        except RecursionError:
            return damaged("manifest.json is nested too deeply")
        except json.JSONDecodeError as exc:
            return damaged(f"manifest.json is not JSON ({exc.msg} at line {exc.lineno})")
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            return damaged(f"manifest.json cannot be parsed ({exc})")
        try:
            manifest = kind.from_dict(parsed)
        except (ValueError, TypeError, RecursionError) as exc:
            text = str(exc)  # "manifest has no 'd_model'" or "n_layers '30' must be ..."
            if text.startswith("manifest "):
                return damaged("manifest.json " + text.removeprefix("manifest "))
            return damaged(f"manifest.json: {text}")
        claimed = kind.id_of(manifest)
        if claimed != name:
            return damaged(
                f"manifest says {kind.noun} id {_shown(claimed)!r} "
                f"but its folder is {_shown(name)!r}"
            )
        return manifest


class RunCatalog(ManifestCatalog):
    """The runs of one store directory (`runs/`)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, RUNS)
