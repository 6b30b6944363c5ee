"""Exceptions of the chunking tasks.

::

    TasksError                       root of every exception raised by tasks/
    ├── InvalidRequestError          a chunking request is malformed (also a ValueError)
    ├── SourceRootError              the source folder is missing or not a folder
    └── DocumentError                one document cannot be processed; the job goes on
        ├── DocumentRefusedError     its id escapes the source root
        └── DocumentUnreadableError  it vanished, is binary, or is not valid UTF-8

A :class:`DocumentError` is about one document: the job records it against that
document and continues. The others stop the job, and no retry can fix them.
"""

from __future__ import annotations


class TasksError(Exception):
    """Root of chunkq's chunking-task exceptions."""


class InvalidRequestError(TasksError, ValueError):
    """A chunking request failed validation; ``errors`` lists each problem."""

    def __init__(self, message: str, *, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(message)


class SourceRootError(TasksError):
    """The source root cannot be used.

    Attributes:
        root: the path as given.
        reason: what is wrong with it.
    """

    def __init__(self, *, root: str, reason: str) -> None:
        self.root = root
        self.reason = reason
        super().__init__(f"source root {root!r}: {reason}")


class DocumentError(TasksError):
    """One document cannot be processed.

    Attributes:
        document_id: the document's id (its path relative to the source root).
        reason: a short sentence saying what is wrong.
    """

    def __init__(self, *, document_id: str, reason: str) -> None:
        self.document_id = document_id
        self.reason = reason
        super().__init__(f"document {document_id!r}: {reason}")


class DocumentRefusedError(DocumentError):
    """The document id points outside the source root."""


class DocumentUnreadableError(DocumentError):
    """The document vanished, is binary, or is not valid UTF-8."""
