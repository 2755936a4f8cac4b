"""The one exception the store raises, so callers (pages, the CLI) can turn it into a message."""


class StoreError(Exception):
    """A store operation failed: unknown run, missing hook or layer, bad query, unreadable file."""
