"""User-facing data errors: a bad file or schema is the user's to fix, so it gets a message, not a traceback."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Raised for bad input data, schemas or options; the command prints its message and exits non-zero."""
