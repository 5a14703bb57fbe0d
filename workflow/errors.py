"""Reading an exception for a one-line message: the chain of errors behind it (Optuna and SQLAlchemy can mask the
one that matters with another raised while handling it), its first line, and how a command reports it."""

from __future__ import annotations

import sys
from typing import Iterator, Optional

__all__ = ["chain", "first_line", "cli_error"]


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


def cli_error(prog: str, exc: BaseException | str) -> int:
    """Say ``<prog>: error: <message>`` on stderr and give the commands' exit status for a refused input, 2.
    MLflow's exceptions by their message alone (``MlflowException.message``), without the error code."""
    message = exc if isinstance(exc, str) else (getattr(exc, "message", None) or str(exc))
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
