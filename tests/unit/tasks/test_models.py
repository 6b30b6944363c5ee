"""Unit tests for tasks.models: ChunkRequest validation and parsing, Chunk building."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tasks.engine import ChunkSpec, Strategy
from tasks.errors import InvalidRequestError
from tasks.models import MAX_CHUNK_SIZE, Chunk, ChunkRequest


def _parse(**fields: Any) -> ChunkRequest:
    return ChunkRequest.parse({"source_root": "/data/docs", **fields})


def test_defaults() -> None:
    """A request with only a source root gets the documented defaults."""
    request = _parse()

    assert re.fullmatch(r"[0-9a-f]{32}", request.operation_id)
    assert request.collection_id == "default"
    assert request.document_ids is None
    assert request.include == ("*",)
    assert request.exclude == ()
    assert request.strategy == Strategy.RECURSIVE
    assert (request.chunk_size, request.overlap) == (1000, 200)
    assert request.output_dir is None
    assert request.spec == ChunkSpec(Strategy.RECURSIVE, 1000, 200)


def test_each_request_gets_its_own_operation_id() -> None:
    """Two requests without an operation id get different generated ids."""
    assert _parse().operation_id != _parse().operation_id


@pytest.mark.parametrize("field", ["operation_id", "collection_id"])
@pytest.mark.parametrize(
    "value", ["has space", "a:b", "a/b", "x" * 65, "", "-lead", "*", "é"]
)
def test_unsafe_ids_are_refused_naming_the_field(field: str, value: str) -> None:
    """Unsafe operation and collection ids raise InvalidRequestError naming them."""
    with pytest.raises(InvalidRequestError) as caught:
        _parse(**{field: value})

    assert field in str(caught.value)
    assert any(problem.startswith(field) for problem in caught.value.errors)


@pytest.mark.parametrize("field", ["operation_id", "collection_id"])
def test_safe_ids_are_kept(field: str) -> None:
    """Ids of letters, digits, '.', '_' and '-' up to 64 characters are accepted."""
    value = "Op_1.2-" + "x" * 57

    assert getattr(_parse(**{field: value}), field) == value


@pytest.mark.parametrize(("chunk_size", "overlap"), [(100, 100), (100, 150), (1, 1)])
def test_overlap_not_below_chunk_size_is_refused(chunk_size: int, overlap: int) -> None:
    """An overlap at or above chunk_size is refused."""
    with pytest.raises(InvalidRequestError, match="overlap"):
        _parse(chunk_size=chunk_size, overlap=overlap)


@pytest.mark.parametrize(
    ("field", "value"),
    [("chunk_size", 0), ("chunk_size", MAX_CHUNK_SIZE + 1), ("overlap", -1)],
)
def test_sizes_out_of_range_are_refused(field: str, value: int) -> None:
    """chunk_size must be 1 to MAX_CHUNK_SIZE and overlap at least 0."""
    with pytest.raises(InvalidRequestError, match=field):
        _parse(**{field: value, **({"overlap": 0} if field == "chunk_size" else {})})


def test_unknown_field_is_refused() -> None:
    """A field the request does not have is refused, naming it."""
    with pytest.raises(InvalidRequestError, match="chunk_sise") as caught:
        _parse(chunk_sise=10)

    assert caught.value.errors[0].startswith("chunk_sise")


def test_unknown_strategy_is_refused() -> None:
    """A strategy outside the four is refused."""
    with pytest.raises(InvalidRequestError, match="strategy"):
        _parse(strategy="sentences")


def test_relative_paths_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative source_root and output_dir are resolved against the working folder."""
    monkeypatch.chdir(tmp_path)

    request = ChunkRequest.parse({"source_root": "docs", "output_dir": "out/chunks"})

    assert request.source_root == tmp_path / "docs"
    assert request.output_dir == tmp_path / "out" / "chunks"
    assert request.source_root.is_absolute()


def test_absolute_paths_are_kept() -> None:
    """An absolute source_root is kept as given."""
    assert _parse().source_root == Path("/data/docs")


@pytest.mark.parametrize(
    "document_ids",
    [["../etc/passwd"], ["a/../../b"], ["/abs"], ["a//b"], ["a.md", "a.md"]],
)
def test_unsafe_or_repeated_document_ids_are_refused(document_ids: list[str]) -> None:
    """document_ids holding an unsafe id or the same id twice are refused."""
    with pytest.raises(InvalidRequestError, match="document_ids"):
        _parse(document_ids=document_ids)


def test_document_ids_are_kept_in_order() -> None:
    """Valid document ids are kept as a tuple in the given order."""
    request = _parse(document_ids=["b.md", "a/c.md"])

    assert request.document_ids == ("b.md", "a/c.md")


def test_missing_source_root_is_refused() -> None:
    """source_root is required."""
    with pytest.raises(InvalidRequestError, match="source_root"):
        ChunkRequest.parse({})


def test_parse_collects_every_problem() -> None:
    """Each problem is one entry of ``errors``."""
    with pytest.raises(InvalidRequestError) as caught:
        _parse(operation_id="a b", collection_id="c:d", extra=1)

    assert len(caught.value.errors) == 3


def test_invalid_request_error_is_a_value_error() -> None:
    """InvalidRequestError can be caught as a ValueError."""
    with pytest.raises(ValueError, match="invalid chunking request"):
        _parse(chunk_size=-5)


def test_parse_returns_a_model_unchanged() -> None:
    """A request that is already a model is returned as it is."""
    request = _parse()

    assert ChunkRequest.parse(request) is request


def test_parse_accepts_a_mapping() -> None:
    """A mapping with strings for paths and strategy becomes a model."""
    request = _parse(
        strategy="tokens", chunk_size=256, overlap=32, document_ids=["a.md"]
    )

    assert request.strategy == Strategy.TOKENS
    assert request.spec == ChunkSpec(Strategy.TOKENS, 256, 32)


def test_json_dump_round_trips() -> None:
    """The JSON-mode dump, through JSON text, parses back to an equal request."""
    request = _parse(
        collection_id="docs",
        document_ids=["a.md", "guide/b.md"],
        include=("*.md",),
        exclude=("drafts",),
        strategy="markdown",
        chunk_size=500,
        overlap=50,
        output_dir="/data/out",
    )

    dumped = json.loads(json.dumps(request.model_dump(mode="json")))

    assert ChunkRequest.parse(dumped) == request


def test_request_is_frozen() -> None:
    """A request cannot be changed after validation."""
    request = _parse()

    with pytest.raises(ValidationError):
        request.chunk_size = 5  # type: ignore[misc]


def test_chunk_build_computes_end_and_sha256() -> None:
    """Chunk.build sets end from the text length and hashes the UTF-8 text."""
    text = "Ça va 🎉"

    chunk = Chunk.build(
        document_id="a.md",
        index=2,
        text=text,
        start=10,
        strategy="recursive",
        token_count=4,
    )

    assert chunk.end == 10 + len(text)
    assert chunk.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert (chunk.document_id, chunk.index, chunk.start, chunk.token_count) == (
        "a.md",
        2,
        10,
        4,
    )


def test_chunk_record_has_the_documented_fields() -> None:
    """to_record gives every field the sink writes, and is JSON-ready."""
    chunk = Chunk.build(
        document_id="a.md",
        index=0,
        text="hi",
        start=0,
        strategy="tokens",
        token_count=1,
    )

    record = chunk.to_record()

    assert record == {
        "document_id": "a.md",
        "index": 0,
        "start": 0,
        "end": 2,
        "token_count": 1,
        "sha256": hashlib.sha256(b"hi").hexdigest(),
        "strategy": "tokens",
        "fallback_reason": None,
        "text": "hi",
    }
    assert json.loads(json.dumps(record)) == record
