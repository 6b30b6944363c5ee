"""Exceptions of the worker side.

::

    WorkerError                root of every exception raised by worker/
    └── LocalServiceError      a local Redis server or worker process did not start
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of chunkq's worker-side exceptions."""


class LocalServiceError(WorkerError):
    """A local service (Redis server, worker subprocess) failed to start or answer."""
