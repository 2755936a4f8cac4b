"""The one exception the store raises, so callers (pages, the CLI) can turn it into a message.

`one_line` makes any text fit such a message: pages show it in one alert and the CLIs print it
after `error: `, so it must not span lines, carry control bytes or run on for pages.
"""

MAX_REASON_CHARS = 300


class StoreError(Exception):
    """A store operation failed: unknown run, missing hook or layer, bad query, unreadable file."""


def one_line(text: object, limit: int = MAX_REASON_CHARS) -> str:
    """A message fit for one line: whitespace runs joined, control bytes masked, length bounded."""
    line = " ".join(str(text).split())
    line = "".join(c if c.isprintable() else "?" for c in line)
    return line if len(line) <= limit else line[: limit - 3] + "..."
