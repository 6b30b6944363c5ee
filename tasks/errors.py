"""Exceptions of the chunking tasks.

::

    TasksError                       root of every exception raised by tasks/
    ├── InvalidRequestError          a chunking request is malformed (also a ValueError)
    ├── SourceRootError              the source folder is missing or not a folder
    ├── OutputDirError               the output folder cannot be made or written
    └── DocumentError                one document cannot be processed; the job goes on
        ├── DocumentRefusedError     its id escapes the source root
        └── DocumentUnreadableError  it vanished, is binary, or is not valid UTF-8

A :class:`DocumentError` is about one document: the job records it against that
document and continues. The others stop the job, and no retry can fix them: each is
also a :class:`recovery.classify.InvalidInputError`, which the retry policy does not
retry.
"""

from __future__ import annotations

from typing import Any

from recovery.classify import InvalidInputError


class TasksError(Exception):
    """Root of chunkq's chunking-task exceptions."""


class InvalidRequestError(TasksError, InvalidInputError, ValueError):
    """A chunking request failed validation; ``errors`` lists each problem."""

    def __init__(self, message: str, *, errors: list[str]) -> None:
        self.errors = errors
        InvalidInputError.__init__(self, subject="chunking request", reason=message)
        self.args = (message,)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), (self.args[0],), {"errors": self.errors}))


class SourceRootError(TasksError, InvalidInputError):
    """The source root cannot be used.

    Attributes:
        root: the path as given.
        reason: what is wrong with it.
    """

    def __init__(self, *, root: str, reason: str) -> None:
        self.root = root
        InvalidInputError.__init__(self, subject=f"source root {root!r}", reason=reason)
        self.args = (f"source root {root!r}: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), (), {"root": self.root, "reason": self.reason}))


def _rebuild(
    cls: type[Exception], args: tuple[object, ...], kwargs: dict[str, Any]
) -> Exception:
    """Recreate an exception with keyword-only arguments when it is unpickled."""
    return cls(*args, **kwargs)


class OutputDirError(TasksError, InvalidInputError):
    """The output folder cannot be used.

    Attributes:
        path: the folder.
        reason: what is wrong with it.
    """

    def __init__(self, *, path: str, reason: str) -> None:
        self.path = path
        InvalidInputError.__init__(
            self, subject=f"output folder {path!r}", reason=reason
        )
        self.args = (f"output folder {path!r}: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), (), {"path": self.path, "reason": self.reason}))


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
