"""Correlation ids: one id that follows a piece of work everywhere it goes.

The id of the work in hand lives in a context variable. A caller binds one (or an ASGI
app does, through ``asgi-correlation-id``'s middleware, whose id is picked up here);
otherwise a fresh one is made at publish. It travels in the message header
:data:`CORRELATION_HEADER`, is restored in the worker before the task runs, and so is
current again when the task retries or sends other tasks. :class:`CorrelationIdFilter`
puts it on every log record as ``correlation_id``, so ``%(correlation_id)s`` works in
any log format.

An id from outside (an HTTP header, a message) is used only when it is a safe key
part (see :mod:`recovery.ids`); anything else is replaced by a fresh id.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar, Token

from recovery.errors import InvalidIdError
from recovery.ids import check_id

CORRELATION_HEADER = "chunkq_correlation_id"
"""Message header that carries the id (Celery keeps ``correlation_id`` for its own)."""

NO_CORRELATION_ID = "-"
"""What a log record shows when no id is bound."""

_current: ContextVar[str | None] = ContextVar("chunkq_correlation_id", default=None)


def new_correlation_id() -> str:
    """Return a fresh correlation id (32 hexadecimal characters)."""
    return uuid.uuid4().hex


def accept(value: object) -> str | None:
    """Return ``value`` when it is usable as a correlation id, else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        return check_id("correlation_id", value)
    except InvalidIdError:
        return None


def current_correlation_id() -> str | None:
    """Return the id bound in this context, or the ASGI middleware's, or ``None``."""
    bound_id = _current.get()
    if bound_id is not None:
        return bound_id
    return accept(_asgi_correlation_id())


def ensure_correlation_id() -> str:
    """Return the current id, or a fresh one when none is bound (it is not bound)."""
    return current_correlation_id() or new_correlation_id()


def bind(correlation_id: str) -> Token[str | None]:
    """Make ``correlation_id`` current; pass the token to :func:`unbind` to undo it."""
    return _current.set(correlation_id)


def unbind(token: Token[str | None]) -> None:
    """Restore the id that was current before the matching :func:`bind`."""
    _current.reset(token)


@contextlib.contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Bind ``correlation_id`` (or the current one, or a fresh one) for a ``with`` block."""
    chosen = accept(correlation_id) or ensure_correlation_id()
    token = bind(chosen)
    try:
        yield chosen
    finally:
        unbind(token)


class CorrelationIdFilter(logging.Filter):
    """Adds ``correlation_id`` to every record that passes (``-`` when none is bound).

    Attach it to handlers (a filter on a logger does not see records of its children).
    A record that already carries an id in ``extra`` keeps it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Set the attribute and let the record through."""
        if not getattr(record, "correlation_id", None):
            record.correlation_id = current_correlation_id() or NO_CORRELATION_ID
        return True


def _asgi_correlation_id() -> object:
    try:
        from asgi_correlation_id.context import correlation_id  # noqa: PLC0415
    except ImportError:
        return None
    return correlation_id.get()
