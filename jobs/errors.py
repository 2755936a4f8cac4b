"""The job layer's own errors, and its read-only guard.

Pages turn a `JobError` into `st.error(str(exc))`: messages are one line of text, name the bad
value, and carry no traceback. `ReadOnlyError` is what every write (launch, cancel, upload) raises
in hosted mode; the decision is `settings.env.read_only()`, the same one the pages and the sidebar
use, so a read-only switch set only in secrets.toml (or a secrets file that does not parse) is
enforced here too, whatever the caller passed.
"""

from __future__ import annotations

from settings import env


class JobError(Exception):
    """A job operation failed: unknown or unreadable job, refused dataset, worker not started."""


class ReadOnlyError(JobError):
    """A write was attempted while the app is in read-only (hosted) mode."""


def refuse_if_read_only(read_only: bool, action: str) -> None:
    """Raise ReadOnlyError when the caller says read-only OR the configuration does."""
    if read_only or env.read_only():
        raise ReadOnlyError(f"read-only mode: cannot {action}")
