"""Unit tests for tasks.engine's segments: long texts are cut before splitting.

The texts here are built deterministically to be several segments long, with the
boundaries that matter (none, line ends only, paragraphs, multi-byte text, CRLF at a
segment's limit) placed on purpose. No test measures time.
"""

from __future__ import annotations

import itertools
import unicodedata

import pytest
import semantic_text_splitter as sts

from tasks.engine import (
    CHARS_PER_TOKEN,
    SEGMENT_CHUNKS,
    SEGMENT_MAX_CHARS,
    SEGMENT_MIN_CHARS,
    SEGMENT_WINDOW_DIVISOR,
    TOKEN_MODEL,
    WHITESPACE,
    ChunkSpec,
    Span,
    Strategy,
    segment_bounds,
    segment_chars,
    split,
)
from tasks.tokens import count_tokens

LONGEST = SEGMENT_MIN_CHARS
"""Segment length of every spec below: their chunks are small enough for the minimum."""

PARAGRAPHS = (
    "# Heading {n}\n\n"
    "The quick brown fox jumps over the lazy dog. It was not amused, and said so.\n"
    "A second line of the paragraph follows, with a few more words in it.\n\n"
    "- item one\n- item two, longer than the first\n\n"
    "```\ncode = {n}\n```\n\n"
)


def _crlf_at_limits(count: int) -> str:
    """Return ``count`` segments' worth of text whose only break is CRLF at each limit."""
    return "".join("a" * (LONGEST - 1) + "\r\n" for _ in range(count))


TEXTS = {
    "single_line_x": "x" * (4 * LONGEST + 123),
    "long_lines_without_spaces": "\n".join(
        "y" * (LONGEST // 3 + line) for line in range(12)
    ),
    "mixed_paragraphs": "".join(PARAGRAPHS.format(n=n) for n in range(700)),
    "multibyte_unbroken": "日本語テキスト🎉é" * (LONGEST // 3),
    "multibyte_words": "Ça va ? 日本語です。 👩\u200d👩\u200d👧 🇫🇷 cafe\u0301. " * 4000,
    "crlf_at_limits": _crlf_at_limits(4),
    "crlf_lines": "a line ending in CRLF\r\n" * 8000,
    "combining_unbroken": "e\u0301\u0327" * (LONGEST + 500),
    "flags_unbroken": "x" + "🇫🇷🇩🇪🇯🇵" * (LONGEST // 2),
}

SPECS = [
    ChunkSpec(Strategy.RECURSIVE, 1000, 200),
    ChunkSpec(Strategy.RECURSIVE, 300, 0),
    ChunkSpec(Strategy.MARKDOWN, 1000, 200),
    ChunkSpec(Strategy.TOKENS, 200, 32),
]


def _measure(spec: ChunkSpec, text: str) -> int:
    return count_tokens(text) if spec.strategy == Strategy.TOKENS else len(text)


def _check_spans(text: str, spec: ChunkSpec, spans: list[Span]) -> None:
    """Assert every span invariant the engine promises, across segments too."""
    for start, end in spans:
        assert 0 <= start < end <= len(text), (start, end)
        assert text[start] not in WHITESPACE, (start, text[start])
        assert text[end - 1] not in WHITESPACE, (end, text[end - 1])
        assert _measure(spec, text[start:end]) <= spec.chunk_size, (start, end)
    for (prev_start, prev_end), (start, end) in itertools.pairwise(spans):
        assert prev_start < start, (prev_start, start)
        assert prev_end < end, (prev_end, end)
        shared = text[start:prev_end] if start < prev_end else ""
        assert _measure(spec, shared) <= spec.overlap, (prev_end, start)
    covered = bytearray(len(text))
    for start, end in spans:
        covered[start:end] = b"\x01" * (end - start)
    uncovered = [
        index
        for index, char in enumerate(text)
        if char not in WHITESPACE and not covered[index]
    ]
    assert not uncovered, uncovered[:10]


def _splitter_spans(text: str, spec: ChunkSpec) -> list[Span]:
    """Return the splitter's own spans for ``text``, trimmed as the engine trims."""
    splitter: sts.TextSplitter | sts.MarkdownSplitter
    if spec.strategy == Strategy.TOKENS:
        splitter = sts.TextSplitter.from_tiktoken_model(
            TOKEN_MODEL, spec.chunk_size, overlap=spec.overlap
        )
    elif spec.strategy == Strategy.MARKDOWN:
        splitter = sts.MarkdownSplitter(spec.chunk_size, overlap=spec.overlap)
    else:
        splitter = sts.TextSplitter(spec.chunk_size, overlap=spec.overlap)
    spans = []
    for start, chunk in splitter.chunk_indices(text):
        stripped = chunk.lstrip(WHITESPACE)
        if stripped:
            begin = start + len(chunk) - len(stripped)
            spans.append((begin, begin + len(stripped.rstrip(WHITESPACE))))
    return spans


@pytest.mark.parametrize(
    "spec", SPECS, ids=lambda spec: f"{spec.strategy}-{spec.chunk_size}"
)
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_spans_hold_every_invariant_across_segments(name: str, spec: ChunkSpec) -> None:
    """Long texts give ordered, exact, sized, trimmed, covering spans over segments."""
    # Given a text of several segments
    text = TEXTS[name]
    assert segment_chars(spec) == LONGEST
    bounds = list(segment_bounds(text, LONGEST))
    assert len(bounds) >= 3

    # When it is split
    spans = split(text, spec)

    # Then every invariant holds, and no chunk crosses a segment boundary
    _check_spans(text, spec, spans)
    ends = [end for _, end in bounds]
    for start, end in spans:
        assert not any(start < cut < end for cut in ends), (start, end)


@pytest.mark.parametrize(
    "spec", SPECS, ids=lambda spec: f"{spec.strategy}-{spec.chunk_size}"
)
def test_overlap_is_not_carried_across_a_segment_boundary(spec: ChunkSpec) -> None:
    """The first chunk of a segment starts at or after the end of the one before."""
    text = TEXTS["single_line_x"]
    cuts = [end for _, end in segment_bounds(text, LONGEST)][:-1]

    spans = split(text, spec)

    starts = {start for start, _ in spans}
    assert set(cuts) <= starts
    for cut in cuts:
        before = [end for _, end in spans if end <= cut]
        assert max(before) == cut


@pytest.mark.parametrize(
    "spec", SPECS, ids=lambda spec: f"{spec.strategy}-{spec.chunk_size}"
)
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_text_of_one_segment_gives_the_splitters_own_spans(
    name: str, spec: ChunkSpec
) -> None:
    """A text no longer than one segment is split exactly as the splitter splits it."""
    text = TEXTS[name][:LONGEST]

    assert split(text, spec) == _splitter_spans(text, spec)


def test_bounds_cover_the_text_contiguously_within_the_limit() -> None:
    """Segments follow each other without gaps, each at most the longest length."""
    for text in TEXTS.values():
        bounds = list(segment_bounds(text, LONGEST))

        assert bounds[0][0] == 0
        assert bounds[-1][1] == len(text)
        for (_, prev_end), (start, _) in itertools.pairwise(bounds):
            assert prev_end == start
        assert all(0 < end - start <= LONGEST for start, end in bounds)


def test_short_and_empty_texts_are_one_segment_or_none() -> None:
    """A text up to the longest length is one segment; an empty text is none."""
    assert list(segment_bounds("", 100)) == []
    assert list(segment_bounds("x" * 100, 100)) == [(0, 100)]
    assert list(segment_bounds("x" * 101, 100)) == [(0, 100), (100, 101)]


def _first_cut(text: str, longest: int = 800) -> int:
    return next(iter(segment_bounds(text, longest)))[1]


def test_boundary_prefers_a_blank_line_then_a_line_end_then_whitespace() -> None:
    """Within the window a blank line wins over a line end, which wins over a space."""
    # Given a window (the last 100 of 800 characters) holding each kind of boundary
    head = "w" * 710
    with_all = head + "\n\nabc\ndef ghi" + "w" * 200
    with_line_and_space = head + "ab\ncd ef" + "w" * 200
    with_space = head + "ab cd" + "w" * 200

    # Then the cut falls after the blank line's first newline, after the line end,
    # or before the space
    assert _first_cut(with_all) == 711
    assert _first_cut(with_line_and_space) == 713
    assert _first_cut(with_space) == 712


def test_boundary_outside_the_window_is_not_used() -> None:
    """A blank line before the window does not pull the cut back; a hard cut is made."""
    text = "w" * 100 + "\n\n" + "w" * 2000

    assert _first_cut(text) == 800


def test_blank_line_with_crlf_is_a_paragraph_boundary() -> None:
    """A CRLF blank line counts as a paragraph, cut without splitting its CRLFs."""
    text = "w" * 710 + "\r\n\r\nab\ncd" + "w" * 200

    cut = _first_cut(text)

    assert cut == 712
    assert text[cut - 2 : cut + 2] == "\r\n\r\n"


def test_crlf_at_the_limit_is_never_split() -> None:
    """A CRLF straddling a segment's limit stays whole in the next segment."""
    text = _crlf_at_limits(3)

    cuts = [end for _, end in segment_bounds(text, LONGEST)]

    assert cuts[0] == LONGEST - 1
    assert text[cuts[0] : cuts[0] + 2] == "\r\n"
    for cut in cuts:
        assert text[cut - 1 : cut + 1] != "\r\n"


def test_crlf_lines_are_cut_after_the_line_feed() -> None:
    """With CRLF line ends a segment ends after a whole CRLF."""
    text = TEXTS["crlf_lines"]

    for _, end in list(segment_bounds(text, LONGEST))[:-1]:
        assert text[end - 2 : end] == "\r\n"


def test_hard_cut_keeps_combining_marks_with_their_letter() -> None:
    """Without whitespace, a cut never leaves a combining mark at a segment's start."""
    text = TEXTS["combining_unbroken"]

    for start, _ in list(segment_bounds(text, LONGEST))[1:]:
        assert unicodedata.combining(text[start]) == 0
        assert text[start] == "e"


def test_hard_cut_keeps_joined_emoji_and_flags_whole() -> None:
    """A hard cut falls between emoji sequences and between flags, not inside them."""
    family = "👩\u200d👩\u200d👧\u200d👦👍🏽"
    joined = family * (LONGEST // len(family) * 2)
    flags = TEXTS["flags_unbroken"]

    for start, _ in list(segment_bounds(joined, LONGEST))[1:]:
        assert start % len(family) == 0
    for start, _ in list(segment_bounds(flags, LONGEST))[1:]:
        assert (start - 1) % 2 == 0


def test_window_of_nothing_but_marks_is_cut_at_the_limit() -> None:
    """When every character of the window continues a cluster, the cut is the limit."""
    text = "e" + "\u0301" * 2000

    assert _first_cut(text) == 800


def test_segment_bounds_refuses_a_tiny_length() -> None:
    """A longest length below the window divisor is refused."""
    with pytest.raises(ValueError, match="longest_chars must be at least"):
        list(segment_bounds("text", SEGMENT_WINDOW_DIVISOR - 1))


def test_segment_length_grows_with_the_chunk_size_within_limits() -> None:
    """Segments hold SEGMENT_CHUNKS chunks, tokens at CHARS_PER_TOKEN characters."""
    assert segment_chars(ChunkSpec(Strategy.RECURSIVE, 10, 0)) == SEGMENT_MIN_CHARS
    assert (
        segment_chars(ChunkSpec(Strategy.RECURSIVE, 4000, 0)) == SEGMENT_CHUNKS * 4000
    )
    tokens = ChunkSpec(Strategy.TOKENS, 1000, 0)
    assert segment_chars(tokens) == SEGMENT_CHUNKS * 1000 * CHARS_PER_TOKEN
    huge = ChunkSpec(Strategy.MARKDOWN, 10 * SEGMENT_MAX_CHARS, 0)
    assert segment_chars(huge) == SEGMENT_MAX_CHARS


def test_chunks_longer_than_a_segment_are_capped_at_the_segment() -> None:
    """With a chunk size above the longest segment, no chunk crosses a segment."""
    spec = ChunkSpec(Strategy.RECURSIVE, 2 * SEGMENT_MAX_CHARS, 0)
    text = ("word " * 1000 + "\n\n") * (2 * SEGMENT_MAX_CHARS // 5002 + 1)

    spans = split(text, spec)

    assert len(spans) >= 2
    assert max(end - start for start, end in spans) <= SEGMENT_MAX_CHARS
    _check_spans(text, spec, spans)
