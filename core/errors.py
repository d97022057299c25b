"""Errors a person can act on: the CLI prints their message as one line, the pages show it."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class ConcordError(Exception):
    """A failure with a message meant for the user (no traceback unless `--debug`)."""


class NotFound(ConcordError):
    """A named dataset, run, pair or entry does not exist."""


class DatabaseLocked(ConcordError):
    """Another process holds the DuckDB file read-write."""

    def __init__(self, path: str, pid: int | None, holder: str | None = None) -> None:
        who = f"process {pid}" if pid is not None else "another process"
        if holder:
            who += f" ({holder})"
        super().__init__(
            f"database {path} is in use by {who}; stop it (e.g. the running app) or pass --db with another file"
        )
        self.path, self.pid = path, pid


class Cancelled(Exception):
    """Raised inside a long operation when its progress object was cancelled (between batches)."""


@contextmanager
def weights_must_fit(message: str) -> Iterator[None]:
    """Saved weights loaded inside this block that do not fit the model (torch's size mismatch, a missing or an
    unexpected key: a checkpoint from before its architecture changed) raise a ConcordError: `message`, then
    torch's first line in brackets."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConcordError(f"{message} ({first})") from exc
