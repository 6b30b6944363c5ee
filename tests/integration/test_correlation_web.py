"""An ASGI app's request and the jobs it enqueues share one correlation id."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tasks.chunking import chunk_documents
from worker.runtime import stores
from worker.web import CORRELATION_HTTP_HEADER, add_correlation_middleware

pytestmark = pytest.mark.integration


def _app(source_root: Path) -> Starlette:
    def enqueue(request: Request) -> JSONResponse:
        result = chunk_documents.delay(source_root=str(source_root))
        return JSONResponse({"operation_id": result.id})

    app = Starlette(routes=[Route("/jobs", enqueue, methods=["POST"])])
    add_correlation_middleware(app)
    return app


def test_request_header_becomes_the_jobs_correlation_id(tmp_path: Path) -> None:
    """X-Correlation-ID of the request is the id recorded for the job it enqueued."""
    client = TestClient(_app(tmp_path))

    response = client.post("/jobs", headers={CORRELATION_HTTP_HEADER: "web-req-42"})

    assert response.headers[CORRELATION_HTTP_HEADER] == "web-req-42"
    state = stores().states.get(response.json()["operation_id"])
    assert state["correlation_id"] == "web-req-42"


def test_unsafe_header_is_replaced_by_a_fresh_id(tmp_path: Path) -> None:
    """A header value that is not a safe id is not used; the response names the new one."""
    client = TestClient(_app(tmp_path))

    response = client.post(
        "/jobs", headers={CORRELATION_HTTP_HEADER: "bad id:with*glob"}
    )

    fresh = response.headers[CORRELATION_HTTP_HEADER]
    assert fresh != "bad id:with*glob"
    assert (
        stores().states.get(response.json()["operation_id"])["correlation_id"] == fresh
    )
