"""Unit tests for recovery.policy: backoff, time limits, batch sizing, decisions."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from config.policy import retry_policy
from config.settings import Settings
from recovery.classify import ErrorType
from recovery.policy import (
    RETRYING_ACTIONS,
    TERMINAL_ACTIONS,
    Action,
    BatchSizing,
    Decision,
    ErrorRule,
    RetryPolicy,
    TimeLimits,
)

POLICY = retry_policy(Settings(fallback_chain=("semantic", "recursive", "characters")))


def _decide(
    error_type: ErrorType,
    attempt: int = 1,
    *,
    current_batch_size: int = 32,
    current_strategy: str = "semantic",
    memory_percent: float | None = None,
    has_partial_results: bool = False,
    rng: random.Random | None = None,
) -> Decision:
    return POLICY.decide(
        error_type=error_type,
        attempt=attempt,
        current_batch_size=current_batch_size,
        current_strategy=current_strategy,
        memory_percent=memory_percent,
        has_partial_results=has_partial_results,
        rng=random.Random(7) if rng is None else rng,
    )


def _rule(**overrides: object) -> ErrorRule:
    fields: dict[str, object] = {
        "retry": True,
        "max_attempts": 10,
        "backoff_base_s": 2.0,
        "backoff_cap_s": 30.0,
        "action": Action.RETRY,
    }
    fields.update(overrides)
    return ErrorRule(**fields)  # type: ignore[arg-type]


# Backoff


@pytest.mark.parametrize(
    ("attempt", "ceiling_s"),
    [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (6, 30.0), (500, 30.0)],
)
def test_backoff_ceiling_doubles_then_caps(attempt: int, ceiling_s: float) -> None:
    """The ceiling is base * 2 ** (attempt - 1), never above the cap."""
    assert _rule().backoff_ceiling_s(attempt) == ceiling_s


def test_backoff_ceiling_survives_huge_attempt() -> None:
    """A huge attempt number gives the cap instead of overflowing."""
    assert _rule().backoff_ceiling_s(10**6) == 30.0


def test_full_jitter_within_bounds_with_seeded_rng() -> None:
    """Every draw lies in [0, ceiling] and the draws spread over that range."""
    rule = _rule()
    rng = random.Random(1234)
    for attempt in range(1, 8):
        ceiling_s = rule.backoff_ceiling_s(attempt)
        draws = [rule.draw_backoff_s(attempt, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling_s for d in draws)
        assert min(draws) < 0.1 * ceiling_s
        assert max(draws) > 0.9 * ceiling_s


def test_full_jitter_is_reproducible() -> None:
    """The same seed gives the same backoff."""
    first = _decide(ErrorType.TRANSIENT_CONNECTION, 2, rng=random.Random(99))
    second = _decide(ErrorType.TRANSIENT_CONNECTION, 2, rng=random.Random(99))
    assert first.backoff_s == second.backoff_s


def test_decision_backoff_respects_cap() -> None:
    """Decided backoffs never pass the rule's cap, even late in the attempts."""
    rule = POLICY.rules[ErrorType.RESOURCE_EXHAUSTION]
    rng = random.Random(5)
    for _ in range(200):
        decision = _decide(ErrorType.RESOURCE_EXHAUSTION, 4, rng=rng)
        assert 0.0 <= decision.backoff_s <= rule.backoff_cap_s
        assert decision.backoff_s <= rule.backoff_ceiling_s(4)


def test_decide_without_rng_uses_system_randomness() -> None:
    """Without an rng the backoff is still within the ceiling."""
    decision = POLICY.decide(
        error_type=ErrorType.TRANSIENT_CONNECTION,
        attempt=1,
        current_batch_size=8,
        current_strategy="semantic",
    )
    ceiling_s = POLICY.rules[ErrorType.TRANSIENT_CONNECTION].backoff_ceiling_s(1)
    assert 0.0 <= decision.backoff_s <= ceiling_s


def test_zero_base_gives_zero_backoff() -> None:
    """A zero base means no wait at all."""
    rule = _rule(backoff_base_s=0.0, backoff_cap_s=0.0)
    assert rule.draw_backoff_s(3, random.Random(1)) == 0.0


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_attempts": 0},
        {"backoff_base_s": -1.0},
        {"backoff_base_s": 40.0, "backoff_cap_s": 30.0},
        {"retry": True, "action": Action.FAIL},
        {"retry": False, "action": Action.RETRY},
    ],
)
def test_inconsistent_rule_rejected(overrides: dict[str, object]) -> None:
    """An ErrorRule with a contradictory or impossible value raises ValueError."""
    with pytest.raises(ValueError):
        _rule(**overrides)


# Time limits


def test_soft_limits_grow_450_675_1012_5() -> None:
    """The default soft limits are 450, 675 and 1012.5 seconds."""
    limits = TimeLimits()
    assert [limits.soft_limit_s(a) for a in (1, 2, 3)] == [450.0, 675.0, 1012.5]
    assert math.floor(limits.soft_limit_s(3)) == 1012


def test_soft_below_hard_on_every_attempt() -> None:
    """The hard limit exceeds the soft limit on every attempt, capped or not."""
    for limits in (TimeLimits(), TimeLimits(max_soft_s=700.0)):
        for attempt in range(1, 60):
            assert limits.soft_limit_s(attempt) < limits.hard_limit_s(attempt)


def test_hard_limit_is_soft_plus_grace() -> None:
    """The hard limit is the soft limit plus the grace."""
    assert TimeLimits().hard_limit_s(2) == 675.0 + 30.0


def test_max_soft_caps_growth() -> None:
    """max_soft_s caps the soft limit and with it the hard limit."""
    limits = TimeLimits(max_soft_s=700.0)
    assert limits.soft_limit_s(2) == 675.0
    assert limits.soft_limit_s(3) == 700.0
    assert limits.hard_limit_s(9) == 730.0


def test_limits_survive_huge_attempt() -> None:
    """A huge attempt number does not overflow and the cap still applies."""
    assert TimeLimits(max_soft_s=900.0).soft_limit_s(10**6) == 900.0
    assert TimeLimits(factor=10.0).soft_limit_s(10**6) == math.inf


@pytest.mark.parametrize(
    "overrides",
    [
        {"base_soft_s": 0.0},
        {"base_soft_s": math.nan},
        {"factor": 0.9},
        {"hard_grace_s": 0.0},
        {"max_soft_s": 100.0},
    ],
)
def test_bad_time_limits_rejected(overrides: dict[str, float]) -> None:
    """TimeLimits refuses values that break soft < hard or shrink the limits."""
    with pytest.raises(ValueError):
        TimeLimits(**overrides)


def test_attempt_zero_rejected() -> None:
    """Attempts are numbered from 1; attempt 0 raises ValueError."""
    with pytest.raises(ValueError, match="from 1"):
        TimeLimits().soft_limit_s(0)
    with pytest.raises(ValueError, match="from 1"):
        _rule().backoff_ceiling_s(0)


# Batch sizing


@pytest.mark.parametrize(
    ("memory_percent", "size"),
    [
        (95.0, 4),
        (85.0, 8),
        (75.0, 16),
        (50.0, 32),
        (90.0, 8),
        (90.01, 4),
        (80.0, 16),
        (70.0, 32),
        (70.5, 16),
        (0.0, 32),
        (120.0, 4),
    ],
)
def test_batch_size_for_pressure(memory_percent: float, size: int) -> None:
    """Sizes at 95/85/75/50 percent, and exact thresholds count as not over."""
    assert BatchSizing().batch_size_for(memory_percent) == size


@pytest.mark.parametrize("memory_percent", [-1.0, math.nan, math.inf])
def test_batch_size_rejects_bad_percent(memory_percent: float) -> None:
    """A negative or non-finite percent raises ValueError instead of guessing."""
    with pytest.raises(ValueError, match="memory_percent"):
        BatchSizing().batch_size_for(memory_percent)


@pytest.mark.parametrize(
    ("thresholds", "default_size", "named"),
    [
        (((80.0, 8), (90.0, 4)), 32, "90.0"),
        (((90.0, 4), (90.0, 8)), 32, "90.0"),
        (((90.0, 0), (80.0, 8)), 32, "0"),
        (((90.0, 4), (80.0, -2)), 32, "-2"),
        (((90.0, 8), (80.0, 4)), 32, "4"),
        (((150.0, 4),), 32, "150.0"),
        (((90.0, 4),), 0, "0"),
        (((90.0, 16),), 8, "8"),
    ],
)
def test_bad_thresholds_rejected(
    thresholds: tuple[tuple[float, int], ...], default_size: int, named: str
) -> None:
    """Invalid thresholds raise ValueError naming the bad value."""
    with pytest.raises(ValueError, match=named):
        BatchSizing(thresholds=thresholds, default_size=default_size)


def test_no_thresholds_means_default_size() -> None:
    """Without thresholds every pressure gets the default size."""
    assert BatchSizing(thresholds=(), default_size=10).batch_size_for(99.0) == 10


# Decisions


def test_defaults_cover_every_error_type() -> None:
    """The default policy has a rule for every error type."""
    assert set(POLICY.rules) == set(ErrorType)


def test_timeout_retry_grows_limits() -> None:
    """A timeout retries with the limits of the next attempt."""
    first = _decide(ErrorType.TIMEOUT, 1)
    second = _decide(ErrorType.TIMEOUT, 2)

    assert first.action is Action.RETRY
    assert (first.next_soft_limit_s, first.next_hard_limit_s) == (675.0, 705.0)
    assert (second.next_soft_limit_s, second.next_hard_limit_s) == (1012.5, 1042.5)
    assert "675" in first.reason


def test_timeout_exhausted_after_three_attempts() -> None:
    """The third timed-out attempt ends the job."""
    decision = _decide(ErrorType.TIMEOUT, 3)
    assert decision.action is Action.FAIL
    assert not decision.retries


@pytest.mark.parametrize(
    "error_type",
    [ErrorType.TRANSIENT_CONNECTION, ErrorType.WORKER_LOST, ErrorType.UNKNOWN],
)
def test_other_retries_keep_limits(error_type: ErrorType) -> None:
    """Retries other than timeouts leave the limits unchanged (None)."""
    decision = _decide(error_type, 1)
    assert decision.action is Action.RETRY
    assert decision.retries
    assert decision.next_soft_limit_s is None
    assert decision.next_hard_limit_s is None
    assert decision.next_batch_size is None
    assert decision.next_strategy is None


def test_memory_halves_batch() -> None:
    """Without a pressure reading a memory error halves the batch."""
    decision = _decide(ErrorType.MEMORY, 1, current_batch_size=32)
    assert decision.action is Action.REDUCE_BATCH
    assert decision.next_batch_size == 16
    assert decision.next_soft_limit_s is None


def test_memory_follows_pressure_when_lower() -> None:
    """High pressure shrinks the batch below half."""
    decision = _decide(ErrorType.MEMORY, 1, current_batch_size=32, memory_percent=95.0)
    assert decision.next_batch_size == 4
    assert "95" in decision.reason


def test_memory_halving_wins_when_lower_than_pressure_size() -> None:
    """Low pressure never raises the batch above half the current size."""
    decision = _decide(ErrorType.MEMORY, 1, current_batch_size=10, memory_percent=50.0)
    assert decision.next_batch_size == 5


@pytest.mark.parametrize("current", [1, 2, 3])
def test_memory_batch_never_below_one(current: int) -> None:
    """The reduced batch size is at least 1."""
    decision = _decide(ErrorType.MEMORY, 1, current_batch_size=current)
    assert decision.next_batch_size == max(1, current // 2)


def test_resource_exhaustion_routes_to_gated_queue() -> None:
    """Resource exhaustion retries through the gated queue."""
    decision = _decide(ErrorType.RESOURCE_EXHAUSTION, 1)
    assert decision.action is Action.ROUTE_GATED
    assert decision.retries
    assert "gated" in decision.reason


def test_strategy_falls_back_along_chain() -> None:
    """A strategy error moves to the next strategy in the chain."""
    first = _decide(ErrorType.STRATEGY, 1, current_strategy="semantic")
    second = _decide(ErrorType.STRATEGY, 2, current_strategy="recursive")

    assert first.action is Action.FALL_BACK
    assert first.next_strategy == "recursive"
    assert second.next_strategy == "characters"
    assert "'semantic'" in first.reason


def test_strategy_end_of_chain_fails() -> None:
    """The last strategy in the chain has nothing to fall back to."""
    decision = _decide(ErrorType.STRATEGY, 1, current_strategy="characters")
    assert decision.action is Action.FAIL
    assert decision.next_strategy is None
    assert "last" in decision.reason


def test_strategy_not_in_chain_fails() -> None:
    """A strategy the chain does not know cannot be fallen back from."""
    decision = _decide(ErrorType.STRATEGY, 1, current_strategy="mystery")
    assert decision.action is Action.FAIL
    assert "not in the fallback chain" in decision.reason


def test_invalid_input_not_retried() -> None:
    """Invalid input fails on the first attempt with no backoff."""
    decision = _decide(ErrorType.INVALID_INPUT, 1)
    assert decision.action is Action.FAIL
    assert not decision.retries
    assert decision.backoff_s == 0.0
    assert "not retried" in decision.reason


def test_invalid_input_with_partial_results_saves_them() -> None:
    """An ending with partial results saved is SAVE_PARTIAL, also for invalid input."""
    decision = _decide(ErrorType.INVALID_INPUT, 1, has_partial_results=True)
    assert decision.action is Action.SAVE_PARTIAL


def test_partial_failure_saves_partial() -> None:
    """A partial failure keeps what succeeded and stops."""
    decision = _decide(ErrorType.PARTIAL_FAILURE, 1)
    assert decision.action is Action.SAVE_PARTIAL
    assert not decision.retries


@pytest.mark.parametrize("error_type", [t for t in ErrorType if POLICY.rules[t].retry])
def test_exhaustion_fails_without_partial_results(error_type: ErrorType) -> None:
    """At the last allowed attempt every retried type ends with FAIL."""
    attempt = POLICY.rules[error_type].max_attempts
    decision = _decide(error_type, attempt)
    assert decision.action is Action.FAIL
    assert decision.backoff_s == 0.0
    assert decision.next_batch_size is None
    assert "exhausted" in decision.reason


@pytest.mark.parametrize("error_type", [t for t in ErrorType if POLICY.rules[t].retry])
def test_exhaustion_saves_partial_results(error_type: ErrorType) -> None:
    """At the last allowed attempt, partial results turn FAIL into SAVE_PARTIAL."""
    attempt = POLICY.rules[error_type].max_attempts
    decision = _decide(error_type, attempt, has_partial_results=True)
    assert decision.action is Action.SAVE_PARTIAL


def test_partial_results_do_not_stop_retries() -> None:
    """has_partial_results changes only endings, not retries."""
    decision = _decide(ErrorType.TRANSIENT_CONNECTION, 1, has_partial_results=True)
    assert decision.action is Action.RETRY


def test_beyond_max_attempts_also_ends() -> None:
    """An attempt number past max_attempts ends the job too."""
    assert _decide(ErrorType.UNKNOWN, 9).action is Action.FAIL


def test_reason_names_error_type_and_attempt() -> None:
    """Every decision's reason names the error type and the failed attempt."""
    for error_type in ErrorType:
        for attempt in (1, 2):
            decision = _decide(error_type, attempt)
            assert str(error_type) in decision.reason
            assert f"attempt {attempt}" in decision.reason
            assert decision.reason.endswith(".")
            assert decision.error_type is error_type
            assert decision.attempt == attempt


def test_decision_is_frozen() -> None:
    """A decision cannot be changed after it is made."""
    decision = _decide(ErrorType.TIMEOUT, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.backoff_s = 0.0  # type: ignore[misc]


def test_retries_property_matches_action_sets() -> None:
    """retries is true exactly for retrying actions."""
    assert RETRYING_ACTIONS.isdisjoint(TERMINAL_ACTIONS)
    assert set(Action) == RETRYING_ACTIONS | TERMINAL_ACTIONS


@pytest.mark.parametrize(
    ("attempt", "batch_size", "memory_percent"),
    [(0, 8, None), (1, 0, None), (1, 8, -5.0), (1, 8, float("nan"))],
)
def test_decide_rejects_bad_inputs(
    attempt: int, batch_size: int, memory_percent: float | None
) -> None:
    """decide raises ValueError for impossible inputs."""
    with pytest.raises(ValueError):
        _decide(
            ErrorType.MEMORY,
            attempt,
            current_batch_size=batch_size,
            memory_percent=memory_percent,
        )


def test_policy_requires_every_error_type() -> None:
    """A policy missing a rule raises ValueError naming the error type."""
    rules = dict(POLICY.rules)
    del rules[ErrorType.WORKER_LOST]
    with pytest.raises(ValueError, match="worker_lost"):
        RetryPolicy(rules=rules)


@pytest.mark.parametrize("chain", [("a", "a"), ("a", "")])
def test_bad_fallback_chain_rejected(chain: tuple[str, ...]) -> None:
    """A chain with a repeated or empty name raises ValueError."""
    with pytest.raises(ValueError, match="fallback_chain"):
        RetryPolicy(rules=POLICY.rules, fallback_chain=chain)


def test_policy_is_immutable() -> None:
    """The policy's rules cannot be changed in place; with_rule makes a new policy."""
    with pytest.raises(TypeError):
        POLICY.rules[ErrorType.MEMORY] = _rule()  # type: ignore[index]

    changed = POLICY.with_rule(ErrorType.UNKNOWN, _rule(max_attempts=5))

    assert changed.rules[ErrorType.UNKNOWN].max_attempts == 5
    assert POLICY.rules[ErrorType.UNKNOWN].max_attempts == 2


def test_custom_chain_is_opaque() -> None:
    """Strategy names are opaque strings taken from the configured chain."""
    policy = RetryPolicy(rules=POLICY.rules, fallback_chain=("fast", "safe"))
    decision = policy.decide(
        error_type=ErrorType.STRATEGY,
        attempt=1,
        current_batch_size=4,
        current_strategy="fast",
        rng=random.Random(0),
    )
    assert decision.next_strategy == "safe"


def test_timeout_grows_the_limit_the_attempt_ran_with() -> None:
    """A timeout after a 675 s attempt gives 1012.5 s, whatever the attempt number."""
    decision = POLICY.decide(
        error_type=ErrorType.TIMEOUT,
        attempt=1,
        current_batch_size=8,
        current_strategy="recursive",
        current_soft_limit_s=675.0,
    )

    assert decision.next_soft_limit_s == 1012.5
    assert decision.next_hard_limit_s == 1042.5


def test_next_strategy_walks_the_chain() -> None:
    """next_strategy gives the following name, and None at the end or off the chain."""
    assert POLICY.next_strategy("semantic") == "recursive"
    assert POLICY.next_strategy("characters") is None
    assert POLICY.next_strategy("elsewhere") is None
