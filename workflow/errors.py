"""Reading an exception for a one-line message: the chain of errors behind it (Optuna and SQLAlchemy can mask the
one that matters with another raised while handling it) and its first line."""

from __future__ import annotations

from typing import Iterator, Optional

__all__ = ["chain", "first_line"]


def chain(exc: Optional[BaseException]) -> Iterator[BaseException]:
    """``exc``, then the error it was raised from or while handling, and so on; each once (chains can loop)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def first_line(exc: BaseException, limit: Optional[int] = None) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), cut to ``limit`` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if limit is None else line[:limit]
