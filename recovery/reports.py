"""Error reports: what went wrong with an operation, and what to change.

:func:`build_report` turns everything saved about an operation (a
:class:`recovery.handler.ResumeResult`) into an :class:`ErrorReport`: status,
correlation ids, counts per error type, a timeline, the attempts and how each
ended, memory pressure at the errors, and recommendations derived from the pattern.
:func:`analyze_patterns` looks across operations over a time window, for alerting.
Both are pure; the handler reads Redis and calls them. The history behind a report
is capped (100 records per operation by default), so counts cover the records kept.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from recovery.classify import ErrorType
from recovery.handler import ErrorRecord, ResumeResult

RECOMMENDATION_MIN_REPEATS = 2


class AttemptView(BaseModel):
    """One attempt as a report shows it."""

    attempt: int
    started_at_s: float | None
    worker: str | None
    queue: str | None
    soft_limit_s: float | None
    hard_limit_s: float | None
    outcome: str | None


class ResourceUsage(BaseModel):
    """Memory pressure at the recorded errors, in percent."""

    samples: int
    memory_percent_min: float | None
    memory_percent_max: float | None
    memory_percent_mean: float | None


class ErrorReport(BaseModel):
    """What went wrong with one operation."""

    operation_id: str
    status: str
    correlation_ids: list[str]
    error_breakdown: dict[str, int]
    timeline: list[ErrorRecord]
    recovery_attempts: list[AttemptView]
    resource_usage: ResourceUsage
    recommendations: list[str]
    documents_failed: dict[str, str]


class PatternReport(BaseModel):
    """Errors across operations within a time window."""

    window_s: float
    operations: int
    errors: int
    counts: dict[str, int]
    trend: dict[str, str]
    """Error type to ``rising``, ``falling`` or ``steady`` (second half against first)."""
    top_failing_items: list[tuple[str, int]]


_ADVICE: dict[ErrorType, str] = {
    ErrorType.MEMORY: (
        "repeated memory errors: lower CHUNKQ_BATCH_THRESHOLDS or CHUNKQ_BATCH_SIZE_DEFAULT, "
        "or give the worker more memory"
    ),
    ErrorType.TIMEOUT: (
        "repeated timeouts: raise CHUNKQ_SOFT_TIME_LIMIT_S or split the largest documents"
    ),
    ErrorType.TRANSIENT_CONNECTION: (
        "repeated connection errors: check the network and Redis; raise "
        "max_attempts of transient_connection in CHUNKQ_RETRY_RULES if they are brief"
    ),
    ErrorType.RESOURCE_EXHAUSTION: (
        "resources ran out repeatedly: free disk or file descriptors, or adjust "
        "CHUNKQ_GATE_PERMITS to what the machine can bear"
    ),
    ErrorType.WORKER_LOST: (
        "the worker died repeatedly: a document may crash it or the machine kills it "
        "for memory; look at the dead letter and the worker's logs"
    ),
    ErrorType.STRATEGY: (
        "strategies failed repeatedly: put a simpler strategy first or extend "
        "CHUNKQ_FALLBACK_CHAIN"
    ),
    ErrorType.INVALID_INPUT: "invalid input: fix what the message names; retrying will not help",
    ErrorType.UNKNOWN: (
        "unexpected errors: the worker logged them at ERROR with a traceback; report them"
    ),
}


def recommendations(errors: Iterable[ErrorRecord]) -> list[str]:
    """Return advice for the error types that recur (invalid input: at once)."""
    counts = Counter(record.error_type for record in errors)
    advice = []
    for error_type, text in _ADVICE.items():
        count = counts.get(error_type, 0)
        needed = (
            1 if error_type is ErrorType.INVALID_INPUT else RECOMMENDATION_MIN_REPEATS
        )
        if count >= needed:
            advice.append(f"{text} ({count} recorded)")
    return advice


def build_report(saved: ResumeResult) -> ErrorReport:
    """Return the error report of an operation from what was saved about it."""
    errors = saved.errors
    pressures = [e.memory_percent for e in errors if e.memory_percent is not None]
    correlation_ids = list(
        dict.fromkeys(
            [saved.state.get("correlation_id", "")] + [e.correlation_id for e in errors]
        )
    )
    return ErrorReport(
        operation_id=saved.operation_id,
        status=saved.state.get("status", "unknown"),
        correlation_ids=[cid for cid in correlation_ids if cid],
        error_breakdown=dict(Counter(str(e.error_type) for e in errors)),
        timeline=sorted(errors, key=lambda record: record.at_s),
        recovery_attempts=[
            _attempt_view(number, record, saved.outcomes.get(number))
            for number, record in sorted(saved.attempt_records.items())
        ],
        resource_usage=ResourceUsage(
            samples=len(pressures),
            memory_percent_min=min(pressures, default=None),
            memory_percent_max=max(pressures, default=None),
            memory_percent_mean=round(statistics.fmean(pressures), 1)
            if pressures
            else None,
        ),
        recommendations=recommendations(errors),
        documents_failed=dict(saved.checkpoint.failed),
    )


def analyze_patterns(
    errors_by_operation: Mapping[str, list[ErrorRecord]],
    failed_items: Mapping[str, Mapping[str, str]],
    *,
    now_s: float,
    window_s: float,
    top: int = 10,
) -> PatternReport:
    """Count errors per type within the window, their trend, and the top failing items."""
    start_s = now_s - window_s
    middle_s = now_s - window_s / 2
    recent = [
        record
        for records in errors_by_operation.values()
        for record in records
        if record.at_s >= start_s
    ]
    counts = Counter(str(record.error_type) for record in recent)
    early = Counter(str(r.error_type) for r in recent if r.at_s < middle_s)
    late = Counter(str(r.error_type) for r in recent if r.at_s >= middle_s)
    items = Counter(item for failed in failed_items.values() for item in failed)
    return PatternReport(
        window_s=window_s,
        operations=sum(
            1
            for records in errors_by_operation.values()
            if any(r.at_s >= start_s for r in records)
        ),
        errors=len(recent),
        counts=dict(counts),
        trend={name: _trend(early[name], late[name]) for name in counts},
        top_failing_items=items.most_common(top),
    )


def _trend(early: int, late: int) -> str:
    if late > early:
        return "rising"
    if late < early:
        return "falling"
    return "steady"


def _attempt_view(
    number: int, record: Mapping[str, Any], outcome: str | None
) -> AttemptView:
    return AttemptView(
        attempt=number,
        started_at_s=record.get("at_s"),
        worker=record.get("worker"),
        queue=record.get("queue"),
        soft_limit_s=record.get("soft_limit_s"),
        hard_limit_s=record.get("hard_limit_s"),
        outcome=outcome,
    )
