"""workflow.errors: the chain behind a masked error, and an error's first line."""

from __future__ import annotations

from workflow.errors import chain, first_line


def test_chain_follows_cause_then_context_and_stops_at_a_loop() -> None:
    root, middle, top = OSError("db gone"), KeyError("k"), AssertionError("Should not reach.")
    middle.__context__ = root
    top.__cause__ = middle
    root.__context__ = top  # a loop, as a re-raised error can make
    assert list(chain(top)) == [top, middle, root]
    assert list(chain(None)) == []


def test_first_line_is_the_message_head_or_the_type_name() -> None:
    assert first_line(ValueError("  connection refused\n\tIs the server running?")) == "connection refused"
    assert first_line(ValueError("x" * 300), 200) == "x" * 200
    assert first_line(RuntimeError()) == "RuntimeError"
