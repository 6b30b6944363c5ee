"""Unit tests for the pure helpers of worker.cli: URL redaction and the summary text."""

from __future__ import annotations

from typing import Any

import pytest

from worker.cli import _redacted, _summary_text


def _summary(**overrides: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "status": "done",
        "documents_done": 12,
        "documents_failed": 0,
        "documents_total": 12,
        "chunks": 345,
        "bytes_in": 5_000_000,
        "bytes_out": 7_500_000,
        "output_dir": "/data/out",
        "operation_id": "op-1",
        "failures": {},
    }
    summary.update(overrides)
    return summary


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@cache.example:6379/0", "redis://***@cache.example:6379/0"),
        (
            "redis://user:s3cret@cache.example:6379/0",
            "redis://***@cache.example:6379/0",
        ),
        ("rediss://user:s3cret@cache.example/1", "rediss://***@cache.example/1"),
        ("redis://user:p@ss@w0rd@cache.example:6379", "redis://***@cache.example:6379"),
    ],
)
def test_redacted_hides_passwords(url: str, expected: str) -> None:
    """Credentials before the host are replaced by '***', the host is kept."""
    redacted = _redacted(url)

    assert redacted == expected
    assert "s3cret" not in redacted
    assert "w0rd" not in redacted


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "redis://cache.example", "unix:///tmp/redis.sock"],
)
def test_redacted_keeps_urls_without_credentials(url: str) -> None:
    """A URL without credentials is shown unchanged."""
    assert _redacted(url) == url


def test_summary_shows_documents_chunks_and_speed() -> None:
    """The summary names documents, chunks, input MB, MB/s, output and operation."""
    text = _summary_text(_summary(), elapsed_s=2.0)

    assert "12 done, 0 failed, 12 in all" in text
    assert "chunks     345" in text
    assert "5.00 MB in 2.00 s" in text
    assert "(2.5 MB/s)" in text
    assert "/data/out (7.50 MB)" in text
    assert "op-1" in text
    assert "status     done" in text
    assert "failed     " not in text


def test_summary_survives_zero_elapsed_time() -> None:
    """A zero elapsed time does not divide by zero."""
    text = _summary_text(_summary(bytes_in=0), elapsed_s=0.0)

    assert "0.00 MB in 0.00 s" in text


def test_summary_lists_failures() -> None:
    """Each failed document is listed with its reason."""
    failures = {"bad.bin": "it is binary (holds NUL bytes)", "x.txt": "not valid UTF-8"}
    summary = _summary(
        status="partial", documents_done=10, documents_failed=2, failures=failures
    )

    text = _summary_text(summary, elapsed_s=1.0)

    assert "2 failed" in text
    assert "failed     bad.bin: it is binary (holds NUL bytes)" in text
    assert "failed     x.txt: not valid UTF-8" in text
    assert "more failures" not in text


def test_summary_caps_listed_failures_at_ten() -> None:
    """Past ten failures the rest are counted, not listed."""
    failures = {f"doc{n}.md": "unreadable" for n in range(15)}
    summary = _summary(
        documents_done=0, documents_failed=15, documents_total=15, failures=failures
    )

    lines = _summary_text(summary, elapsed_s=1.0).splitlines()

    assert sum(line.startswith("failed     ") for line in lines) == 10
    assert lines[-1].strip() == "... 5 more failures"


def test_summary_without_failures_key() -> None:
    """A summary with no failures mapping still renders."""
    summary = _summary()
    del summary["failures"]

    assert "chunks     345" in _summary_text(summary, elapsed_s=1.0)
