"""Correlation ids for ASGI apps (FastAPI, Starlette): the optional ``web`` extra.

Install with ``pip install 'chunkq[web]'``, then::

    from worker.web import add_correlation_middleware
    add_correlation_middleware(app)

Each request gets the id in its ``X-Correlation-ID`` header (or a fresh one, echoed
in the response). The middleware is ``asgi-correlation-id``'s; chunkq reads its
context variable, so the jobs a request enqueues, their logs, retries and records
carry the request's id with no further glue. A header value that is not a safe id
(1 to 64 of ``A-Z a-z 0-9 . _ -``) is replaced by a fresh id.
"""

from __future__ import annotations

from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware

from recovery.correlation import accept, new_correlation_id

CORRELATION_HTTP_HEADER = "X-Correlation-ID"


def add_correlation_middleware(app: Any) -> None:
    """Add the correlation id middleware to a Starlette or FastAPI ``app``."""
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name=CORRELATION_HTTP_HEADER,
        generator=new_correlation_id,
        validator=lambda value: accept(value) is not None,
        transformer=lambda value: value,
    )
