"""Unit tests for tasks.sources: document ids, folder listing, confinement, reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import DocumentRefusedError, DocumentUnreadableError, SourceRootError
from tasks.sources import BINARY_SNIFF_BYTES, FolderSource, check_document_id


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
    """A folder given as a document id is not a regular file."""
    (root / "sub").mkdir()

    with pytest.raises(DocumentUnreadableError, match="not a regular file") as caught:
        FolderSource(root=root).read_text("sub")

    assert caught.value.document_id == "sub"


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
