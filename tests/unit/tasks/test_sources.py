"""Unit tests for tasks.sources: document ids, folder listing, confinement, reading."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tasks import sources
from tasks.errors import (
    DocumentError,
    DocumentRefusedError,
    DocumentUnreadableError,
    SourceRootError,
)
from tasks.sources import (
    BINARY_SNIFF_BYTES,
    FolderSource,
    check_document_id,
    printable_id,
)

NOBODY_ID = 65534
"""User and group id a forked child drops to, so folder permissions apply to it."""


def _write(root: Path, document_id: str, content: str | bytes = "text") -> Path:
    path = root / document_id
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A source folder inside its own tmp folder, so links can point outside it."""
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    ("document_id", "reason_part"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("..", "'..'"),
        ("../secret.txt", "'..'"),
        ("a/../../b", "'..'"),
        ("a\x00b", "NUL"),
        ("a\\b", "backslash"),
        ("./a", "normal form"),
        ("a//b", "normal form"),
        ("a/", "normal form"),
        ("a/./b", "normal form"),
    ],
)
def test_check_document_id_refuses_unsafe_forms(
    document_id: str, reason_part: str
) -> None:
    """Unsafe ids are refused with DocumentRefusedError naming the id and the reason."""
    with pytest.raises(DocumentRefusedError) as caught:
        check_document_id(document_id)

    assert caught.value.document_id == document_id
    assert reason_part in caught.value.reason
    assert repr(document_id) in str(caught.value)


def test_check_document_id_refuses_a_lone_dot() -> None:
    """The id '.' names the root folder, not a document, and is refused."""
    with pytest.raises(DocumentRefusedError):
        check_document_id(".")


@pytest.mark.parametrize(
    "document_id",
    ["a", "a.md", "guide/intro.md", "a b/c d.txt", "日本/テキスト.md", ".env"],
)
def test_check_document_id_accepts_normal_relative_ids(document_id: str) -> None:
    """Normal relative ids, spaces and non-ASCII names included, are returned as is."""
    assert check_document_id(document_id) == document_id


def test_list_ids_sorted_with_nested_folders(root: Path) -> None:
    """Listing gives every file's relative id with '/', sorted."""
    for document_id in [
        "b.txt",
        "a.md",
        "z/y.md",
        "guide/intro.md",
        "guide/a/deep.txt",
    ]:
        _write(root, document_id)

    ids = FolderSource(root=root).list_ids()

    assert ids == ["a.md", "b.txt", "guide/a/deep.txt", "guide/intro.md", "z/y.md"]


def test_list_ids_skips_hidden_and_pycache(root: Path) -> None:
    """Hidden files, hidden folders and __pycache__ are never listed."""
    for document_id in [
        "keep.md",
        ".hidden.md",
        ".git/config",
        "sub/.secret",
        "sub/ok.md",
        "__pycache__/mod.cpython-311.pyc",
        "pkg/__pycache__/x.pyc",
    ]:
        _write(root, document_id)

    ids = FolderSource(root=root, include=("*",)).list_ids()

    assert ids == ["keep.md", "sub/ok.md"]


def test_list_ids_include_patterns(root: Path) -> None:
    """Only files matching an include pattern are listed."""
    for document_id in ["a.md", "b.txt", "docs/c.md", "docs/d.rst"]:
        _write(root, document_id)

    source = FolderSource(root=root, include=("*.md", "*.rst"))

    assert source.list_ids() == ["a.md", "docs/c.md", "docs/d.rst"]


def test_list_ids_exclude_patterns_match_ids_and_parts(root: Path) -> None:
    """An exclude pattern removes files by whole id or by any part of the id."""
    for document_id in ["a.md", "vendor/lib.md", "docs/draft.md", "docs/final.md"]:
        _write(root, document_id)

    source = FolderSource(
        root=root, include=("*.md",), exclude=("vendor", "docs/draft*")
    )

    assert source.list_ids() == ["a.md", "docs/final.md"]


def test_symlink_to_outside_file_is_refused(root: Path, tmp_path: Path) -> None:
    """A link to a file outside the root is refused by path_of and read_text."""
    outside = _write(tmp_path, "outside.txt", "secret")
    (root / "link.txt").symlink_to(outside)
    source = FolderSource(root=root)

    with pytest.raises(DocumentRefusedError, match="outside the source root") as caught:
        source.path_of("link.txt")
    with pytest.raises(DocumentRefusedError):
        source.read_text("link.txt")

    assert caught.value.document_id == "link.txt"


def test_symlink_inside_root_is_allowed(root: Path) -> None:
    """A link to a file inside the root reads as the file it points to."""
    target = _write(root, "real/target.md", "inside")
    (root / "alias.md").symlink_to(target)
    source = FolderSource(root=root)

    assert source.path_of("alias.md") == target.resolve()
    assert source.read_text("alias.md") == "inside"


def test_symlinked_folder_is_not_followed_when_listing(
    root: Path, tmp_path: Path
) -> None:
    """Files under a linked folder are not listed, inside or outside the root."""
    _write(root, "real/a.md")
    _write(tmp_path, "elsewhere/b.md")
    (root / "inner_link").symlink_to(root / "real", target_is_directory=True)
    (root / "outer_link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    ids = FolderSource(root=root).list_ids()

    assert ids == ["real/a.md"]


def test_path_through_outside_folder_link_is_refused(
    root: Path, tmp_path: Path
) -> None:
    """An id that passes through a link to an outside folder is refused."""
    _write(tmp_path, "elsewhere/b.md")
    (root / "outer_link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    with pytest.raises(DocumentRefusedError):
        FolderSource(root=root).read_text("outer_link/b.md")


def test_path_of_refuses_unsafe_id(root: Path) -> None:
    """path_of checks the id's form before touching the file system."""
    with pytest.raises(DocumentRefusedError):
        FolderSource(root=root).path_of("../root/a.md")


def test_read_text_returns_utf8_text(root: Path) -> None:
    """A UTF-8 file is read back exactly, multi-byte characters included."""
    text = "Ça va? 日本語 🎉\nline two\r\n"
    _write(root, "a.md", text.encode())

    assert FolderSource(root=root).read_text("a.md") == text


def test_read_text_removes_bom(root: Path) -> None:
    """A leading UTF-8 byte-order mark is removed."""
    _write(root, "bom.md", b"\xef\xbb\xbfhello")

    assert FolderSource(root=root).read_text("bom.md") == "hello"


def test_read_text_refuses_binary(root: Path) -> None:
    """A file with a NUL byte early on is refused as binary."""
    _write(root, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")

    with pytest.raises(DocumentUnreadableError, match="binary") as caught:
        FolderSource(root=root).read_text("image.png")

    assert caught.value.document_id == "image.png"


def test_nul_after_sniff_window_is_not_taken_for_binary(root: Path) -> None:
    """Only the first 8 KiB are sniffed for NUL bytes, as documented."""
    _write(root, "late.txt", b"a" * BINARY_SNIFF_BYTES + b"\x00")

    assert FolderSource(root=root).read_text("late.txt").endswith("\x00")


def test_read_text_refuses_invalid_utf8_naming_the_byte(root: Path) -> None:
    """Invalid UTF-8 is refused with the position of the first bad byte."""
    _write(root, "latin1.txt", b"caf\xe9 au lait")

    with pytest.raises(DocumentUnreadableError, match="UTF-8") as caught:
        FolderSource(root=root).read_text("latin1.txt")

    assert "byte 3" in caught.value.reason


def test_invalid_utf8_position_counts_the_bom(root: Path) -> None:
    """With a BOM the bad byte's position is still counted from the file's start."""
    _write(root, "bom_bad.txt", b"\xef\xbb\xbfab\xff")

    with pytest.raises(DocumentUnreadableError) as caught:
        FolderSource(root=root).read_text("bom_bad.txt")

    assert "byte 5" in caught.value.reason


def test_read_text_missing_file(root: Path) -> None:
    """A listed file that vanished before reading is unreadable, not a crash."""
    path = _write(root, "gone.md")
    source = FolderSource(root=root)
    assert source.list_ids() == ["gone.md"]
    path.unlink()

    with pytest.raises(DocumentUnreadableError, match="does not exist") as caught:
        source.read_text("gone.md")

    assert caught.value.document_id == "gone.md"


def test_read_text_file_vanishing_after_resolve(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that vanishes between resolving and reading is unreadable."""
    _write(root, "race.md")

    def vanished(self: Path) -> bytes:
        raise FileNotFoundError(2, "No such file or directory", str(self))

    monkeypatch.setattr(Path, "read_bytes", vanished)

    with pytest.raises(DocumentUnreadableError, match="cannot be read"):
        FolderSource(root=root).read_text("race.md")


def test_read_text_broken_link(root: Path) -> None:
    """A dangling link is unreadable as a missing document."""
    (root / "dangling.md").symlink_to(root / "nowhere.md")

    with pytest.raises(DocumentUnreadableError, match="does not exist"):
        FolderSource(root=root).read_text("dangling.md")


def test_read_text_refuses_a_folder(root: Path) -> None:
    """A folder given as a document id is refused as a folder, not a file."""
    (root / "sub").mkdir()

    with pytest.raises(DocumentUnreadableError) as caught:
        FolderSource(root=root).read_text("sub")

    assert caught.value.document_id == "sub"
    assert caught.value.reason == "it is a folder, not a file"


def test_read_text_refuses_a_fifo_as_not_a_regular_file(root: Path) -> None:
    """A named pipe is neither a file nor a folder, and is refused without opening it."""
    os.mkfifo(root / "pipe")

    with pytest.raises(DocumentUnreadableError) as caught:
        FolderSource(root=root).read_text("pipe")

    assert caught.value.reason == "it is not a regular file"


def test_missing_root_is_refused(tmp_path: Path) -> None:
    """A root that does not exist raises SourceRootError naming it."""
    missing = tmp_path / "missing"

    with pytest.raises(SourceRootError, match="does not exist") as caught:
        FolderSource(root=missing)

    assert caught.value.root == str(missing)


def test_file_root_is_refused(tmp_path: Path) -> None:
    """A root that is a file raises SourceRootError."""
    file_root = _write(tmp_path, "file.txt")

    with pytest.raises(SourceRootError, match="not a folder"):
        FolderSource(root=file_root)


def test_root_is_resolved(root: Path, tmp_path: Path) -> None:
    """A root given through a link is resolved, so confinement uses the real path."""
    link = tmp_path / "root_link"
    link.symlink_to(root, target_is_directory=True)
    _write(root, "a.md", "x")

    source = FolderSource(root=link)

    assert source.root == root.resolve()
    assert source.read_text("a.md") == "x"


# Names that are not valid UTF-8 (surrogate escapes).


@pytest.mark.parametrize(
    ("document_id", "printable"),
    [
        ("caf\udce9.txt", "caf\\xe9.txt"),
        ("dir\udcff/a\udc80b", "dir\\xff/a\\x80b"),
        ("lone\ud800", "lone\\ud800"),
        ("plain/ok.md", "plain/ok.md"),
        ("日本/テキスト.md", "日本/テキスト.md"),
    ],
)
def test_printable_id_writes_surrogates_as_escape_text(
    document_id: str, printable: str
) -> None:
    """printable_id writes escaped bytes as \\xNN, other surrogates as \\uNNNN."""
    assert printable_id(document_id) == printable
    assert printable_id(document_id).encode("utf-8").decode("utf-8") == printable


def test_check_document_id_refuses_surrogates_with_a_printable_id() -> None:
    """An id with surrogates is refused; the error holds no surrogate anywhere."""
    with pytest.raises(DocumentRefusedError) as caught:
        check_document_id("caf\udce9.txt")

    error = caught.value
    assert error.document_id == "caf\\xe9.txt"
    assert error.reason == "its name is not valid UTF-8"
    record = {"id": error.document_id, "reason": error.reason, "message": str(error)}
    json.dumps(record, ensure_ascii=False).encode("utf-8")


def test_file_with_non_utf8_name_is_listed_then_refused_on_read(root: Path) -> None:
    """A non-UTF-8 file name is listed raw and refused on read with a printable id."""
    (root / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"text")
    _write(root, "ok.md")
    source = FolderSource(root=root)

    ids = source.list_ids()

    assert ids == ["caf\udce9.txt", "ok.md"]
    for read in (source.path_of, source.read_text):
        with pytest.raises(DocumentRefusedError) as caught:
            read("caf\udce9.txt")
        assert caught.value.document_id == "caf\\xe9.txt"
        assert "not valid UTF-8" in caught.value.reason
        str(caught.value).encode("utf-8")


# Folders that cannot be listed.


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A source folder any user can enter, for a child process that drops root."""
    folder = Path(tempfile.mkdtemp(prefix="chunkq-sources-"))
    folder.chmod(0o755)
    yield folder
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(stat.S_IRWXU)
    shutil.rmtree(folder)


def _unprivileged(work: Callable[[], object]) -> object:
    """Return ``work()``, run as user nobody in a forked child when this is root.

    Root reads every folder whatever its mode, so a folder cannot be made unlistable
    for root without privileges this test should not use; a child that gives up root
    meets the folder's mode for real. Exceptions come back as a string.
    """
    if os.geteuid() != 0:
        return work()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(reader)
        try:
            os.setgroups([])
            os.setgid(NOBODY_ID)
            os.setuid(NOBODY_ID)
            outcome: object = work()
        except BaseException as error:  # reported to the parent as text
            outcome = f"{type(error).__name__}: {error}"
        with os.fdopen(writer, "wb") as output:
            pickle.dump(outcome, output)
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as incoming:
        outcome = pickle.load(incoming)  # our own child wrote it
    os.waitpid(child, 0)
    return outcome


def _list_then_read(source: FolderSource, document_id: str) -> object:
    ids = source.list_ids()
    try:
        source.read_text(document_id)
    except DocumentError as error:
        return ids, type(error).__name__, error.document_id, error.reason
    return ids, None, None, None


def test_unlistable_folder_is_listed_and_unreadable(open_root: Path) -> None:
    """A folder without read permission is listed as an id; reading it says why."""
    _write(open_root, "a.md")
    _write(open_root, "locked/inside.md")
    (open_root / "locked").chmod(0)
    source = FolderSource(root=open_root)

    outcome = _unprivileged(lambda: _list_then_read(source, "locked"))

    assert outcome == (
        ["a.md", "locked"],
        "DocumentUnreadableError",
        "locked",
        "it is a folder that cannot be listed: Permission denied",
    )


def test_unlistable_folder_matching_an_exclude_pattern_is_not_listed(
    open_root: Path,
) -> None:
    """An exclude pattern removes an unlistable folder as it removes files."""
    _write(open_root, "a.md")
    _write(open_root, "vendor/inside.md")
    (open_root / "vendor").chmod(0)
    source = FolderSource(root=open_root, include=("*.md",), exclude=("vendor",))

    assert _unprivileged(source.list_ids) == ["a.md"]


def test_folder_removed_while_listing_is_listed_from_the_real_error(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that vanishes before os.walk enters it is listed, not lost silently."""
    # Given a folder removed just after os.walk has seen it in its parent, so that
    # os.walk's own scandir of it fails with a real FileNotFoundError
    _write(root, "a.md")
    (root / "gone").mkdir()
    visible = sources._visible

    def remove_gone(name: str) -> bool:
        if name == "gone":
            (root / "gone").rmdir()
        return visible(name)

    monkeypatch.setattr(sources, "_visible", remove_gone)
    source = FolderSource(root=root)

    # When the folder is listed and read
    ids = source.list_ids()

    # Then it is an id, and reading it reports it missing
    assert ids == ["a.md", "gone"]
    with pytest.raises(DocumentUnreadableError, match="does not exist"):
        source.read_text("gone")


def test_root_that_cannot_be_listed_raises_source_root_error(root: Path) -> None:
    """A root that vanished after opening raises SourceRootError when listed."""
    source = FolderSource(root=root)
    root.rmdir()

    with pytest.raises(SourceRootError, match="cannot be listed: No such file"):
        source.list_ids()


# Folders skipped on purpose.


def test_skip_dirs_are_never_listed(root: Path) -> None:
    """Files under a skipped folder are not listed, at any depth."""
    for document_id in ["a.md", "out/a.jsonl", "out/deep/b.jsonl", "docs/c.md"]:
        _write(root, document_id)

    source = FolderSource(root=root, skip_dirs=(root / "out",))

    assert source.list_ids() == ["a.md", "docs/c.md"]


def test_skip_dirs_compare_resolved_paths(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A skipped folder given relatively or through a link still matches."""
    _write(root, "a.md")
    _write(root, "out/chunks.jsonl")
    _write(root, "nested/out/chunks.jsonl")
    link = tmp_path / "root_link"
    link.symlink_to(root, target_is_directory=True)
    monkeypatch.chdir(root)

    relative = FolderSource(root=link, skip_dirs=(Path("out"),))
    linked = FolderSource(root=root, skip_dirs=(link / "nested" / "out",))

    assert relative.list_ids() == ["a.md", "nested/out/chunks.jsonl"]
    assert linked.list_ids() == ["a.md", "out/chunks.jsonl"]


def test_skip_dirs_that_do_not_exist_change_nothing(root: Path) -> None:
    """A skipped folder that does not exist yet is allowed and changes nothing."""
    _write(root, "a.md")

    source = FolderSource(root=root, skip_dirs=(root / "not-yet",))

    assert source.list_ids() == ["a.md"]


def test_skipping_the_root_lists_nothing(root: Path) -> None:
    """When the root itself is skipped, nothing is listed."""
    _write(root, "a.md")

    assert FolderSource(root=root, skip_dirs=(root,)).list_ids() == []
