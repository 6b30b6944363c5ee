"""The shapes chunkq's chunking tasks take and give.

:class:`ChunkRequest` is what a caller enqueues; it is validated in the caller before
publishing and again in the worker. :class:`Chunk` is one piece of a document as the
sink writes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from config.settings import CleanupStrategy
from recovery.ids import check_id, new_operation_id
from tasks.engine import ChunkSpec, Strategy, strategy_names
from tasks.errors import DocumentRefusedError, InvalidRequestError
from tasks.sources import check_document_id

MAX_CHUNK_SIZE = 1_000_000
MAX_DOCUMENT_IDS = 100_000


class ChunkRequest(BaseModel):
    """One chunking job: which documents, how to chunk them, where the chunks go.

    ``source_root`` and ``output_dir`` are made absolute against the caller's working
    directory when validated, so the worker sees the folder the caller meant; both must
    exist on the worker's machine. ``chunk_size`` and ``overlap`` are counted in the
    strategy's unit (tokens for ``tokens``, characters otherwise).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    operation_id: str = Field(default_factory=new_operation_id)
    collection_id: str = "default"
    source_root: Path
    document_ids: tuple[str, ...] | None = Field(
        default=None, max_length=MAX_DOCUMENT_IDS
    )
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    strategy: str = Strategy.RECURSIVE.value
    chunk_size: int = Field(default=1000, gt=0, le=MAX_CHUNK_SIZE, strict=True)
    overlap: int = Field(default=200, ge=0, strict=True)
    output_dir: Path | None = None
    max_batch_size: int | None = Field(default=None, gt=0, strict=True)
    """Upper bound on documents per batch; a retry after a memory error sets it."""
    cleanup: CleanupStrategy | None = None
    """What to do with written work when attempts run out (default: the setting)."""
    deduplicate: bool = True
    """Return the operation already doing or done with the same work, if there is one."""

    @field_validator("operation_id")
    @classmethod
    def _operation_id_safe(cls, value: str) -> str:
        return check_id("operation_id", value)

    @field_validator("collection_id")
    @classmethod
    def _collection_id_safe(cls, value: str) -> str:
        return check_id("collection_id", value)

    @field_validator("document_ids")
    @classmethod
    def _document_ids_safe(
        cls, value: tuple[str, ...] | None
    ) -> tuple[str, ...] | None:
        if value is None:
            return None
        for document_id in value:
            try:
                check_document_id(document_id)
            except DocumentRefusedError as error:
                raise ValueError(str(error)) from None
        if len(set(value)) != len(value):
            raise ValueError("document_ids holds the same id twice")
        return value

    @field_validator("source_root", "output_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("an empty path is not a folder; give '.' for this one")
        return value

    @field_validator("source_root", "output_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path.cwd() / value.expanduser()

    @field_validator("strategy")
    @classmethod
    def _strategy_known(cls, value: str) -> str:
        if value not in strategy_names():
            raise ValueError(
                f"unknown strategy {value!r}; known: {', '.join(strategy_names())}"
            )
        return value

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkRequest:
        if self.overlap >= self.chunk_size:
            raise ValueError(
                f"overlap ({self.overlap}) must be below chunk_size ({self.chunk_size})"
            )
        return self

    @property
    def spec(self) -> ChunkSpec:
        """The engine's view of the strategy and sizes."""
        return ChunkSpec(self.strategy, self.chunk_size, self.overlap)

    @classmethod
    def parse(cls, value: Any) -> ChunkRequest:
        """Validate a request given as a model, a mapping or its JSON form.

        Raises:
            InvalidRequestError: with one line per problem, naming the field.
        """
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as error:
            problems = [
                f"{'.'.join(str(part) for part in item['loc']) or 'request'}: {item['msg']}"
                for item in error.errors()
            ]
            raise InvalidRequestError(
                "invalid chunking request: " + "; ".join(problems), errors=problems
            ) from None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a document; ``original[start:end] == text`` (character offsets)."""

    document_id: str
    index: int
    text: str
    start: int
    end: int
    token_count: int
    sha256: str
    strategy: str
    fallback_reason: str | None = None
    """Why ``strategy`` made this chunk instead of the requested one, if it did."""

    @classmethod
    def build(
        cls,
        *,
        document_id: str,
        index: int,
        text: str,
        start: int,
        strategy: str,
        token_count: int,
        fallback_reason: str | None = None,
    ) -> Chunk:
        """Make a chunk, computing its end offset and its text's SHA-256."""
        return cls(
            document_id=document_id,
            index=index,
            text=text,
            start=start,
            end=start + len(text),
            token_count=token_count,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            strategy=strategy,
            fallback_reason=fallback_reason,
        )

    def to_record(self) -> dict[str, Any]:
        """Return the chunk as the JSON object a sink writes."""
        return {
            "document_id": self.document_id,
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "token_count": self.token_count,
            "sha256": self.sha256,
            "strategy": self.strategy,
            "fallback_reason": self.fallback_reason,
            "text": self.text,
        }
