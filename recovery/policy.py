"""The retry policy: one table of rules and a pure decision for every failed attempt.

Vocabulary: an *attempt* is numbered from 1 and includes the first run; a *retry* is
any later attempt; *backoff* is the wait before the next attempt; a *time limit*
bounds one attempt (soft: the attempt is asked to stop, hard: it is killed).

:meth:`RetryPolicy.decide` takes the error type of a failed attempt and what the
caller knows about it, and returns a frozen :class:`Decision`. It reads no clock and
touches no queue; randomness comes from an injectable ``random.Random``. The rules:

* A rule with ``retry=False``, or an attempt number that has reached the rule's
  ``max_attempts``, ends the job. Every ending is ``FAIL``, or ``SAVE_PARTIAL`` when
  the caller says partial results exist (``has_partial_results=True``). A rule may
  itself end with ``SAVE_PARTIAL`` (the default for ``PARTIAL_FAILURE``).
* Backoff is exponential with full jitter and a cap: a uniform draw from
  ``[0, min(cap, base * 2 ** (attempt - 1))]`` seconds.
* Only a ``TIMEOUT`` changes time limits: the next attempt's soft limit is the
  failed attempt's times the factor (or, when the caller does not say what it was,
  the limit of attempt ``attempt + 1`` from :class:`TimeLimits`). Any other retry returns ``None``
  for both limits, meaning "keep the limits the failed attempt ran with".
* ``REDUCE_BATCH`` halves the batch size, and goes lower still when the memory
  pressure calls for a smaller batch (:class:`BatchSizing`); never below 1.
* The rules themselves have no defaults here: chunkq's table is in ``config/``.
* ``FALL_BACK`` moves to the next strategy in the fallback chain; when the current
  strategy is the last one, or not in the chain, the job ends.
* ``None`` for ``next_batch_size`` or ``next_strategy`` likewise means unchanged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from recovery.classify import ErrorType

__all__ = [
    "RETRYING_ACTIONS",
    "TERMINAL_ACTIONS",
    "Action",
    "BatchSizing",
    "Decision",
    "ErrorRule",
    "RetryPolicy",
    "TimeLimits",
]


class Action(StrEnum):
    """What to do after a failed attempt."""

    RETRY = "retry"
    REDUCE_BATCH = "reduce_batch"
    FALL_BACK = "fall_back"
    ROUTE_GATED = "route_gated"
    SAVE_PARTIAL = "save_partial"
    FAIL = "fail"


RETRYING_ACTIONS = frozenset(
    {Action.RETRY, Action.REDUCE_BATCH, Action.FALL_BACK, Action.ROUTE_GATED}
)
"""Actions that schedule another attempt."""

TERMINAL_ACTIONS = frozenset({Action.SAVE_PARTIAL, Action.FAIL})
"""Actions that end the job: keep what succeeded, or fail outright."""

_SYSTEM_RNG = random.Random()
_MAX_EXPONENT = 1000  # 2.0 ** 1000 is finite; every real cap is reached long before.


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one failed attempt.

    Attributes:
        action: what to do next.
        backoff_s: seconds to wait before the next attempt; 0.0 when not retrying.
        next_soft_limit_s: soft time limit in seconds for the next attempt, or
            ``None`` to keep the current one (always ``None`` when not retrying).
        next_hard_limit_s: hard time limit in seconds for the next attempt, or
            ``None`` to keep the current one; greater than the soft limit when set.
        next_batch_size: batch size for the next attempt, or ``None`` to keep it.
        next_strategy: strategy for the next attempt, or ``None`` to keep it.
        reason: one sentence naming the error type, the attempt and the action.
        error_type: the error type of the failed attempt.
        attempt: the number of the attempt that failed, from 1.
    """

    action: Action
    backoff_s: float
    next_soft_limit_s: float | None
    next_hard_limit_s: float | None
    next_batch_size: int | None
    next_strategy: str | None
    reason: str
    error_type: ErrorType
    attempt: int

    @property
    def retries(self) -> bool:
        """Whether this decision schedules another attempt."""
        return self.action in RETRYING_ACTIONS


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """How one error type is handled.

    Attributes:
        retry: whether the error type is retried at all.
        max_attempts: attempts allowed in total, the first run included; a failure
            of attempt ``max_attempts`` ends the job.
        backoff_base_s: backoff ceiling in seconds after the first attempt; it
            doubles with each attempt.
        backoff_cap_s: the highest backoff ceiling in seconds.
        action: the action while attempts remain: one of ``RETRYING_ACTIONS`` when
            ``retry`` is true, one of ``TERMINAL_ACTIONS`` otherwise.

    Raises:
        ValueError: on construction, naming the first inconsistent value.
    """

    retry: bool
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    action: Action

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(
                f"max_attempts must be at least 1, got {self.max_attempts}"
            )
        if not 0.0 <= self.backoff_base_s <= self.backoff_cap_s:
            raise ValueError(
                "need 0 <= backoff_base_s <= backoff_cap_s, got "
                f"{self.backoff_base_s} and {self.backoff_cap_s}"
            )
        allowed = RETRYING_ACTIONS if self.retry else TERMINAL_ACTIONS
        if self.action not in allowed:
            raise ValueError(f"action {self.action} does not fit retry={self.retry}")

    def backoff_ceiling_s(self, attempt: int) -> float:
        """Return the highest backoff in seconds after attempt ``attempt`` fails.

        Raises:
            ValueError: when ``attempt`` is below 1.
        """
        _check_attempt(attempt)
        exponent = min(attempt - 1, _MAX_EXPONENT)
        return min(self.backoff_cap_s, self.backoff_base_s * 2.0**exponent)

    def draw_backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Return a full-jitter backoff in seconds, uniform in [0, ceiling].

        Raises:
            ValueError: when ``attempt`` is below 1.
        """
        return rng.uniform(0.0, self.backoff_ceiling_s(attempt))


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """Time limits per attempt: the soft limit grows by ``factor`` with each attempt.

    The hard limit is always the soft limit plus ``hard_grace_s``, so soft < hard on
    every attempt. With the defaults the soft limits are 450.0, 675.0 and 1012.5 s.

    Attributes:
        base_soft_s: soft limit in seconds of attempt 1.
        factor: growth of the soft limit per attempt, at least 1.
        hard_grace_s: seconds from the soft limit to the hard limit, above 0.
        max_soft_s: the highest soft limit in seconds, or ``None`` for no cap.

    Raises:
        ValueError: on construction, naming the first bad value.
    """

    base_soft_s: float = 450.0
    factor: float = 1.5
    hard_grace_s: float = 30.0
    max_soft_s: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.base_soft_s) and self.base_soft_s > 0.0):
            raise ValueError(f"base_soft_s must be positive, got {self.base_soft_s}")
        if not (math.isfinite(self.factor) and self.factor >= 1.0):
            raise ValueError(f"factor must be at least 1, got {self.factor}")
        if not (math.isfinite(self.hard_grace_s) and self.hard_grace_s > 0.0):
            raise ValueError(f"hard_grace_s must be positive, got {self.hard_grace_s}")
        if self.max_soft_s is not None and not self.max_soft_s >= self.base_soft_s:
            raise ValueError(
                f"max_soft_s must be at least base_soft_s, got {self.max_soft_s}"
            )

    def soft_limit_s(self, attempt: int) -> float:
        """Return the soft time limit in seconds for attempt ``attempt``.

        Raises:
            ValueError: when ``attempt`` is below 1.
        """
        _check_attempt(attempt)
        exponent = min(attempt - 1, _MAX_EXPONENT)
        try:
            soft_s = self.base_soft_s * self.factor**exponent
        except OverflowError:
            soft_s = math.inf
        return soft_s if self.max_soft_s is None else min(soft_s, self.max_soft_s)

    def grown_from(self, soft_limit_s: float) -> tuple[float, float]:
        """Return (soft, hard) limits in seconds after a timeout at ``soft_limit_s``.

        The soft limit grows by ``factor`` (up to ``max_soft_s``); the hard limit is
        that plus ``hard_grace_s``.
        """
        soft_s = soft_limit_s * self.factor
        if self.max_soft_s is not None:
            soft_s = min(soft_s, self.max_soft_s)
        return soft_s, soft_s + self.hard_grace_s

    def hard_limit_s(self, attempt: int) -> float:
        """Return the hard time limit in seconds for attempt ``attempt``.

        Raises:
            ValueError: when ``attempt`` is below 1.
        """
        return self.soft_limit_s(attempt) + self.hard_grace_s


_DEFAULT_THRESHOLDS = ((90.0, 4), (80.0, 8), (70.0, 16))


@dataclass(frozen=True, slots=True)
class BatchSizing:
    """Batch size by memory pressure.

    Attributes:
        thresholds: ``(memory_percent_over, batch_size)`` pairs, percents strictly
            descending in [0, 100] and sizes positive and not shrinking as the
            percent falls. The first pair whose percent the pressure is strictly
            over gives the size.
        default_size: the size when the pressure is over no threshold; at least the
            size of the last pair.

    Raises:
        ValueError: on construction, naming the bad value.
    """

    thresholds: tuple[tuple[float, int], ...] = _DEFAULT_THRESHOLDS
    default_size: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(self.thresholds))
        previous: tuple[float, int] | None = None
        for percent, size in self.thresholds:
            _check_threshold(percent, size, previous)
            previous = (percent, size)
        if self.default_size < 1:
            raise ValueError(f"default_size must be positive, got {self.default_size}")
        if previous is not None and self.default_size < previous[1]:
            raise ValueError(
                f"default_size {self.default_size} is below batch size {previous[1]}"
            )

    def batch_size_for(self, memory_percent: float) -> int:
        """Return the batch size for memory pressure ``memory_percent`` (0-100).

        Raises:
            ValueError: when ``memory_percent`` is negative or not a number.
        """
        _check_memory_percent(memory_percent)
        for percent, size in self.thresholds:
            if memory_percent > percent:
                return size
        return self.default_size


def _check_threshold(
    percent: float, size: int, previous: tuple[float, int] | None
) -> None:
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"threshold percent {percent} is outside 0-100")
    if size < 1:
        raise ValueError(f"batch size {size} for threshold {percent} is not positive")
    if previous is None:
        return
    if percent >= previous[0]:
        raise ValueError(f"threshold {percent} does not descend below {previous[0]}")
    if size < previous[1]:
        raise ValueError(
            f"batch size {size} at {percent} is below {previous[1]} at {previous[0]}"
        )


def _check_attempt(attempt: int) -> None:
    if attempt < 1:
        raise ValueError(f"attempt is numbered from 1, got {attempt}")


def _check_memory_percent(memory_percent: float) -> None:
    if not (math.isfinite(memory_percent) and memory_percent >= 0.0):
        raise ValueError(f"memory_percent must be a number >= 0, got {memory_percent}")


@dataclass(frozen=True, slots=True)
class _Failure:
    """What is known about the failed attempt, shared by the decision helpers."""

    error_type: ErrorType
    attempt: int
    rule: ErrorRule
    has_partial_results: bool
    current_soft_limit_s: float | None

    def where(self) -> str:
        return (
            f"{self.error_type} on attempt {self.attempt} of {self.rule.max_attempts}"
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The one retry table: a rule per error type, time limits, sizing, fallbacks.

    Attributes:
        rules: an :class:`ErrorRule` for every :class:`ErrorType`.
        time_limits: time limits per attempt.
        batch_sizing: batch size by memory pressure.
        fallback_chain: strategy names in the order to fall back through; the names
            mean nothing to the policy.

    Raises:
        ValueError: on construction, when an error type has no rule or the fallback
            chain has an empty or repeated name.
    """

    rules: Mapping[ErrorType, ErrorRule]
    time_limits: TimeLimits = field(default_factory=TimeLimits)
    batch_sizing: BatchSizing = field(default_factory=BatchSizing)
    fallback_chain: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = [str(t) for t in ErrorType if t not in self.rules]
        if missing:
            raise ValueError(f"no rule for error types: {', '.join(missing)}")
        object.__setattr__(self, "rules", MappingProxyType(dict(self.rules)))
        object.__setattr__(self, "fallback_chain", tuple(self.fallback_chain))
        if any(not name for name in self.fallback_chain):
            raise ValueError("fallback_chain holds an empty strategy name")
        if len(set(self.fallback_chain)) != len(self.fallback_chain):
            raise ValueError(f"fallback_chain repeats a name: {self.fallback_chain}")

    def with_rule(self, error_type: ErrorType, rule: ErrorRule) -> RetryPolicy:
        """Return a new policy in which ``error_type`` is handled by ``rule``."""
        return replace(self, rules={**self.rules, error_type: rule})

    def decide(
        self,
        *,
        error_type: ErrorType,
        attempt: int,
        current_batch_size: int,
        current_strategy: str,
        memory_percent: float | None = None,
        has_partial_results: bool = False,
        current_soft_limit_s: float | None = None,
        rng: random.Random | None = None,
    ) -> Decision:
        """Decide what follows the failure of attempt ``attempt``.

        Args:
            error_type: the classified error of the failed attempt.
            attempt: the number of the failed attempt, from 1.
            current_batch_size: the batch size the failed attempt used, at least 1.
            current_strategy: the strategy the failed attempt used.
            memory_percent: memory pressure (0-100) now, if known; it only shapes
                ``REDUCE_BATCH``.
            has_partial_results: whether results of earlier work are saved; an
                ending is then ``SAVE_PARTIAL`` instead of ``FAIL``.
            current_soft_limit_s: the soft limit the failed attempt ran with; a
                timeout retry grows it by the factor. Unknown (``None``): the limits
                of attempt ``attempt + 1`` are used.
            rng: source of the backoff jitter; a shared system one when ``None``.

        Raises:
            ValueError: when ``attempt`` or ``current_batch_size`` is below 1, or
                ``memory_percent`` is negative or not a number.
        """
        error_type = ErrorType(error_type)
        _check_attempt(attempt)
        if current_batch_size < 1:
            raise ValueError(
                f"current_batch_size must be positive: {current_batch_size}"
            )
        if memory_percent is not None:
            _check_memory_percent(memory_percent)

        failure = _Failure(
            error_type,
            attempt,
            self.rules[error_type],
            has_partial_results,
            current_soft_limit_s,
        )
        if not failure.rule.retry:
            return _end(failure, f"{error_type} on attempt {attempt} is not retried")
        if attempt >= failure.rule.max_attempts:
            return _end(failure, f"{failure.where()}: attempts exhausted")

        backoff_s = failure.rule.draw_backoff_s(attempt, rng or _SYSTEM_RNG)
        if failure.rule.action is Action.REDUCE_BATCH:
            return self._reduce_batch(
                failure, backoff_s, current_batch_size, memory_percent
            )
        if failure.rule.action is Action.FALL_BACK:
            return self._fall_back(failure, backoff_s, current_strategy)
        return self._retry(failure, backoff_s)

    def _limits(self, failure: _Failure) -> tuple[float | None, float | None]:
        if failure.error_type is not ErrorType.TIMEOUT:
            return None, None
        if failure.current_soft_limit_s is not None:
            return self.time_limits.grown_from(failure.current_soft_limit_s)
        next_attempt = failure.attempt + 1
        return (
            self.time_limits.soft_limit_s(next_attempt),
            self.time_limits.hard_limit_s(next_attempt),
        )

    def _retry(self, failure: _Failure, backoff_s: float) -> Decision:
        soft_s, hard_s = self._limits(failure)
        gated = failure.rule.action is Action.ROUTE_GATED
        verb = "routing to the gated queue" if gated else "retrying"
        limits = ""
        if soft_s is not None and hard_s is not None:
            limits = f" with soft limit {soft_s:g} s and hard limit {hard_s:g} s"
        return _next(
            failure,
            backoff_s,
            reason=f"{failure.where()}; {verb} in {backoff_s:.2f} s{limits}.",
            limits=(soft_s, hard_s),
        )

    def _reduce_batch(
        self,
        failure: _Failure,
        backoff_s: float,
        current_batch_size: int,
        memory_percent: float | None,
    ) -> Decision:
        size = current_batch_size // 2
        pressure = ""
        if memory_percent is not None:
            size = min(size, self.batch_sizing.batch_size_for(memory_percent))
            pressure = f", memory at {memory_percent:g}%"
        size = max(1, size)
        return _next(
            failure,
            backoff_s,
            reason=(
                f"{failure.where()}; retrying in {backoff_s:.2f} s with batch size "
                f"{size} (was {current_batch_size}{pressure})."
            ),
            limits=self._limits(failure),
            batch_size=size,
        )

    def decide_exhaustion(
        self,
        *,
        resource: str,
        usage: float,
        limit: float,
        attempt: int = 1,
        current_batch_size: int | None = None,
        current_strategy: str | None = None,
        rng: random.Random | None = None,
    ) -> Decision:
        """Decide what to do when ``resource`` is at ``usage`` of ``limit``.

        ``usage`` and ``limit`` share a unit (percent, connections, bytes). Memory
        leads to a smaller batch: the size for the pressure, at most half the current
        one, and a batch of 1 (streaming, one document at a time) above 95 %. CPU
        leads to a simpler strategy when there is one, else a wait and retry. Any
        other resource (connections, disk, files) leads to the gated queue. The wait
        is the resource-exhaustion rule's backoff for ``attempt``.

        Raises:
            ValueError: ``limit`` is not positive, or ``attempt`` is below 1.
        """
        _check_attempt(attempt)
        if not limit > 0:
            raise ValueError(f"limit must be positive, got {limit}")
        rule = self.rules[ErrorType.RESOURCE_EXHAUSTION]
        percent = 100.0 * usage / limit
        wait_s = rule.draw_backoff_s(attempt, rng or _SYSTEM_RNG)
        where = f"{resource} at {usage:g} of {limit:g} ({percent:.0f}%)"

        if resource == "memory":
            size = self.batch_sizing.batch_size_for(min(max(percent, 0.0), 100.0))
            if current_batch_size is not None:
                size = min(size, max(1, current_batch_size // 2))
            if percent > STREAMING_PERCENT:
                size = 1
            mode = (
                "streaming one document at a time"
                if size == 1
                else f"batch size {size}"
            )
            return _exhaustion(
                Action.REDUCE_BATCH,
                0.0,
                f"{where}; continuing with {mode}.",
                attempt,
                batch_size=size,
            )
        if resource == "cpu":
            simpler = self.next_strategy(current_strategy) if current_strategy else None
            if simpler is not None:
                return _exhaustion(
                    Action.FALL_BACK,
                    0.0,
                    f"{where}; switching from {current_strategy!r} to {simpler!r}.",
                    attempt,
                    strategy=simpler,
                )
            return _exhaustion(
                Action.RETRY, wait_s, f"{where}; retrying in {wait_s:.2f} s.", attempt
            )
        return _exhaustion(
            Action.ROUTE_GATED,
            wait_s,
            f"{where}; waiting for a permit in the gated queue.",
            attempt,
        )

    def next_strategy(self, current_strategy: str) -> str | None:
        """Return the strategy after ``current_strategy`` in the chain, or ``None``."""
        chain = self.fallback_chain
        if current_strategy not in chain:
            return None
        position = chain.index(current_strategy)
        return chain[position + 1] if position + 1 < len(chain) else None

    def _fall_back(
        self, failure: _Failure, backoff_s: float, current_strategy: str
    ) -> Decision:
        chain = self.fallback_chain
        if current_strategy not in chain:
            return _end(
                failure,
                f"{failure.where()}: strategy {current_strategy!r} is not in the "
                f"fallback chain {chain}",
            )
        position = chain.index(current_strategy)
        if position == len(chain) - 1:
            return _end(
                failure,
                f"{failure.where()}: strategy {current_strategy!r} is the last in the "
                "fallback chain",
            )
        strategy = chain[position + 1]
        return _next(
            failure,
            backoff_s,
            reason=(
                f"{failure.where()}; falling back from {current_strategy!r} to "
                f"{strategy!r} in {backoff_s:.2f} s."
            ),
            limits=self._limits(failure),
            strategy=strategy,
        )


STREAMING_PERCENT = 95.0
"""Memory pressure above which work goes one document at a time, in percent."""


def _exhaustion(
    action: Action,
    wait_s: float,
    reason: str,
    attempt: int,
    *,
    batch_size: int | None = None,
    strategy: str | None = None,
) -> Decision:
    return Decision(
        action=action,
        backoff_s=wait_s,
        next_soft_limit_s=None,
        next_hard_limit_s=None,
        next_batch_size=batch_size,
        next_strategy=strategy,
        reason=reason,
        error_type=ErrorType.RESOURCE_EXHAUSTION,
        attempt=attempt,
    )


def _next(
    failure: _Failure,
    backoff_s: float,
    *,
    reason: str,
    limits: tuple[float | None, float | None],
    batch_size: int | None = None,
    strategy: str | None = None,
) -> Decision:
    return Decision(
        action=failure.rule.action,
        backoff_s=backoff_s,
        next_soft_limit_s=limits[0],
        next_hard_limit_s=limits[1],
        next_batch_size=batch_size,
        next_strategy=strategy,
        reason=reason,
        error_type=failure.error_type,
        attempt=failure.attempt,
    )


def _end(failure: _Failure, why: str) -> Decision:
    if failure.has_partial_results or failure.rule.action is Action.SAVE_PARTIAL:
        action, outcome = Action.SAVE_PARTIAL, "saving partial results and stopping"
    else:
        action, outcome = Action.FAIL, "failing"
    return Decision(
        action=action,
        backoff_s=0.0,
        next_soft_limit_s=None,
        next_hard_limit_s=None,
        next_batch_size=None,
        next_strategy=None,
        reason=f"{why}; {outcome}.",
        error_type=failure.error_type,
        attempt=failure.attempt,
    )
