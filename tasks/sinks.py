"""Where chunks go: one JSON Lines file per document under an output folder.

The file for document ``guide/intro.md`` of collection ``docs`` is
``{output_dir}/docs/guide/intro.md.jsonl``, one chunk per line, in order. It is written
atomically: the chunks go to a temporary file in the same folder, which is flushed to
disk (unless ``CHUNKQ_SINK_FSYNC`` is off) and then renamed over the target. A crash
never leaves half a file, and writing the same document again replaces its file
whole, so a redone batch leaves one copy.
A document with no chunks gets an empty file, which says it was processed.

Writing can be split in two: :meth:`JsonlFolderSink.stage` writes the temporary
file, :meth:`JsonlFolderSink.commit` renames it into place. The pipeline stages a whole
batch, checks that its attempt still holds the operation (its epoch is current), and
only then commits, so a superseded worker cannot replace newer files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import OutputDirError
from tasks.models import Chunk
from tasks.sources import check_document_id

SUFFIX = ".jsonl"


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()
"""Mode of chunk files: what ``open`` would give under the umask at import time
(temporary files are created owner-only, and the rename would keep that)."""


@dataclass(frozen=True, slots=True)
class Written:
    """What one write put on disk."""

    chunks: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Staged:
    """Chunks written to a temporary file, not yet in place."""

    temporary: Path
    target: Path
    written: Written


class JsonlFolderSink:
    """Writes each document's chunks to its own JSON Lines file."""

    def __init__(self, *, output_dir: Path, fsync: bool = True) -> None:
        """``fsync`` flushes each file and its folder to disk (``CHUNKQ_SINK_FSYNC``)."""
        self.output_dir = output_dir
        self._fsync = fsync

    def path_for(self, collection_id: str, document_id: str) -> Path:
        """Return the file that holds the document's chunks."""
        check_document_id(document_id)
        return self.output_dir / collection_id / f"{document_id}{SUFFIX}"

    def prepare(self, collection_id: str) -> None:
        """Make sure the collection's folder exists and can be written.

        Raises:
            OutputDirError: it cannot be created, is not a folder, or is read-only.
        """
        folder = self.output_dir / collection_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputDirError(
                path=str(folder), reason=error.strerror or str(error)
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputDirError(path=str(folder), reason="it is not writable")

    def write(
        self, collection_id: str, document_id: str, chunks: Iterable[Chunk]
    ) -> Written:
        """Replace the document's chunk file atomically; return what was written.

        ``chunks`` is consumed once, as it is written.

        Raises:
            OSError: the output folder cannot be created or written (disk full,
                permissions); the previous file, if any, is left as it was.
        """
        staged = self.stage(collection_id, document_id, chunks)
        self.commit(staged)
        return staged.written

    def stage(
        self, collection_id: str, document_id: str, chunks: Iterable[Chunk]
    ) -> Staged:
        """Write the chunks to a temporary file beside the target; nothing is replaced.

        Raises:
            OSError: as :meth:`write`; no temporary file is left behind.
        """
        target = self.path_for(collection_id, document_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed, not closed by with
            mode="w",
            encoding="utf-8",
            dir=target.parent,
            prefix=f".{target.name}.",
            suffix=".tmp",
            delete=False,
        )
        try:
            count = 0
            with handle:
                for chunk in chunks:
                    count += 1
                    handle.write(json.dumps(chunk.to_record(), ensure_ascii=False))
                    handle.write("\n")
                os.fchmod(handle.fileno(), FILE_MODE)
                handle.flush()
                if self._fsync:
                    os.fsync(handle.fileno())
                size_bytes = os.fstat(handle.fileno()).st_size
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
        return Staged(
            Path(handle.name), target, Written(chunks=count, size_bytes=size_bytes)
        )

    def commit(self, staged: Staged) -> None:
        """Put a staged file in place of the document's file, atomically."""
        staged.temporary.replace(staged.target)
        if self._fsync:
            _fsync_folder(staged.target.parent)

    def discard(self, staged: Staged) -> None:
        """Drop a staged file (gone already when committed); the document's file stays."""
        staged.temporary.unlink(missing_ok=True)

    def sweep(self, collection_id: str, document_ids: list[str]) -> int:
        """Remove temporary files left by a killed writer for these documents.

        One walk of the collection's folder; only temporary files named after the given
        documents are removed. Returns how many.
        """
        folder = self.output_dir / collection_id
        wanted = {self.path_for(collection_id, doc).name for doc in document_ids}
        removed = 0
        for directory, _, names in os.walk(folder):
            for name in names:
                if not (name.startswith(".") and name.endswith(".tmp")):
                    continue
                target, _, _ = name[1 : -len(".tmp")].rpartition(".")
                if target in wanted:
                    Path(directory, name).unlink(missing_ok=True)
                    removed += 1
        return removed

    def delete(self, collection_id: str, document_id: str) -> bool:
        """Remove the document's chunk file; return whether there was one."""
        path = self.path_for(collection_id, document_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def read(self, collection_id: str, document_id: str) -> list[dict[str, object]]:
        """Return the chunk records written for the document (for checks and tools)."""
        path = self.path_for(collection_id, document_id)
        with path.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines]


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
