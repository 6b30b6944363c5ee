"""Unit tests for per-document strategy fallback in tasks.pipeline.chunk_document."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.engine import register_strategy
from tasks.errors import DocumentUnreadableError
from tasks.models import ChunkRequest
from tasks.pipeline import chunk_document


def _always_fails(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    raise RuntimeError("splitter exploded")


register_strategy("unit-explodes", _always_fails)


def _request(strategy: str) -> ChunkRequest:
    return ChunkRequest(
        source_root=Path("/data"), strategy=strategy, chunk_size=50, overlap=5
    )


def test_falls_back_and_records_why() -> None:
    """Chunks come from the next strategy and carry the failure that made it so."""
    chunks = chunk_document(
        "A sentence. " * 20,
        document_id="d",
        request=_request("unit-explodes"),
        next_strategy={"unit-explodes": "characters"}.get,
    )

    assert chunks and {chunk.strategy for chunk in chunks} == {"characters"}
    assert all("unit-explodes failed" in str(chunk.fallback_reason) for chunk in chunks)


def test_end_of_chain_fails_the_document_with_every_reason() -> None:
    """With no simpler strategy left, the document fails, naming what was tried."""
    with pytest.raises(DocumentUnreadableError, match="no strategy could chunk it"):
        chunk_document(
            "text",
            document_id="d",
            request=_request("unit-explodes"),
            next_strategy=lambda _: None,
        )


def test_no_fallback_reason_when_nothing_failed() -> None:
    """Chunks made by the requested strategy have no fallback reason."""
    chunks = chunk_document(
        "Hello there. " * 10, document_id="d", request=_request("recursive")
    )
    assert all(chunk.fallback_reason is None for chunk in chunks)
