"""Uploaded datasets (`STORE/uploads/<sha12>-<safe name>`) and the one check of a job's dataset.

A job's dataset is either a built-in name (`extraction.datasets.builtin_datasets()`, resolved to
its file in the project's data/ folder) or a regular file directly inside this store's uploads
folder: no widget, URL or edited record can point a job at anything else (`resolve_dataset`,
run by `launch` and again by the worker before it starts the extraction). The size limit is
`settings.env.upload_limit_bytes()` (ACTX_UPLOAD_MB, in MiB); the page checks the contents with
`extraction.datasets.parse_dataset` before saving.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from extraction.datasets import builtin_datasets, builtin_dir
from jobs.errors import JobError, refuse_if_read_only
from jobs.paths import local_store_root, uploads_dir
from settings import env

UPLOAD_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv")  # what extraction.datasets reads


def sanitize_filename(name: str) -> str:
    """A safe single file name: no folders, only [A-Za-z0-9._-], a dataset suffix, <= 100 chars."""
    base = re.split(r"[\\/]", str(name))[-1]
    stem, dot, suffix = base.rpartition(".")
    suffix = f".{suffix.lower()}" if dot else ""
    if suffix not in UPLOAD_SUFFIXES:
        shown = str(name)[:80]
        raise JobError(f"file {shown!r} is not a dataset: use one of {', '.join(UPLOAD_SUFFIXES)}")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:90] or "dataset"
    return stem + suffix


def check_size(filename: str, size: int, limit: int) -> None:
    """Refuse a file over `limit` bytes; sizes are shown in MiB, as ACTX_UPLOAD_MB counts them."""
    if size > limit:
        raise JobError(
            f"file {str(filename)[:80]!r} is {size / 2**20:.1f} MiB; "
            f"the limit is {limit / 2**20:.3g} MiB"
        )


def _folder(root: str | Path) -> Path:
    folder = uploads_dir(local_store_root(root))
    if folder.is_symlink():
        raise JobError("the store's uploads folder is a symbolic link; refusing to use it")
    return folder


def save_upload(
    root: str | Path,
    filename: str,
    data: bytes,
    *,
    read_only: bool,
    max_bytes: int | None = None,
) -> Path:
    """Store uploaded bytes as STORE/uploads/<sha12>-<safe name> (written atomically)."""
    refuse_if_read_only(read_only, "upload a dataset")
    limit = env.upload_limit_bytes() if max_bytes is None else max_bytes
    check_size(filename, len(data), limit)
    safe = sanitize_filename(filename)
    folder = _folder(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha256(data).hexdigest()[:12]}-{safe}"
        if path.is_symlink() or not path.is_file():
            fd, tmp = tempfile.mkstemp(prefix=".upload.", dir=folder)  # O_EXCL: no planted link
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except OSError as exc:
        raise JobError(f"cannot save the upload in the store: {exc.strerror or exc}") from None
    return path


def upload_label(path: Path) -> str:
    """`<sha12>-name.jsonl` -> `name.jsonl (uploaded)`: how an upload is shown."""
    return f"{path.name.split('-', 1)[-1]} (uploaded)"


def list_uploads(root: str | Path) -> list[Path]:
    """Uploaded datasets of this store, newest first (regular files with a dataset suffix)."""
    try:
        folder = _folder(root)
        entries = [
            (p.stat().st_mtime, p)
            for p in folder.iterdir()
            if p.suffix in UPLOAD_SUFFIXES and not p.is_symlink() and p.is_file()
        ]
    except (OSError, JobError):
        return []
    return [p for _, p in sorted(entries, key=lambda e: e[0], reverse=True)]


def resolve_dataset(root: str | Path, dataset: str) -> Path:
    """The file a job may read for `dataset`: a built-in one, or an upload of this store."""
    if dataset in builtin_datasets():
        return (builtin_dir() / f"{dataset}.jsonl").resolve()
    uploads = local_store_root(root) / "uploads"
    path = Path(dataset)
    try:
        real = path.resolve(strict=True) if path.is_absolute() else None
        ok = (
            real is not None
            and not uploads.is_symlink()
            and real.parent == uploads
            and real.suffix in UPLOAD_SUFFIXES
            and real.is_file()
        )
    except (OSError, RuntimeError):  # missing, a symlink loop
        ok = False
    if not ok:
        raise JobError(
            f"dataset {dataset[:80]!r} is neither a built-in name "
            f"({', '.join(builtin_datasets())}) nor a file uploaded to this store"
        )
    return real
