"""Where a store lives: a local folder, or a URI on object storage (`s3://bucket/prefix`, or any
other filesystem `pyarrow.fs.FileSystem.from_uri` opens: `gs://`, `abfs://`, `hdfs://`).

The layout (`store.layout`) and the commit rule are the same everywhere: a run's files, then its
manifest, then the `_COMMITTED` marker, written last; readers ignore any run without it. Local
stores are read and written exactly as before (temporary names, fsync, rename, fcntl locks).

An object store has no rename, no fsync and no locks, so it is used through a local folder:

- **Writing** (`RemoteStore.stage`, used by `store.writer.RunWriter`): a run is written into a
  local staging folder by the same code as a local run, and every file is pushed under its final
  key as soon as it is whole: `config.json` at the start, each part file as it is flushed
  (tokens and answers before their vectors part, as locally), `samples.parquet` when written,
  then at commit the summaries and `manifest.json`, and `_COMMITTED` last. An object PUT is
  whole or absent, so no temporary names are needed. A killed writer leaves parts and no marker:
  invisible to readers; `--resume` pulls the run's parts back into staging and redoes only the
  samples they lack. The staging folder is removed after the commit.
- **Reading** (`RemoteStore.mirror`, used by `store.reader.open_store`): the committed runs are
  copied into a local mirror folder (`ACTX_STORE_CACHE`, one folder per store URI) and read from
  there with the same code as a local store, so every check for damaged or planted files holds.
  A committed run is immutable, so a file once mirrored is kept while its key and size are
  unchanged; the marker is copied last, so a half-mirrored run is invisible locally too. Only
  the file names the layout defines are copied (manifest at most `MANIFEST_MAX_BYTES`); every
  key is checked to be a plain name inside the run's folder before it becomes a local path.

What is weaker on object storage (said in the README too):

- **No locks: one writer per run id.** A writer puts a `.writer` object holding a random token
  when it starts or resumes a run and reads it back before writing the marker; if another writer
  has since taken the run (resumed it from another machine), the first refuses to commit with a
  StoreError. This detects a second writer; it does not prevent two writers that race within one
  request's time, nor does `create` exclude a writer that lists the same new id at the same
  instant (run ids carry a timestamp and a random suffix, so only a preset id can collide).
- `extraction clean` cannot tell a live writer from a dead one without a lock, so on an object
  store it refuses; remove an abandoned run's prefix with the storage's own tools.
- Summaries written after the commit (`python -m store summarize`) would change a committed run,
  so they refuse on an object store too (runs written here get theirs at commit).
- A reader downloads each committed run whole into its mirror the first time it lists it: the
  local disk needs room for the runs it reads. Listing costs two recursive LISTs per sync
  (runs and vector sets, at most every `SYNC_INTERVAL_S` per open store).
- Vector sets are the only other kind written here (`RemoteStore.put_entry`: each file put
  whole, the marker last, an id never reused) and mirrored. SAEs, feature runs and readouts
  are kept in local stores only (`refuse_local_only`: one StoreError before anything is
  written); their folders are never mirrored, so objects planted there are never read.

Credentials and endpoint come from the environment, never from the URI: the standard
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION` /
`AWS_REGION` (read by pyarrow's S3 client, also from `~/.aws`), and `AWS_ENDPOINT_URL_S3` or
`AWS_ENDPOINT_URL` for an S3-compatible server (MinIO, moto, Ceph). A URI carrying a user, a
password or a query string is refused (without echoing it), so nothing secret can reach a
manifest, a config or a message (a test reads every object of a store for the keys).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from settings.run import validate_run_id
from store import layout
from store.errors import StoreError, one_line

# A scheme followed by "://": anything else ("store_data", "C:\\x", "/srv/s") is a local path.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
LOCAL_SCHEMES = ("file",)
SYNC_INTERVAL_S = 2.0
WRITER_TOKEN = ".writer"  # a writer's claim on a run (see the module doc); never mirrored
DEFAULT_CACHE = "~/.cache/activation-explorer/stores"

# The files of a run folder a reader copies: exact names, or part files in the part folders.
_RUN_FILES = {"config.json", "samples.parquet", "manifest.json", layout.COMMIT_MARKER,
              "summaries/labels.parquet", "summaries/subsample.parquet",
              "summaries/summary.json"}  # fmt: skip
_PART_FOLDERS = ("vectors", "tokens", "answers")
# Other folders a reader mirrors, with the exact names of each entry's files: vector sets are
# written here too (`put_entry`). SAEs, feature runs and readouts are kept in local stores only:
# their folders are never mirrored, so objects planted there are never read.
_ENTRY_FILES = {"vector_sets": {"vectors.parquet", "manifest.json", layout.COMMIT_MARKER}}
LOCAL_ONLY = {
    "saes": "SAEs",
    "features": "SAE feature runs",
    "readouts": "model readouts (unembeddings)",
}


def is_uri(location: object) -> bool:
    """Whether a store location names a remote filesystem (`s3://...`) rather than a folder."""
    return isinstance(location, str) and bool(_URI.match(location))


def store_location(text: str) -> str | Path:
    """argparse `type=` for `--store`: a URI stays text (Path would fold its `//`), else a Path."""
    return text if is_uri(text) else Path(text)


def shown_uri(uri: str) -> str:
    """The URI as a message may show it: no user, password or query (they may hold secrets)."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
    except ValueError:
        return uri.split("://", 1)[0] + "://?"
    return one_line(f"{parts.scheme}://{host}{parts.path}", 200)


def _env_endpoint() -> tuple[str | None, str | None]:
    """(host:port, scheme) of an S3-compatible endpoint from the environment, or (None, None)."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return None, None
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.netloc, parts.scheme or "https"


def _filesystem(uri: str):
    """(pyarrow FileSystem, base path without trailing slash) for a store URI."""
    from pyarrow import fs as pafs

    parts = urlsplit(uri)
    if parts.username or parts.password or "@" in parts.netloc:
        raise StoreError(f"store {shown_uri(uri)!r}: put credentials in the environment "
                         "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), not in the URI")  # fmt: skip
    if parts.query or parts.fragment:
        raise StoreError(f"store {shown_uri(uri)!r}: the URI takes no query; set the endpoint "
                         "with AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL")  # fmt: skip
    if not parts.netloc:
        raise StoreError(f"store {shown_uri(uri)!r} names no bucket")
    base = f"{parts.netloc}{parts.path}".rstrip("/")
    if any(part in ("", ".", "..") for part in base.split("/")):
        raise StoreError(f"store {shown_uri(uri)!r}: every part of the path must be a name")
    try:
        if parts.scheme == "s3":
            endpoint, scheme = _env_endpoint()
            options: dict = {}
            if endpoint:
                options.update(endpoint_override=endpoint, scheme=scheme)
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if region or endpoint:  # an endpoint of our own: no region lookup against AWS
                options["region"] = region or "us-east-1"
            return pafs.S3FileSystem(**options), base
        filesystem, path = pafs.FileSystem.from_uri(uri)
        return filesystem, path.rstrip("/")
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise StoreError(
            f"cannot open store {shown_uri(uri)!r}: {one_line(str(exc), 160)}"
        ) from None


def _cache_root() -> Path:
    from settings.env import setting

    return Path(setting("ACTX_STORE_CACHE") or DEFAULT_CACHE).expanduser()


def _safe_relative(rel: str) -> bool:
    """A key below a run folder that may become a local path: plain names, no dot folders."""
    parts = rel.split("/")
    return all(p and p not in (".", "..") and not p.startswith(".") and "\\" not in p
               for p in parts)  # fmt: skip


def refuse_local_only(location: object, what: str) -> None:
    """A one-line StoreError when `location` is on object storage and `what` (a key of
    LOCAL_ONLY, or a phrase) must be written into a local store: before anything is written."""
    if is_uri(location):
        noun = LOCAL_ONLY.get(what, what)
        raise StoreError(f"{noun} are not supported on object storage (store "
                         f"{shown_uri(str(location))!r}); use a local store for them")  # fmt: skip


def wanted_in_mirror(rel: str, folder: str = "runs") -> bool:
    """Whether a reader copies this file of an entry (`rel` relative to the entry's folder)."""
    if folder != "runs":
        return rel in _ENTRY_FILES.get(folder, ())
    if rel in _RUN_FILES:
        return True
    folder, _, name = rel.partition("/")
    return folder in _PART_FOLDERS and bool(layout.PART_NAME.fullmatch(name))


@dataclass(frozen=True)
class RemoteFile:
    rel: str  # relative to the store root, "/"-separated
    size: int


class RemoteStore:
    """A store on a remote filesystem: its listing, its local mirror and its writers' staging."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.shown = shown_uri(uri)
        self.fs, self.base = _filesystem(uri)
        key = hashlib.sha256(uri.encode()).hexdigest()[:16]
        self.local = _cache_root() / key
        self._lock = threading.Lock()
        self._synced_at = 0.0

    # -- plain object operations ------------------------------------------------------------
    def _key(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def _error(self, verb: str, exc: BaseException) -> StoreError:
        return StoreError(f"cannot {verb} store {self.shown!r}: {one_line(str(exc), 160)}")

    def check(self, create: bool = False) -> None:
        """The bucket answers (and, with `create`, nothing stops a first write)."""
        from pyarrow import fs as pafs

        try:
            info = self.fs.get_file_info(self.base.split("/")[0])
        except OSError as exc:
            raise self._error("reach", exc) from None
        if info.type != pafs.FileType.Directory:
            raise StoreError(f"store {self.shown!r} does not exist (no such bucket)")
        if create:
            self.put_bytes("runs/.write-check", b"")
            self.delete(["runs/.write-check"])

    def list(self, rel: str) -> list[RemoteFile]:
        """Every file below `rel` (recursive); empty when there is none."""
        from pyarrow import fs as pafs

        prefix = self._key(rel)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(prefix, recursive=True,
                                                            allow_not_found=True))  # fmt: skip
        except OSError as exc:
            raise self._error("list", exc) from None
        start = len(self.base) + 1
        return [RemoteFile(i.path[start:], i.size or 0) for i in infos
                if i.type == pafs.FileType.File]  # fmt: skip

    def exists(self, rel: str) -> bool:
        from pyarrow import fs as pafs

        try:
            return self.fs.get_file_info(self._key(rel)).type == pafs.FileType.File
        except OSError as exc:
            raise self._error("read", exc) from None

    def get_bytes(self, rel: str, max_bytes: int) -> bytes:
        try:
            with self.fs.open_input_stream(self._key(rel)) as stream:
                data = stream.read(max_bytes + 1)
        except OSError as exc:
            raise self._error("read", exc) from None
        if len(data) > max_bytes:
            raise StoreError(f"store {self.shown!r}: {rel} is larger than {max_bytes} bytes")
        return data

    def put_bytes(self, rel: str, data: bytes) -> None:
        try:
            with self.fs.open_output_stream(self._key(rel)) as stream:
                stream.write(data)
        except OSError as exc:
            raise self._error("write to", exc) from None

    def upload(self, local: Path, rel: str) -> None:
        try:
            with open(local, "rb") as source, self.fs.open_output_stream(self._key(rel)) as out:
                shutil.copyfileobj(source, out, 1 << 20)
        except OSError as exc:
            raise self._error("write to", exc) from None

    def download(self, rel: str, local: Path, max_bytes: int | None = None) -> None:
        """Copy one object to `local` through a temporary name beside it (whole or absent)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.tmp-")
        try:
            with os.fdopen(fd, "wb") as out, self.fs.open_input_stream(self._key(rel)) as stream:
                copied = 0
                while chunk := stream.read(1 << 20):
                    copied += len(chunk)
                    if max_bytes is not None and copied > max_bytes:
                        raise ValueError(f"larger than {max_bytes} bytes")
                    out.write(chunk)
            os.replace(tmp, local)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def delete(self, rels: Iterable[str]) -> None:
        for rel in rels:
            try:
                self.fs.delete_file(self._key(rel))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._error("delete from", exc) from None

    # -- runs -----------------------------------------------------------------------------
    def run_files(self, entry_id: str, folder: str = "runs") -> dict[str, int]:
        """The files of one entry (a run, by default), relative to its folder, with sizes."""
        rel = f"{folder}/{validate_run_id(entry_id)}"
        return {f.rel[len(rel) + 1 :]: f.size for f in self.list(rel)}

    def entries(self, folder: str = "runs") -> dict[str, dict[str, int]]:
        """Every entry folder (entry id -> its files and sizes), from one recursive listing.
        Keys that are not `<folder>/<valid id>/<file>` are left out."""
        found: dict[str, dict[str, int]] = {}
        for item in self.list(folder):
            entry, _, rel = item.rel[len(folder) + 1 :].partition("/")
            try:
                validate_run_id(entry)
            except ValueError:
                continue
            if rel:
                found.setdefault(entry, {})[rel] = item.size
        return found

    def is_committed(self, entry_id: str, folder: str = "runs") -> bool:
        return self.exists(f"{folder}/{validate_run_id(entry_id)}/{layout.COMMIT_MARKER}")

    # -- reading: the local mirror -----------------------------------------------------------
    @property
    def mirror_root(self) -> Path:
        return self.local / "mirror"

    def mirror(self, force: bool = False) -> Path:
        """Bring the local mirror up to date with the committed runs (at most every
        `SYNC_INTERVAL_S` unless `force`); returns the mirror's root."""
        root = self.mirror_root
        with self._lock:
            if not force and time.monotonic() - self._synced_at < SYNC_INTERVAL_S:
                return root
            layout.runs_dir(root).mkdir(parents=True, exist_ok=True)
            with _folder_lock(self.local):
                for folder in ("runs", *_ENTRY_FILES):
                    self._mirror_folder(root, folder)
            self._synced_at = time.monotonic()
        return root

    def _mirror_folder(self, root: Path, folder: str) -> None:
        """Copy the committed entries of one folder (`runs`, `vector_sets`): each entry's files,
        its marker last; drop local entries the store no longer has committed."""
        committed = {entry_id: files for entry_id, files in self.entries(folder).items()
                     if files.get(layout.COMMIT_MARKER) is not None}  # fmt: skip
        mirrored = root / folder
        if not committed and not mirrored.is_dir():
            return
        mirrored.mkdir(parents=True, exist_ok=True)
        for local in mirrored.iterdir():
            if local.name not in committed:
                _remove(local)
        for entry_id, files in committed.items():
            entry = mirrored / entry_id
            wanted = {rel: size for rel, size in files.items()
                      if _safe_relative(rel) and wanted_in_mirror(rel, folder)}  # fmt: skip
            if (entry / layout.COMMIT_MARKER).is_file() and _same_files(entry, wanted):
                continue
            with contextlib.suppress(FileNotFoundError):
                (entry / layout.COMMIT_MARKER).unlink()  # invisible while it changes
            for path in _local_files(entry):
                if path.relative_to(entry).as_posix() not in wanted:
                    path.unlink()
            for rel, size in sorted(wanted.items()):
                if rel == layout.COMMIT_MARKER:
                    continue
                target = entry / rel
                if target.is_file() and not target.is_symlink() and target.stat().st_size == size:
                    continue
                limit = layout.MANIFEST_MAX_BYTES if rel == "manifest.json" else None
                try:
                    self.download(f"{folder}/{entry_id}/{rel}", target, limit)
                except ValueError:
                    continue  # a planted huge manifest: the catalog reports it missing
                except OSError as exc:
                    raise self._error("read", exc) from None
            marker = f"{folder}/{entry_id}/{layout.COMMIT_MARKER}"
            self.download(marker, entry / layout.COMMIT_MARKER)

    # -- writing: small entries written whole ------------------------------------------------
    def put_entry(self, folder: str, entry_id: str, files: dict[str, bytes], marker: str) -> None:
        """Write a new entry of `folder` (a vector set): every file under its final key, then
        the marker, last. Refused if any object of that entry exists already (committed or a
        killed attempt's): an id is used once."""
        if folder not in _ENTRY_FILES or not set(files) < _ENTRY_FILES[folder]:
            raise ValueError(f"{folder}/{entry_id}: not an entry this store writes")
        prefix = f"{folder}/{validate_run_id(entry_id)}"
        if self.list(prefix):
            raise StoreError(f"{folder}/{entry_id} already exists in store {self.shown!r}")
        for rel, data in files.items():
            self.put_bytes(f"{prefix}/{rel}", data)
        self.put_bytes(f"{prefix}/{layout.COMMIT_MARKER}", marker.encode())
        self._synced_at = 0.0  # the next listing looks again

    # -- writing: a run's staging folder -----------------------------------------------------
    @property
    def staging_root(self) -> Path:
        return self.local / "staging"

    def stage(self, run_id: str, fresh: bool) -> Path:
        """The local folder a writer of `run_id` writes into (emptied when `fresh`)."""
        run = layout.run_dir(self.staging_root, run_id)
        if fresh and (run.exists() or run.is_symlink()):
            _remove(run)
        return run

    def pull(self, run_id: str, run: Path) -> None:
        """Copy an uncommitted run's files into its (empty) staging folder, for --resume."""
        for rel in self.run_files(run_id):
            # The fence too, so that a resumed run's next reservation starts past it.
            if _safe_relative(rel) and (wanted_in_mirror(rel) or rel == layout.FENCE_FILE):
                self.download(f"runs/{run_id}/{rel}", run / rel)

    def pending(self, folder: str = "runs") -> list[Path]:
        """Local folders holding the config.json of each uncommitted entry (for --resume)."""
        found = []
        for entry, files in sorted(self.entries(folder).items()):
            if layout.COMMIT_MARKER in files:
                continue
            local = self.local / "pending" / folder / entry
            if "config.json" in files and files["config.json"] <= layout.MANIFEST_MAX_BYTES:
                self.download(f"{folder}/{entry}/config.json", local / "config.json")
            else:
                local.mkdir(parents=True, exist_ok=True)
            found.append(local)
        return found

    def claim(self, run_id: str) -> str:
        """Put this writer's token on the run (see the module doc); returns the token."""
        token = secrets.token_hex(16)
        self.put_bytes(f"runs/{run_id}/{WRITER_TOKEN}", token.encode())
        return token

    def check_claim(self, run_id: str, token: str) -> None:
        try:
            held = self.get_bytes(f"runs/{run_id}/{WRITER_TOKEN}", 1024).decode(errors="replace")
        except StoreError:
            held = ""
        if held != token:
            raise StoreError(
                f"run {run_id!r} was taken over by another writer (its {WRITER_TOKEN} changed); "
                "not committing. One writer per run id on an object store."
            )


@dataclass
class Pusher:
    """Pushes one staged run folder to the remote store, each file once per version."""

    remote: RemoteStore
    run: Path
    token: str
    pushed: dict[str, tuple[int, int]]

    @classmethod
    def open(cls, remote: RemoteStore, run: Path) -> Pusher:
        return cls(remote, run, remote.claim(run.name), {})

    @property
    def prefix(self) -> str:
        return f"runs/{self.run.name}"

    def push(self, paths: Iterable[Path] | None = None) -> None:
        """Push the given files of the run (default: every file but the marker) if changed."""
        for path in _local_files(self.run) if paths is None else paths:
            rel = path.relative_to(self.run).as_posix()
            if rel == layout.COMMIT_MARKER or not _safe_relative(rel):
                continue
            info = path.stat()
            version = (info.st_size, info.st_mtime_ns)
            if self.pushed.get(rel) != version:
                self.remote.upload(path, f"{self.prefix}/{rel}")
                self.pushed[rel] = version

    def drop_extra(self) -> None:
        """Delete remote files of the run that staging no longer has (after a resume's cleanup)."""
        local = {p.relative_to(self.run).as_posix() for p in _local_files(self.run)}
        extra = [rel for rel in self.remote.run_files(self.run.name)
                 if rel not in local and rel != WRITER_TOKEN]  # fmt: skip
        self.remote.delete(f"{self.prefix}/{rel}" for rel in extra)

    def commit(self, marker_text: str) -> None:
        """Push every file, check the claim, then write the marker last; drop the staging."""
        self.push()
        self.remote.check_claim(self.run.name, self.token)
        self.remote.put_bytes(f"{self.prefix}/{layout.COMMIT_MARKER}", marker_text.encode())
        self.remote.delete([f"{self.prefix}/{WRITER_TOKEN}"])
        _remove(self.run)


def put_run_file(root: Path | str, run_id: str, rel: str, data: bytes) -> None:
    """Write one whole file into an uncommitted run's folder, on whatever filesystem the store
    is: for processes that write parts of a run a driver commits (see the writer's module doc).

    `rel` is relative to the run (`vectors/part-01000001.parquet`); a local store gets it by
    temporary name, fsync and rename, an object store as one PUT under its final key."""
    if not _safe_relative(rel) or rel == layout.COMMIT_MARKER:
        raise ValueError(f"run file {rel!r:.80} is not a plain name inside a run")
    if is_uri(root):
        RemoteStore(str(root)).put_bytes(f"runs/{validate_run_id(run_id)}/{rel}", data)
        return
    from store.atomic import atomic_write_bytes

    target = layout.run_dir(Path(root), run_id) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)


def _local_files(folder: Path) -> Iterator[Path]:
    """Regular files below `folder`, skipping dot names (temporary files, the lock)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not path.is_symlink() and _safe_relative(rel):
            yield path


def _same_files(run: Path, wanted: dict[str, int]) -> bool:
    have = {p.relative_to(run).as_posix(): p.stat().st_size for p in _local_files(run)}
    return have == wanted


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialize mirror updates of one store between processes sharing the cache folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
