"""Unit tests for recovery.correlation: ids, scopes and the log filter."""

from __future__ import annotations

import logging

from recovery.correlation import (
    NO_CORRELATION_ID,
    CorrelationIdFilter,
    accept,
    bind,
    correlation_scope,
    current_correlation_id,
    ensure_correlation_id,
    unbind,
)


def _record() -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, "event.name", None, None)


def test_accept_takes_safe_ids_only() -> None:
    """Safe ids pass; spaces, separators, non-strings and long values do not."""
    assert accept("req-1.a_b") == "req-1.a_b"
    assert accept("bad id") is None
    assert accept("a:b") is None
    assert accept("x" * 65) is None
    assert accept(42) is None


def test_scope_binds_and_restores() -> None:
    """A scope binds its id and restores the previous one after the block."""
    assert current_correlation_id() is None
    with correlation_scope("outer") as outer:
        with correlation_scope("inner"):
            assert current_correlation_id() == "inner"
        assert current_correlation_id() == outer == "outer"
    assert current_correlation_id() is None


def test_scope_replaces_an_unsafe_id_with_a_fresh_one() -> None:
    """An unsafe id given to a scope is not bound; a fresh one is."""
    with correlation_scope("no spaces allowed") as chosen:
        assert chosen != "no spaces allowed"
        assert accept(chosen) == chosen


def test_ensure_does_not_bind() -> None:
    """ensure_correlation_id makes an id without binding it."""
    made = ensure_correlation_id()
    assert accept(made) == made
    assert current_correlation_id() is None


def test_filter_sets_the_bound_id_or_a_dash() -> None:
    """The log filter adds correlation_id: the bound one, or '-' outside any scope."""
    log_filter = CorrelationIdFilter()
    outside = _record()
    log_filter.filter(outside)
    token = bind("abc")
    inside = _record()
    try:
        log_filter.filter(inside)
    finally:
        unbind(token)

    assert outside.correlation_id == NO_CORRELATION_ID
    assert inside.correlation_id == "abc"


def test_filter_keeps_an_id_given_in_extra() -> None:
    """A record that carries its own correlation_id keeps it."""
    record = _record()
    record.correlation_id = "given"
    with correlation_scope("bound"):
        CorrelationIdFilter().filter(record)
    assert record.correlation_id == "given"


def test_asgi_middleware_id_is_picked_up() -> None:
    """asgi-correlation-id's context variable is read when chunkq's is unbound."""
    from asgi_correlation_id.context import correlation_id  # noqa: PLC0415

    token = correlation_id.set("from-asgi")
    try:
        assert current_correlation_id() == "from-asgi"
        with correlation_scope("own"):
            assert current_correlation_id() == "own"
    finally:
        correlation_id.reset(token)
