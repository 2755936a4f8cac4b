"""A job's log (`jobs/<job_id>/log.txt`, the only log path there is): its tail, and why it failed.

Read through `store.atomic.read_regular`: a log that is a symlink, a FIFO or missing reads as
empty, and only the last bytes are read, however large the file has grown.
"""

from __future__ import annotations

import re
from pathlib import Path

from store.atomic import read_regular

_TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")
MAX_LINE_CHARS = 500
WORKER_TAG = "[job]"  # how the worker's own lines start


def log_tail(path: Path, lines: int = 12, max_bytes: int = 16384) -> tuple[str, ...]:
    """The last lines of a log; progress bars' carriage returns count as line ends."""
    try:
        data = read_regular(path, max_bytes, tail=True)
    except (OSError, ValueError):
        return ()
    text = data.decode("utf-8", errors="replace")
    rows = [row.rstrip()[:MAX_LINE_CHARS] for row in re.split(r"[\r\n]+", text) if row.strip()]
    return tuple(rows[-lines:])


def last_error_line(path: Path) -> str | None:
    """The line that says why a job failed: `error: ...`, a traceback's last line, or the last
    (the worker's own `[job] ...` lines do not count)."""
    rows = [r for r in log_tail(path, lines=200, max_bytes=65536) if not r.startswith(WORKER_TAG)]
    for row in reversed(rows):
        if row.startswith("error:"):
            return row
    for row in reversed(rows):
        if _TRACEBACK_END.match(row):
            return row
    return rows[-1] if rows else None
