"""Unit tests for tasks.sinks: atomic JSON Lines files, one per document."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.errors import DocumentRefusedError, OutputDirError
from tasks.models import Chunk
from tasks.sinks import JsonlFolderSink

RECORD_FIELDS = {
    "document_id",
    "index",
    "start",
    "end",
    "token_count",
    "sha256",
    "strategy",
    "fallback_reason",
    "text",
}


def _chunks(document_id: str, texts: list[str]) -> list[Chunk]:
    chunks = []
    start = 0
    for index, text in enumerate(texts):
        chunks.append(
            Chunk.build(
                document_id=document_id,
                index=index,
                text=text,
                start=start,
                strategy="recursive",
                token_count=len(text.split()),
            )
        )
        start += len(text)
    return chunks


class _BrokenChunk:
    """A chunk stand-in whose record cannot be made."""

    def to_record(self) -> dict[str, Any]:
        raise RuntimeError("record failed")


def _leftovers(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.name.endswith(".tmp"))


@pytest.fixture
def sink(tmp_path: Path) -> JsonlFolderSink:
    """A sink writing under a fresh output folder."""
    return JsonlFolderSink(output_dir=tmp_path / "out")


def test_writes_one_json_line_per_chunk(sink: JsonlFolderSink) -> None:
    """Each chunk becomes one JSON line with the documented fields, in order."""
    chunks = _chunks("a.md", ["first chunk", "Ça va 🎉", "line\nbreak"])

    written = sink.write("docs", "a.md", chunks)

    path = sink.output_dir / "docs" / "a.md.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert all(set(record) == RECORD_FIELDS for record in records)
    assert [record["text"] for record in records] == [c.text for c in chunks]
    assert [record["index"] for record in records] == [0, 1, 2]
    assert written.size_bytes == path.stat().st_size
    assert written.chunks == 3


def test_non_ascii_is_written_as_utf8(sink: JsonlFolderSink) -> None:
    """Text is stored as UTF-8 characters, not ASCII escapes."""
    sink.write("docs", "a.md", _chunks("a.md", ["日本語 🎉"]))

    raw = (sink.output_dir / "docs" / "a.md.jsonl").read_bytes()

    assert "日本語 🎉".encode() in raw


def test_read_returns_the_records(sink: JsonlFolderSink) -> None:
    """read gives back the records that write stored."""
    chunks = _chunks("a.md", ["one", "two"])
    sink.write("docs", "a.md", chunks)

    assert sink.read("docs", "a.md") == [chunk.to_record() for chunk in chunks]


def test_rewriting_replaces_the_file(sink: JsonlFolderSink) -> None:
    """Writing a document again leaves only the new chunks, one copy."""
    sink.write("docs", "a.md", _chunks("a.md", ["old one", "old two", "old three"]))
    sink.write("docs", "a.md", _chunks("a.md", ["new one", "new two"]))

    records = sink.read("docs", "a.md")

    assert [record["text"] for record in records] == ["new one", "new two"]


def test_zero_chunks_give_an_empty_file(sink: JsonlFolderSink) -> None:
    """A document with no chunks gets an empty file."""
    written = sink.write("docs", "empty.md", [])

    path = sink.output_dir / "docs" / "empty.md.jsonl"
    assert path.exists()
    assert path.read_bytes() == b""
    assert (written.chunks, written.size_bytes) == (0, 0)


def test_chunks_may_come_from_a_generator(sink: JsonlFolderSink) -> None:
    """Any iterable of chunks is accepted, consumed once."""

    def generate() -> Iterator[Chunk]:
        yield from _chunks("a.md", ["x", "y"])

    sink.write("docs", "a.md", generate())

    assert len(sink.read("docs", "a.md")) == 2


def test_no_temporary_file_left_after_success(sink: JsonlFolderSink) -> None:
    """After a successful write only the target file is in the folder."""
    sink.write("docs", "a.md", _chunks("a.md", ["one"]))
    sink.write("docs", "a.md", _chunks("a.md", ["two"]))

    folder = sink.output_dir / "docs"
    assert sorted(path.name for path in folder.iterdir()) == ["a.md.jsonl"]


def test_failing_chunk_keeps_previous_file(sink: JsonlFolderSink) -> None:
    """A chunk that fails midway leaves the previous file intact and no temp file."""
    sink.write("docs", "a.md", _chunks("a.md", ["kept one", "kept two"]))
    path = sink.output_dir / "docs" / "a.md.jsonl"
    before = path.read_bytes()
    broken: list[Any] = [*_chunks("a.md", ["new one"]), _BrokenChunk()]

    with pytest.raises(RuntimeError, match="record failed"):
        sink.write("docs", "a.md", broken)

    assert path.read_bytes() == before
    assert _leftovers(sink.output_dir) == []


def test_failing_fsync_keeps_previous_file(
    sink: JsonlFolderSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError on flush to disk leaves the previous file intact and no temp file."""
    sink.write("docs", "a.md", _chunks("a.md", ["kept"]))
    path = sink.output_dir / "docs" / "a.md.jsonl"
    before = path.read_bytes()

    def failing_fsync(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)

    with pytest.raises(OSError, match="No space left"):
        sink.write("docs", "a.md", _chunks("a.md", ["new", "chunks"]))

    assert path.read_bytes() == before
    assert _leftovers(sink.output_dir) == []


def test_failed_first_write_leaves_nothing(sink: JsonlFolderSink) -> None:
    """A failed write of a new document leaves neither a target nor a temp file."""
    with pytest.raises(RuntimeError):
        sink.write("docs", "new.md", [_BrokenChunk()])  # type: ignore[list-item]

    assert not (sink.output_dir / "docs" / "new.md.jsonl").exists()
    assert _leftovers(sink.output_dir) == []


def test_nested_document_ids_create_folders(sink: JsonlFolderSink) -> None:
    """A nested id gets its folders created under the collection folder."""
    sink.write("docs", "guide/part/intro.md", _chunks("guide/part/intro.md", ["x"]))

    path = sink.output_dir / "docs" / "guide" / "part" / "intro.md.jsonl"
    assert path.is_file()
    assert sink.path_for("docs", "guide/part/intro.md") == path


def test_collections_are_kept_apart(sink: JsonlFolderSink) -> None:
    """The same document id in two collections gives two files."""
    sink.write("one", "a.md", _chunks("a.md", ["from one"]))
    sink.write("two", "a.md", _chunks("a.md", ["from two"]))

    assert sink.read("one", "a.md")[0]["text"] == "from one"
    assert sink.read("two", "a.md")[0]["text"] == "from two"


def test_unsafe_document_id_is_refused(sink: JsonlFolderSink) -> None:
    """An id that would leave the output folder is refused before writing."""
    with pytest.raises(DocumentRefusedError):
        sink.write("docs", "../escape.md", [])

    assert not sink.output_dir.exists()


def test_fsync_off_skips_flushing_to_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With fsync off the file is written without any os.fsync call."""
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    sink = JsonlFolderSink(output_dir=tmp_path / "out", fsync=False)

    sink.write("docs", "a.md", _chunks("a.md", ["x"]))

    assert calls == []
    assert len(sink.read("docs", "a.md")) == 1


def test_fsync_on_flushes_file_and_folder(
    sink: JsonlFolderSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With fsync on (the default) both the file and its folder are flushed."""
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)

    sink.write("docs", "a.md", _chunks("a.md", ["x"]))

    assert len(calls) == 2


def test_prepare_refuses_a_file_in_place_of_the_output_folder(tmp_path: Path) -> None:
    """An output folder that is a file is refused with OutputDirError naming it."""
    (tmp_path / "afile").write_text("x")
    sink = JsonlFolderSink(output_dir=tmp_path / "afile")

    with pytest.raises(OutputDirError, match="afile"):
        sink.prepare("docs")


def test_prepare_creates_the_collection_folder(tmp_path: Path) -> None:
    """prepare makes the collection's folder when it is missing."""
    sink = JsonlFolderSink(output_dir=tmp_path / "new" / "out")

    sink.prepare("docs")

    assert (tmp_path / "new" / "out" / "docs").is_dir()


def test_sweep_removes_only_temporary_files_of_the_given_documents(
    tmp_path: Path,
) -> None:
    """Leftover temporary files of listed documents go; others and real files stay."""
    sink = JsonlFolderSink(output_dir=tmp_path)
    sink.write("docs", "a.md", _chunks("a.md", ["kept"]))
    folder = tmp_path / "docs"
    (folder / ".a.md.jsonl.x1y2.tmp").write_text("half")
    (folder / ".b.md.jsonl.z3.tmp").write_text("other")

    removed = sink.sweep("docs", ["a.md"])

    assert removed == 1
    assert (folder / "a.md.jsonl").exists()
    assert (folder / ".b.md.jsonl.z3.tmp").exists()
