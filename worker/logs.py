"""Event-style log lines for workers and the CLI.

A chunkq log call names a stable event as its message and puts details in ``extra``::

    logger.info("document.failed", extra={"operation_id": op, "reason": why})

:class:`EventFormatter` renders the standard fields, then every extra as
``key=value`` in a stable order, with no colour codes or symbols::

    2026-12-04 16:02:11,512 INFO ForkPoolWorker-1 tasks.pipeline correlation_id=9f2c...
        document.failed operation_id=... reason=...

(one line in the log; folded here)

Installed on the worker's handlers by :mod:`worker.signals` when Celery sets up logging.
"""

from __future__ import annotations

import logging

from recovery.correlation import CorrelationIdFilter

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(processName)s %(name)s "
    "correlation_id=%(correlation_id)s %(message)s"
)

_STANDARD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "data", "task_id", "task_name", "correlation_id"}


class EventFormatter(logging.Formatter):
    """Formats a record's message followed by its extras as ``key=value`` pairs."""

    def __init__(self, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        """Return the formatted line, extras appended."""
        line = super().format(record)
        extras = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD_FIELDS and not key.startswith("_")
        }
        if not extras:
            return line
        pairs = " ".join(
            f"{key}={_render(value)}" for key, value in sorted(extras.items())
        )
        head, newline, rest = line.partition("\n")
        return f"{head} {pairs}{newline}{rest}"


def _render(value: object) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def install(logger: logging.Logger) -> None:
    """Give every handler of ``logger`` the event formatter and the correlation filter."""
    for handler in logger.handlers:
        handler.setFormatter(EventFormatter())
        if not any(isinstance(f, CorrelationIdFilter) for f in handler.filters):
            handler.addFilter(CorrelationIdFilter())
