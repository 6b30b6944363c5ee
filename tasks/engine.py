"""The chunking engine behind chunkq's own interface.

:func:`split` turns a text into spans ``(start, end)`` of character offsets, so that
``text[start:end]`` is each chunk exactly. Four strategies:

``characters``
    Fixed windows of ``chunk_size`` characters, each starting ``chunk_size - overlap``
    after the previous one. Chunks are not trimmed. The simplest and fastest; it never
    fails, so it ends every fallback chain.
``recursive``
    Splits at the largest boundary that fits: paragraphs, then lines, sentences, words,
    graphemes; merges neighbours up to ``chunk_size`` characters; leading and trailing
    whitespace of a chunk is left out of its span.
``markdown``
    As ``recursive``, but the boundaries follow Markdown structure first (headings,
    blocks, list items), so a section stays together when it fits.
``tokens``
    As ``recursive``, with ``chunk_size`` and ``overlap`` counted in tokens of the
    ``cl100k_base`` encoding.

Units: characters are Unicode code points, as Python's ``len`` counts them. Token
counts use ``cl100k_base`` throughout (see :mod:`tasks.tokens`).

More strategies can be registered with :func:`register_strategy` (a module named in
``CHUNKQ_IMPORTS`` is imported by workers and callers at start-up). A strategy that
raises is reported as :class:`recovery.classify.StrategyError` (the caller falls back
to a simpler one); memory errors, time limits and other signals pass through as they
are, because they are not the strategy's fault.

Engine: ``recursive``, ``markdown`` and ``tokens`` use semantic-text-splitter (Rust).
Measured on a 33 MB mixed corpus at 1000 characters with overlap 200 it was the
fastest of the correct splitters tried (94 MB/s against 72 MB/s for the next), its
offsets are exact for multi-byte text, and its tokenizer tables are compiled in, so
token mode needs no network. ``bench/bench_engine.py`` measures it side by side with
the ``characters`` strategy. Splitters are built once per distinct
(strategy, size, overlap) and kept in a small bounded cache, so a long-lived worker
does not grow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import semantic_text_splitter as sts

from recovery.classify import ErrorType, StrategyError, classify

TOKEN_MODEL = "gpt-4"
"""Model name whose encoding (``cl100k_base``) the token strategy counts in."""

SPLITTER_CACHE_SIZE = 16

Span = tuple[int, int]
SplitFunction = Callable[[str, int, int], list[Span]]
"""A strategy: ``(text, chunk_size, overlap)`` to spans ``(start, end)``."""

CHARS_PER_TOKEN = 4
"""Characters per token assumed when a token strategy falls back to a character one."""

WHITESPACE = "".join(
    chr(c) for c in range(0x3001) if chr(c).isspace() and c not in range(0x1C, 0x20)
)
"""Unicode White_Space characters, as the splitter trims them. Python's ``isspace``
also counts the separators U+001C to U+001F, which the splitter keeps."""


class Strategy(StrEnum):
    """A way to cut a text into chunks."""

    CHARACTERS = "characters"
    RECURSIVE = "recursive"
    MARKDOWN = "markdown"
    TOKENS = "tokens"

    @property
    def size_unit(self) -> str:
        """The unit ``chunk_size`` and ``overlap`` are counted in."""
        return "tokens" if self is Strategy.TOKENS else "characters"


_REGISTERED: dict[str, tuple[SplitFunction, str]] = {}


def register_strategy(
    name: str, split_function: SplitFunction, *, unit: str = "characters"
) -> None:
    """Make ``name`` usable as a strategy; ``unit`` is what its sizes count.

    Raises:
        ValueError: ``name`` is a built-in strategy or already registered.
    """
    if name in strategy_names():
        raise ValueError(f"strategy {name!r} exists already")
    _REGISTERED[name] = (split_function, unit)


def strategy_names() -> list[str]:
    """Return the names of every usable strategy, built-in ones first."""
    return [strategy.value for strategy in Strategy] + sorted(_REGISTERED)


def size_unit(strategy: str) -> str:
    """Return the unit the sizes of ``strategy`` are counted in."""
    if strategy in _REGISTERED:
        return _REGISTERED[strategy][1]
    return Strategy(strategy).size_unit


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """How to chunk: a strategy and its sizes, in the strategy's unit."""

    strategy: str
    chunk_size: int
    overlap: int

    def __post_init__(self) -> None:
        if self.strategy not in strategy_names():
            raise ValueError(
                f"unknown strategy {self.strategy!r}; known: {', '.join(strategy_names())}"
            )
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        if not 0 <= self.overlap < self.chunk_size:
            raise ValueError(
                f"overlap must be at least 0 and below chunk_size ({self.chunk_size}), "
                f"got {self.overlap}"
            )

    def converted_to(self, strategy: str) -> ChunkSpec:
        """Return the same sizes for ``strategy``, converted when its unit differs."""
        source_unit, target_unit = size_unit(self.strategy), size_unit(strategy)
        factor = 1
        if source_unit == "tokens" and target_unit == "characters":
            factor = CHARS_PER_TOKEN
        return ChunkSpec(strategy, self.chunk_size * factor, self.overlap * factor)


def split(text: str, spec: ChunkSpec) -> list[Span]:
    """Return the chunk spans of ``text`` under ``spec``, in order.

    An empty or all-whitespace text gives no spans with every strategy but
    ``characters``, which gives none only for an empty text.

    Raises:
        recovery.classify.StrategyError: the strategy failed on this text.
    """
    if not text:
        return []
    try:
        return _split(text, spec)
    except Exception as error:
        if classify(error) is not ErrorType.UNKNOWN:
            raise
        raise StrategyError(strategy=spec.strategy, reason=_describe(error)) from error
    except BaseException as error:
        # A panic inside the Rust splitter arrives as pyo3's PanicException, which is
        # a BaseException; it is the strategy's failure, not a signal.
        if type(error).__name__ != "PanicException":
            raise
        raise StrategyError(strategy=spec.strategy, reason=_describe(error)) from error


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def _split(text: str, spec: ChunkSpec) -> list[Span]:
    if spec.strategy in _REGISTERED:
        return _REGISTERED[spec.strategy][0](text, spec.chunk_size, spec.overlap)
    strategy = Strategy(spec.strategy)
    if strategy is Strategy.CHARACTERS:
        return _fixed_windows(len(text), spec.chunk_size, spec.overlap)
    chunk_indices = _splitter(strategy, spec.chunk_size, spec.overlap)
    spans = []
    for start, chunk in chunk_indices(text):
        # The splitter trims most chunks, but not every one: trim here, so no span
        # starts or ends with whitespace and overlaps stay within ``overlap``.
        stripped = chunk.lstrip(WHITESPACE)
        if stripped:
            begin = start + len(chunk) - len(stripped)
            spans.append((begin, begin + len(stripped.rstrip(WHITESPACE))))
    return spans


def _fixed_windows(length: int, size: int, overlap: int) -> list[Span]:
    step = size - overlap
    spans = []
    start = 0
    while True:
        end = min(start + size, length)
        spans.append((start, end))
        if end == length:
            return spans
        start += step


@functools.lru_cache(maxsize=SPLITTER_CACHE_SIZE)
def _splitter(
    strategy: Strategy, chunk_size: int, overlap: int
) -> Callable[[str], list[tuple[int, str]]]:
    splitter: sts.TextSplitter | sts.MarkdownSplitter
    if strategy is Strategy.TOKENS:
        splitter = sts.TextSplitter.from_tiktoken_model(
            TOKEN_MODEL, chunk_size, overlap=overlap
        )
    elif strategy is Strategy.MARKDOWN:
        splitter = sts.MarkdownSplitter(chunk_size, overlap=overlap)
    else:
        splitter = sts.TextSplitter(chunk_size, overlap=overlap)
    return splitter.chunk_indices
