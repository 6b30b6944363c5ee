"""Where documents come from: a folder on disk, confined to its root.

A document id is the document's path relative to the source root, with ``/`` as the
separator (``guide/intro.md``). An id that could escape the root is refused: an
absolute path, a ``..`` part, a NUL or backslash, or a symbolic link whose target lies
outside the root. Symbolic links to folders are not followed when listing.

A file name that is not valid UTF-8 reaches Python with its bad bytes as surrogate
escapes (``caf\\udce9.txt``). Such an id is listed as it is, so the job can record it,
and refused when read: the error carries :func:`printable_id` of it (``caf\\xe9.txt``),
which holds no surrogates and so can be stored as UTF-8 in Redis and JSON.

A folder that cannot be listed is not skipped silently: its id is listed like a file's,
and reading it raises :class:`DocumentUnreadableError` saying why it cannot be listed.
Folders named in ``skip_dirs`` (the job's output folder, say) are never listed.

Reading decodes UTF-8 strictly. A file holding a NUL byte in its first 8 KiB is taken
for binary and refused with that reason; a file that vanished, or is not valid UTF-8,
is refused with the position of the first bad byte. A byte-order mark is removed.
"""

from __future__ import annotations

import codecs
import fnmatch
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from tasks.errors import DocumentRefusedError, DocumentUnreadableError, SourceRootError

BINARY_SNIFF_BYTES = 8192

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable_id(document_id: str) -> str:
    """Return ``document_id`` with each surrogate written out as escape text.

    A surrogate escape of a byte that is not valid UTF-8 (U+DC80 to U+DCFF) becomes
    ``\\xNN``, the byte in hex; any other surrogate becomes ``\\uNNNN``. The result
    can be encoded as UTF-8. It never equals a readable id, because those hold no
    backslash. An id without surrogates is returned unchanged.
    """
    return _SURROGATE.sub(_escape_surrogate, document_id)


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def check_document_id(document_id: str) -> str:
    """Return ``document_id`` when its form is safe; the file system is not consulted.

    Raises:
        DocumentRefusedError: the id is empty, absolute, holds ``..``, a NUL or a
            backslash, or is not in normal form (``a//b``, ``./a``); or it holds
            surrogates, because the file's name is not valid UTF-8 (the error's
            ``document_id`` is then :func:`printable_id` of the id).
    """
    if _SURROGATE.search(document_id):
        raise DocumentRefusedError(
            document_id=printable_id(document_id),
            reason="its name is not valid UTF-8",
        )
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
        skip_dirs: Iterable[Path] = (),
    ) -> None:
        """Open the folder ``root``.

        ``include`` and ``exclude`` are shell-style patterns (``*.md``,
        ``site-packages/*``) matched against each id and each of its parts; a file is
        listed when it matches an include pattern and no exclude pattern. Hidden files
        and folders (names starting with ``.``) and ``__pycache__`` are never listed.
        Nothing in the folders ``skip_dirs`` is listed; they are compared with the
        listed folders as resolved paths, and need not exist.

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
        self._skip_dirs = frozenset(folder.resolve() for folder in skip_dirs)

    def list_ids(self) -> list[str]:
        """Return the ids of every listed regular file, sorted.

        A folder that cannot be listed is given as an id too, unless an exclude
        pattern matches it (include patterns select files, so they do not apply to it);
        reading it raises :class:`DocumentUnreadableError`.

        Raises:
            SourceRootError: the root itself cannot be listed.
        """
        if self.root in self._skip_dirs:
            return []
        ids = []
        unlisted: list[OSError] = []
        for folder, dirnames, filenames in os.walk(
            self.root, onerror=unlisted.append, followlinks=False
        ):
            dirnames[:] = [name for name in dirnames if self._descends(folder, name)]
            relative_folder = Path(folder).relative_to(self.root)
            for name in filenames:
                document_id = (relative_folder / name).as_posix()
                if _visible(name) and self._selected(document_id):
                    ids.append(document_id)
        ids.extend(self._unlisted_ids(unlisted))
        return sorted(ids)

    def _descends(self, folder: str, name: str) -> bool:
        # os.walk neither follows links nor leaves the resolved root, so the joined
        # path is already resolved.
        return _visible(name) and Path(folder, name) not in self._skip_dirs

    def _unlisted_ids(self, errors: list[OSError]) -> list[str]:
        ids = []
        for error in errors:
            folder = Path(os.fsdecode(error.filename))
            if folder == self.root:
                raise SourceRootError(
                    root=printable_id(str(self.root)),
                    reason=f"it cannot be listed: {_strerror(error)}",
                )
            document_id = folder.relative_to(self.root).as_posix()
            if not _matches(document_id, self._exclude):
                ids.append(document_id)
        return ids

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
                document_id=document_id,
                reason=printable_id(f"it cannot be resolved: {error}"),
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
            DocumentUnreadableError: the document is missing, a folder (one that
                can be listed or not), not a regular file otherwise, unreadable,
                binary, or not valid UTF-8.
        """
        path = self.path_of(document_id)
        if not path.is_file():
            raise DocumentUnreadableError(
                document_id=document_id, reason=_not_a_file_reason(path)
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


def _not_a_file_reason(path: Path) -> str:
    if not path.is_dir():
        return "it is not a regular file"
    try:
        with os.scandir(path):
            pass
    except OSError as error:
        return f"it is a folder that cannot be listed: {_strerror(error)}"
    return "it is a folder, not a file"


def _strerror(error: OSError) -> str:
    return printable_id(error.strerror or str(error))


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
