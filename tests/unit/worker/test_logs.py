"""Unit tests for worker.logs: event lines with extras and the correlation id."""

from __future__ import annotations

import logging

from recovery.correlation import CorrelationIdFilter, correlation_scope
from worker.logs import EventFormatter


def _format(message: str, **extra: object) -> str:
    record = logging.LogRecord(
        "tasks.x", logging.INFO, __file__, 1, message, None, None
    )
    record.__dict__.update(extra)
    CorrelationIdFilter().filter(record)
    return EventFormatter().format(record)


def test_extras_follow_the_event_sorted_and_quoted() -> None:
    """Extras come after the event name as key=value, sorted; values with spaces quoted."""
    with correlation_scope("c-1"):
        line = _format("document.failed", reason="it is binary", operation_id="op")

    assert line.endswith(
        "correlation_id=c-1 document.failed operation_id=op reason='it is binary'"
    )


def test_no_colour_codes() -> None:
    """Log lines hold no escape sequences."""
    assert "\x1b" not in _format("event.name", value=1)
