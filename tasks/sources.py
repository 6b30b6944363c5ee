"""Where documents come from: a folder on disk, confined to its root.

A document id is the document's path relative to the source root, with ``/`` as the
separator (``guide/intro.md``). An id that could escape the root is refused: an
absolute path, a ``..`` part, a NUL or backslash, or a symbolic link whose target lies
outside the root. Symbolic links to folders are not followed when listing.

Reading decodes UTF-8 strictly. A file holding a NUL byte in its first 8 KiB is taken
for binary and refused with that reason; a file that vanished, or is not valid UTF-8,
is refused with the position of the first bad byte. A byte-order mark is removed.
"""

from __future__ import annotations

import codecs
import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from tasks.errors import DocumentRefusedError, DocumentUnreadableError, SourceRootError

BINARY_SNIFF_BYTES = 8192


def check_document_id(document_id: str) -> str:
    """Return ``document_id`` when its form is safe; the file system is not consulted.

    Raises:
        DocumentRefusedError: the id is empty, absolute, holds ``..``, a NUL or a
            backslash, or is not in normal form (``a//b``, ``./a``).
    """
    reason = _id_form_problem(document_id)
    if reason:
        raise DocumentRefusedError(document_id=document_id, reason=reason)
    return document_id


def _id_form_problem(document_id: str) -> str | None:
    if not document_id:
        return "the id is empty"
    if "\x00" in document_id or "\\" in document_id:
        return "the id holds a NUL or a backslash"
    path = PurePosixPath(document_id)
    if path.is_absolute():
        return "the id is an absolute path; ids are relative to the source root"
    if ".." in path.parts:
        return "the id holds '..' and would leave the source root"
    if str(path) != document_id or "." in path.parts or document_id == ".":
        return "the id is not in normal form (no '.', '//' or trailing '/')"
    return None


class FolderSource:
    """Documents under one folder; ids are their paths relative to it."""

    def __init__(
        self,
        *,
        root: Path,
        include: Iterable[str] = ("*",),
        exclude: Iterable[str] = (),
    ) -> None:
        """Open the folder ``root``.

        ``include`` and ``exclude`` are shell-style patterns (``*.md``,
        ``site-packages/*``) matched against each id and each of its parts; a file is
        listed when it matches an include pattern and no exclude pattern. Hidden files
        and folders (names starting with ``.``) and ``__pycache__`` are never listed.

        Raises:
            SourceRootError: ``root`` does not exist or is not a folder.
        """
        if not root.exists():
            raise SourceRootError(root=str(root), reason="it does not exist")
        if not root.is_dir():
            raise SourceRootError(root=str(root), reason="it is not a folder")
        self.root = root.resolve()
        self._include = tuple(include)
        self._exclude = tuple(exclude)

    def list_ids(self) -> list[str]:
        """Return the ids of every listed regular file, sorted."""
        ids = []
        for folder, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = [name for name in dirnames if _visible(name)]
            relative_folder = Path(folder).relative_to(self.root)
            for name in filenames:
                document_id = (relative_folder / name).as_posix()
                if _visible(name) and self._selected(document_id):
                    ids.append(document_id)
        return sorted(ids)

    def path_of(self, document_id: str) -> Path:
        """Return the real path of the document, proven to lie inside the root.

        Raises:
            DocumentRefusedError: the id's form is unsafe, or it resolves outside
                the root (through a symbolic link).
            DocumentUnreadableError: the document does not exist.
        """
        check_document_id(document_id)
        candidate = self.root / document_id
        try:
            real = candidate.resolve(strict=True)
        except FileNotFoundError:
            raise DocumentUnreadableError(
                document_id=document_id, reason="it does not exist (or vanished)"
            ) from None
        except (OSError, RuntimeError) as error:
            raise DocumentUnreadableError(
                document_id=document_id, reason=f"it cannot be resolved: {error}"
            ) from None
        if not real.is_relative_to(self.root):
            raise DocumentRefusedError(
                document_id=document_id,
                reason="it is a link to a place outside the source root",
            )
        return real

    def read_text(self, document_id: str) -> str:
        """Return the document's text, decoded from UTF-8.

        Raises:
            DocumentRefusedError: see :meth:`path_of`.
            DocumentUnreadableError: the document is missing, not a regular file,
                unreadable, binary, or not valid UTF-8.
        """
        path = self.path_of(document_id)
        if not path.is_file():
            raise DocumentUnreadableError(
                document_id=document_id, reason="it is not a regular file"
            )
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DocumentUnreadableError(
                document_id=document_id, reason=f"it cannot be read: {error.strerror}"
            ) from None
        return _decode(document_id, data)

    def _selected(self, document_id: str) -> bool:
        return _matches(document_id, self._include) and not _matches(
            document_id, self._exclude
        )


def _decode(document_id: str, data: bytes) -> str:
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise DocumentUnreadableError(
            document_id=document_id, reason="it is binary (holds NUL bytes)"
        )
    bom_bytes = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom_bytes:].decode("utf-8")
    except UnicodeDecodeError as error:
        position = error.start + bom_bytes
        raise DocumentUnreadableError(
            document_id=document_id,
            reason=f"it is not valid UTF-8 (byte {position}: {error.reason})",
        ) from None


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__pycache__"


def _matches(document_id: str, patterns: tuple[str, ...]) -> bool:
    parts = PurePosixPath(document_id).parts
    return any(
        fnmatch.fnmatchcase(document_id, pattern)
        or any(fnmatch.fnmatchcase(part, pattern) for part in parts)
        for pattern in patterns
    )
