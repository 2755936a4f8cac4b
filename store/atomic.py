"""Atomic file writes, and careful reads of files that may have been planted.

Writes go beside the target, are fsynced and renamed: readers never see half a file.
`read_regular` reads a file that someone else may have replaced by a symlink, a FIFO or a huge
file: it never follows a link, never blocks, and caps the size.

The temporary file is made with `mkstemp` (a new, unpredictable name, opened O_EXCL), so a
symlink planted in a run folder under a guessable temporary name cannot redirect the write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared store's files from its readers
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a crash after it cannot resurrect the old name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_regular(path: Path, max_bytes: int, *, tail: bool = False) -> bytes:
    """The bytes of a regular file, not following a symlink. `tail`: the last `max_bytes`;
    otherwise a longer file is refused (ValueError). Missing, a link, a folder: OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size > max_bytes:
            if not tail:
                raise ValueError(f"larger than {max_bytes} bytes")
            os.lseek(fd, info.st_size - max_bytes, os.SEEK_SET)
        chunks, left = [], max_bytes
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
