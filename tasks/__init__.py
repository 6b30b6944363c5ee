"""Chunking tasks of chunkq: engine adapter, document sources, chunk sinks, the task.

``from tasks import chunk_documents`` gives the Celery task; importing it loads the
Celery app. The other modules import without Celery configuration.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "chunk_documents":
        from tasks.chunking import chunk_documents  # noqa: PLC0415 - loads Celery

        return chunk_documents
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
