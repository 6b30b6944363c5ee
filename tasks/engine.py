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

Segments: the splitter's time grows with the square of the length of a stretch of text
without boundaries, divided by the chunk size (one 1 MB line of ``x`` took 6 s at 1000
characters, 5 MB took 94 s), and it runs in Rust holding the GIL, so a Celery soft
time limit cannot interrupt it. So ``recursive``, ``markdown`` and ``tokens`` first cut
a text longer than :func:`segment_chars` characters into segments of at most that
length, and split each segment on its own. A segment holds room for
:data:`SEGMENT_CHUNKS` chunks, within :data:`SEGMENT_MIN_CHARS` and
:data:`SEGMENT_MAX_CHARS`; it ends at the best boundary in its last eighth: a blank
line, else a line end, else whitespace, else a hard cut that does not separate a
character from the combining marks, joiners or modifiers that follow it. A segment
never ends between ``\\r`` and ``\\n``. The time is then linear in the length of the text,
and Python regains control between segments, where a time limit can be raised.

What segmenting changes, for texts longer than one segment only: a chunk never crosses
a segment boundary, so the chunk before a boundary may be shorter than ``chunk_size``;
overlap is not carried across a segment boundary (the first chunk of a segment shares
nothing with the last chunk of the one before); and a Markdown construct cut by a
boundary (a fenced code block, say) is parsed from the cut as if it began there. A
text no longer than one segment is split exactly as the splitter splits it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

import semantic_text_splitter as sts

from recovery.classify import ErrorType, StrategyError, classify

ENGINE_VERSION = f"sts-{importlib.metadata.version('semantic-text-splitter')}-seg1"
"""Names the splitter release and chunkq's segmentation; part of document fingerprints,
so a change of engine chunks documents again."""

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

SEGMENT_CHUNKS = 32
"""Chunks of ``chunk_size`` a segment has room for (tokens counted as
:data:`CHARS_PER_TOKEN` characters each).

The time to split a text without boundaries is about proportional to
``length * segment / chunk_size``, so a segment sized in chunks costs the same per
character at every chunk size. Measured with ``bench/bench_engine.py`` at 1000
characters, overlap 200: 32 chunks split a 5 MB line of ``x`` in about 1 s, against
168 s unsegmented on the same machine (2 MB: 0.4 to 0.8 s against 28 s); 64 chunks
cost about twice as much, and 16 would cut a short chunk and drop the overlap at one
chunk in 16 instead of one in 32. Prose is not slower for it (20 MB: 0.03 s against
0.39 s with ``recursive``, 0.1 s against 2.8 s with ``markdown``, and about the same
with ``tokens``, whose time goes to counting tokens)."""

SEGMENT_MIN_CHARS = 32_000
"""Shortest segment, in characters: below it the calls cost more than they save."""

SEGMENT_MAX_CHARS = 1_000_000
"""Longest segment, in characters, so that Python regains control soon and a time limit
can be raised: one call on a million characters of ``x`` took 0.3 s with ``recursive``
and ``markdown`` (chunks of 31,250 characters), but 6.5 s with ``tokens`` (chunks of
7,813 tokens), whose tokenizer is itself slow on such text; prose took under 0.4 s
with each. No chunk of these strategies is longer than this."""

SEGMENT_WINDOW_DIVISOR = 8
"""A segment boundary is sought in the last ``1 / SEGMENT_WINDOW_DIVISOR`` of it."""

_WHITESPACE_CHAR = re.compile(f"[{re.escape(WHITESPACE)}]")
"""One whitespace character; searched in a reversed window to find the last one."""

_ZERO_WIDTH_JOINER = "\u200d"
_EXTENDING_CATEGORIES = frozenset({"Mn", "Mc", "Me"})
"""Combining marks (variation selectors included), which belong to the character before."""
_CLUSTER_CONTINUING_RANGES = (
    (0x1160, 0x11FF),  # conjoining Hangul vowels and finals
    (0xD7B0, 0xD7FF),  # more conjoining Hangul vowels and finals
    (0x1F3FB, 0x1F3FF),  # emoji skin-tone modifiers
    (0xE0020, 0xE007F),  # emoji tag characters (subdivision flags)
)


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
    longest = segment_chars(spec)
    if len(text) <= longest:
        return _trimmed_spans(chunk_indices(text), 0)
    spans = []
    for segment_start, segment_end in segment_bounds(text, longest):
        chunks = chunk_indices(text[segment_start:segment_end])
        spans.extend(_trimmed_spans(chunks, segment_start))
    return spans


def _trimmed_spans(chunks: list[tuple[int, str]], offset: int) -> list[Span]:
    # The splitter trims most chunks, but not every one: trim here, so no span
    # starts or ends with whitespace and overlaps stay within ``overlap``.
    spans = []
    for start, chunk in chunks:
        stripped = chunk.lstrip(WHITESPACE)
        if stripped:
            begin = offset + start + len(chunk) - len(stripped)
            spans.append((begin, begin + len(stripped.rstrip(WHITESPACE))))
    return spans


def segment_chars(spec: ChunkSpec) -> int:
    """Return the longest segment, in characters, that ``spec`` splits in one call.

    Only ``recursive``, ``markdown`` and ``tokens`` segment; see the module docstring.
    """
    chunk_chars = spec.chunk_size
    if size_unit(spec.strategy) == "tokens":
        chunk_chars *= CHARS_PER_TOKEN
    wanted_chars = SEGMENT_CHUNKS * chunk_chars
    return min(SEGMENT_MAX_CHARS, max(SEGMENT_MIN_CHARS, wanted_chars))


def segment_bounds(text: str, longest_chars: int) -> Iterator[Span]:
    """Yield ``(start, end)`` of consecutive segments covering ``text``, in order.

    Each segment holds at most ``longest_chars`` characters and ends at the best
    boundary in its last ``longest_chars // SEGMENT_WINDOW_DIVISOR`` characters (see
    the module docstring). A text of at most ``longest_chars`` characters is one
    segment; an empty text is none. The search is linear in the length of the text.

    Raises:
        ValueError: ``longest_chars`` is below ``SEGMENT_WINDOW_DIVISOR``.
    """
    if longest_chars < SEGMENT_WINDOW_DIVISOR:
        raise ValueError(
            f"longest_chars must be at least {SEGMENT_WINDOW_DIVISOR}, got {longest_chars}"
        )
    window_chars = longest_chars // SEGMENT_WINDOW_DIVISOR
    start = 0
    while len(text) - start > longest_chars:
        limit = start + longest_chars
        end = _boundary(text, limit - window_chars, limit)
        yield start, end
        start = end
    if start < len(text):
        yield start, len(text)


def _boundary(text: str, low: int, high: int) -> int:
    """Return the best cut in ``[low, high]``: a blank line, line end, space, or hard."""
    blank_line = max(text.rfind("\n\n", low, high), text.rfind("\n\r\n", low, high))
    if blank_line >= 0:
        return blank_line + 1
    line_end = text.rfind("\n", low, high)
    if line_end >= 0:
        return line_end + 1
    # Cut before the whitespace: no line end lies in the window, so this is never the
    # ``\n`` of a ``\r\n``, and a combining mark after a space stays with it.
    match = _WHITESPACE_CHAR.search(text[low:high][::-1])
    if match is not None:
        return high - 1 - match.start()
    return _hard_cut(text, low, high)


def _hard_cut(text: str, low: int, high: int) -> int:
    """Return ``high``, moved back so it does not split a character from its marks.

    A window holding nothing but such marks is cut at ``high`` all the same.
    """
    cut = high
    while cut > low and _continues_cluster(text, cut):
        cut -= 1
    return cut if cut > low else high


def _continues_cluster(text: str, index: int) -> bool:
    """Say whether ``text[index]`` belongs with the character before it."""
    char, before = text[index], text[index - 1]
    if _ZERO_WIDTH_JOINER in (char, before):
        return True
    if _is_regional_indicator(char) and _is_regional_indicator(before):
        # Flags are pairs: the cut splits one after an odd run of indicators.
        run_start = index - 1
        while run_start > 0 and _is_regional_indicator(text[run_start - 1]):
            run_start -= 1
        return (index - run_start) % 2 == 1
    code = ord(char)
    if any(first <= code <= last for first, last in _CLUSTER_CONTINUING_RANGES):
        return True
    return unicodedata.category(char) in _EXTENDING_CATEGORIES


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


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
