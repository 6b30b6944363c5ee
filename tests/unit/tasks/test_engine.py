"""Unit tests for tasks.engine: spans, sizes and overlap of every strategy."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.engine import ChunkSpec, Span, Strategy, split
from tasks.tokens import count_tokens

TEXTS = {
    "prose": (
        "The quick brown fox jumps over the lazy dog. It was not amused.\n\n"
        "A second paragraph follows here, with a few more words in it.\n"
        "And a line of its own.\n"
    )
    * 4,
    "accents": "Ça va ? Très bien, merci. L'été à Zürich était doux. " * 12,
    "combining": "cafe\u0301 nai\u0308ve re\u0301sume\u0301 " * 15,
    "cjk": "日本語のテキストです。中文的句子在这里。한국어 문장도 있습니다. " * 10,
    "emoji": "Party 🎉🎉 time 👩\u200d👩\u200d👧\u200d👦 family 🇫🇷 flag 👍🏽 ok. " * 10,
    "markdown": (
        "# Title\n\nIntro paragraph with *emphasis* and `code`.\n\n"
        "## Section\n\n- item one\n- item two\n  - nested item\n\n"
        "> a quote that goes on for a while\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    )
    * 3,
    "code": (
        "def add(left: int, right: int) -> int:\n"
        '    """Return the sum."""\n'
        "    return left + right\n\n\n"
        "class Box:\n    def __init__(self) -> None:\n        self.items = []\n\n"
    )
    * 4,
    "unbroken": "supercalifragilisticexpialidocious" * 12,
    "mixed_newlines": "one\r\ntwo\rthree\nfour\u2028five\u2029six " * 8,
    "whitespace": "   \n\t \r\n  \u00a0 \n\n",
    "empty": "",
}

CHARACTER_SIZES = [(1, 0), (7, 2), (16, 5), (50, 10), (200, 0), (10_000, 9_999)]
TOKEN_SIZES = [(8, 2), (16, 4), (64, 16), (500, 100)]
CHARACTER_STRATEGIES = [Strategy.CHARACTERS, Strategy.RECURSIVE, Strategy.MARKDOWN]


KNOWN_FAILURES: dict[tuple[object, ...], str] = {}


def _cases() -> list[object]:
    cases = []
    for name in TEXTS:
        for strategy in CHARACTER_STRATEGIES:
            cases.extend((name, strategy, size, lap) for size, lap in CHARACTER_SIZES)
        cases.extend((name, Strategy.TOKENS, size, lap) for size, lap in TOKEN_SIZES)
    return [
        pytest.param(
            *case, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[case])
        )
        if case in KNOWN_FAILURES
        else case
        for case in cases
    ]


def _measure(strategy: Strategy, text: str) -> int:
    return count_tokens(text) if strategy is Strategy.TOKENS else len(text)


def _check_spans(text: str, spec: ChunkSpec, spans: list[Span]) -> None:
    for start, end in spans:
        assert 0 <= start < end <= len(text), (start, end)
        assert _measure(spec.strategy, text[start:end]) <= spec.chunk_size
    for (prev_start, prev_end), (start, end) in itertools.pairwise(spans):
        assert prev_start < start, (prev_start, start)
        assert prev_end < end, (prev_end, end)
        shared = text[start:prev_end] if start < prev_end else ""
        assert _measure(spec.strategy, shared) <= spec.overlap
    covered = {index for start, end in spans for index in range(start, end)}
    uncovered = [
        index
        for index, char in enumerate(text)
        if not char.isspace() and index not in covered
    ]
    assert not uncovered, uncovered[:10]


@pytest.mark.parametrize(("name", "strategy", "chunk_size", "overlap"), _cases())
def test_spans_in_order_sized_overlapping_and_covering(
    name: str, strategy: Strategy, chunk_size: int, overlap: int
) -> None:
    """Every strategy gives ordered in-text spans, within size and overlap, covering."""
    text = TEXTS[name]
    spec = ChunkSpec(strategy, chunk_size, overlap)

    spans = split(text, spec)

    _check_spans(text, spec, spans)


@pytest.mark.parametrize(("chunk_size", "overlap"), CHARACTER_SIZES)
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_characters_windows_are_full_and_overlap_exactly(
    name: str, chunk_size: int, overlap: int
) -> None:
    """The characters strategy gives full windows overlapping by exactly ``overlap``."""
    text = TEXTS[name]

    spans = split(text, ChunkSpec(Strategy.CHARACTERS, chunk_size, overlap))

    for start, end in spans[:-1]:
        assert end - start == chunk_size
    for (_, prev_end), (start, _) in itertools.pairwise(spans[:-1]):
        assert prev_end - start == overlap
    if len(spans) > 1:
        assert 0 <= spans[-2][1] - spans[-1][0] <= overlap
    if text:
        assert spans[0][0] == 0
        assert spans[-1][1] == len(text)


def test_characters_without_overlap_rebuild_the_text() -> None:
    """With overlap 0 the characters chunks joined give back the text exactly."""
    text = TEXTS["emoji"] + TEXTS["cjk"]

    spans = split(text, ChunkSpec(Strategy.CHARACTERS, 13, 0))

    assert "".join(text[start:end] for start, end in spans) == text


def test_characters_counts_code_points_not_bytes() -> None:
    """Sizes of the characters strategy are code points, as ``len`` counts them."""
    text = "é" * 10 + "日" * 10 + "🎉" * 10

    spans = split(text, ChunkSpec(Strategy.CHARACTERS, 10, 0))

    assert spans == [(0, 10), (10, 20), (20, 30)]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_empty_text_gives_no_spans(strategy: Strategy) -> None:
    """An empty text gives no spans with every strategy."""
    assert split("", ChunkSpec(strategy, 10, 2)) == []


@pytest.mark.parametrize(
    "strategy", [Strategy.RECURSIVE, Strategy.MARKDOWN, Strategy.TOKENS]
)
def test_whitespace_only_text_gives_no_spans(strategy: Strategy) -> None:
    """An all-whitespace text gives no spans with every strategy but characters."""
    assert split(TEXTS["whitespace"], ChunkSpec(strategy, 10, 2)) == []


def test_whitespace_only_text_gives_windows_with_characters() -> None:
    """The characters strategy windows an all-whitespace text like any other."""
    text = TEXTS["whitespace"]

    spans = split(text, ChunkSpec(Strategy.CHARACTERS, 5, 1))

    assert spans[0] == (0, 5)
    assert spans[-1][1] == len(text)


@pytest.mark.parametrize(
    "strategy", [Strategy.RECURSIVE, Strategy.MARKDOWN, Strategy.TOKENS]
)
def test_split_strategies_trim_surrounding_whitespace(strategy: Strategy) -> None:
    """Splitting strategies leave a chunk's leading and trailing whitespace out."""
    text = "  \n" + TEXTS["prose"] + "\n\n  "

    spans = split(text, ChunkSpec(strategy, 40, 5))

    for start, end in spans:
        assert text[start:end] == text[start:end].strip()


def test_markdown_chunk_does_not_start_with_a_space() -> None:
    """A markdown chunk after an overlap starts at a word, not at a space."""
    text = TEXTS["prose"]

    spans = split(text, ChunkSpec(Strategy.MARKDOWN, 50, 10))

    assert [text[start:end] for start, end in spans if text[start].isspace()] == []


def test_text_that_fits_is_one_chunk() -> None:
    """A text shorter than chunk_size is one chunk with every splitting strategy."""
    text = "A short sentence."

    for strategy in Strategy:
        assert split(text, ChunkSpec(strategy, 1000, 10)) == [(0, len(text))]


def test_markdown_keeps_a_fitting_section_together() -> None:
    """The markdown strategy cuts at a heading rather than inside a fitting section."""
    section = "## Part {n}\n\nBody of part {n}, short.\n\n"
    text = "".join(section.format(n=n) for n in range(4))

    spans = split(text, ChunkSpec(Strategy.MARKDOWN, 40, 0))

    chunks = [text[start:end] for start, end in spans]
    assert all(chunk.startswith("## Part") for chunk in chunks)
    assert len(chunks) == 4


def test_token_chunks_can_hold_more_characters_than_chunk_size() -> None:
    """Token chunks are sized in tokens, so one may exceed chunk_size characters."""
    text = TEXTS["prose"]

    spans = split(text, ChunkSpec(Strategy.TOKENS, 20, 0))

    assert max(end - start for start, end in spans) > 20
    assert all(count_tokens(text[start:end]) <= 20 for start, end in spans)


def test_split_is_repeatable() -> None:
    """Splitting the same text twice (cached splitter) gives the same spans."""
    spec = ChunkSpec(Strategy.RECURSIVE, 30, 5)

    assert split(TEXTS["accents"], spec) == split(TEXTS["accents"], spec)


def test_size_unit_names_the_unit() -> None:
    """Only the tokens strategy counts its sizes in tokens."""
    assert Strategy.TOKENS.size_unit == "tokens"
    assert {s.size_unit for s in CHARACTER_STRATEGIES} == {"characters"}


@pytest.mark.parametrize("chunk_size", [0, -1, -100])
def test_spec_refuses_non_positive_chunk_size(chunk_size: int) -> None:
    """ChunkSpec refuses a chunk_size of 0 or below."""
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        ChunkSpec(Strategy.CHARACTERS, chunk_size, 0)


@pytest.mark.parametrize(
    ("chunk_size", "overlap"), [(10, 10), (10, 11), (1, 1), (5, -1)]
)
def test_spec_refuses_overlap_outside_range(chunk_size: int, overlap: int) -> None:
    """ChunkSpec refuses an overlap below 0 or at least chunk_size."""
    with pytest.raises(ValueError, match="overlap must be"):
        ChunkSpec(Strategy.RECURSIVE, chunk_size, overlap)


_ALPHABET = list("abcdefghij ABC .,;!?\n\t-_#*`éß日語🎉👍\U0001f3fd\u0301\u200d")


@st.composite
def _specs(draw: st.DrawFn) -> ChunkSpec:
    strategy = draw(st.sampled_from([Strategy.CHARACTERS, Strategy.RECURSIVE]))
    chunk_size = draw(st.integers(min_value=1, max_value=24))
    overlap = draw(st.integers(min_value=0, max_value=chunk_size - 1))
    return ChunkSpec(strategy, chunk_size, overlap)


@settings(max_examples=60, deadline=None)
@given(
    text=st.one_of(st.text(_ALPHABET, max_size=300), st.text(max_size=120)),
    spec=_specs(),
)
def test_property_characters_and_recursive(text: str, spec: ChunkSpec) -> None:
    """For any text and small sizes, spans are ordered, sized, overlapping, covering."""
    spans = split(text, spec)

    _check_spans(text, spec, spans)
    if spec.strategy is Strategy.CHARACTERS:
        for (_, prev_end), (start, _) in itertools.pairwise(spans[:-1]):
            assert prev_end - start == spec.overlap


def test_registered_strategy_failure_becomes_strategy_error() -> None:
    """A registered strategy that raises ValueError is reported as a StrategyError."""
    from recovery.classify import StrategyError  # noqa: PLC0415
    from tasks.engine import register_strategy  # noqa: PLC0415

    def broken(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
        raise ValueError("cannot")

    register_strategy("unit-broken", broken)
    with pytest.raises(StrategyError, match="cannot"):
        split("some text", ChunkSpec("unit-broken", 10, 0))


def test_memory_error_in_a_strategy_is_not_a_strategy_failure() -> None:
    """MemoryError passes through split unchanged: it is for the retry policy."""
    from tasks.engine import register_strategy  # noqa: PLC0415

    def hungry(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
        raise MemoryError

    register_strategy("unit-hungry", hungry)
    with pytest.raises(MemoryError):
        split("some text", ChunkSpec("unit-hungry", 10, 0))


def test_token_sizes_convert_to_characters_on_fallback() -> None:
    """Falling back from tokens to a character strategy multiplies sizes by 4."""
    spec = ChunkSpec(Strategy.TOKENS, 256, 32).converted_to("recursive")
    assert (spec.strategy, spec.chunk_size, spec.overlap) == ("recursive", 1024, 128)
    same = ChunkSpec(Strategy.MARKDOWN, 500, 50).converted_to("characters")
    assert (same.chunk_size, same.overlap) == (500, 50)


def test_unknown_strategy_is_refused() -> None:
    """ChunkSpec names the known strategies when given an unknown one."""
    with pytest.raises(ValueError, match="known: characters"):
        ChunkSpec("nope", 10, 0)
