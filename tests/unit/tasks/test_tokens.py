"""Unit tests for tasks.tokens: cl100k_base token counts, offline."""

from __future__ import annotations

import pytest

from tasks.tokens import ENCODING_NAME, count_tokens


def test_encoding_is_cl100k_base() -> None:
    """Counts are in the cl100k_base encoding."""
    assert ENCODING_NAME == "cl100k_base"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", 2),
        ("Hello, world!", 4),
        ("a", 1),
        (" ", 1),
        ("The quick brown fox jumps over the lazy dog.", 10),
    ],
)
def test_known_counts(text: str, expected: int) -> None:
    """Known texts have their known cl100k_base token counts."""
    assert count_tokens(text) == expected


def test_empty_string_is_zero_tokens() -> None:
    """An empty string holds no tokens."""
    assert count_tokens("") == 0


def test_special_token_text_is_counted_as_text() -> None:
    """Special-token markup is ordinary text: counted, not refused, not one token."""
    assert count_tokens("<|endoftext|>") > 1
    assert count_tokens("before <|endoftext|> after") > count_tokens("before  after")


def test_multi_byte_text_is_counted() -> None:
    """Accented, CJK and emoji text counts at least one token per visible character."""
    for text in ["é", "日本語", "🎉", "👩\u200d👩\u200d👧\u200d👦"]:
        assert count_tokens(text) >= 1
    assert count_tokens("🎉" * 10) >= 10


def test_counts_add_up_at_word_boundaries() -> None:
    """Counting two space-led words separately gives the count of the whole."""
    assert count_tokens("hello world") == count_tokens("hello") + count_tokens(" world")
