"""Unit tests for recovery.classify: default table, extension, predicates, causes."""

from __future__ import annotations

import errno
import pickle

import celery.exceptions
import kombu.exceptions
import pytest
import redis.exceptions

from recovery.classify import (
    DEFAULT_TABLE,
    ClassificationTable,
    ErrorType,
    InvalidInputError,
    PartialFailureError,
    ResourceExhaustedError,
    StrategyError,
    classify,
)
from recovery.errors import InvalidIdError, RecoveryError


def _os_error(code: int) -> OSError:
    return OSError(code, f"errno {code}")


DEFAULT_CASES: list[tuple[BaseException, ErrorType]] = [
    (MemoryError(), ErrorType.MEMORY),
    (celery.exceptions.SoftTimeLimitExceeded(), ErrorType.TIMEOUT),
    (celery.exceptions.TimeLimitExceeded(450.0), ErrorType.TIMEOUT),
    (celery.exceptions.WorkerLostError("gone"), ErrorType.WORKER_LOST),
    (redis.exceptions.ConnectionError("refused"), ErrorType.TRANSIENT_CONNECTION),
    (redis.exceptions.TimeoutError("slow"), ErrorType.TRANSIENT_CONNECTION),
    (redis.exceptions.BusyLoadingError("loading"), ErrorType.TRANSIENT_CONNECTION),
    (kombu.exceptions.OperationalError("broker"), ErrorType.TRANSIENT_CONNECTION),
    (ConnectionError(), ErrorType.TRANSIENT_CONNECTION),
    (ConnectionRefusedError(), ErrorType.TRANSIENT_CONNECTION),
    (ConnectionResetError(), ErrorType.TRANSIENT_CONNECTION),
    (BrokenPipeError(), ErrorType.TRANSIENT_CONNECTION),
    (TimeoutError(), ErrorType.TRANSIENT_CONNECTION),
    (
        redis.exceptions.ConnectionError("ERR max number of clients reached"),
        ErrorType.RESOURCE_EXHAUSTION,
    ),
    (redis.exceptions.OutOfMemoryError("OOM"), ErrorType.RESOURCE_EXHAUSTION),
    (
        ResourceExhaustedError(resource="memory_percent", usage=97.0, limit=95.0),
        ErrorType.RESOURCE_EXHAUSTION,
    ),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), ErrorType.INVALID_INPUT),
    (UnicodeEncodeError("ascii", "\xe9", 0, 1, "bad"), ErrorType.INVALID_INPUT),
    (InvalidInputError(subject="doc-1", reason="empty"), ErrorType.INVALID_INPUT),
    (
        InvalidIdError(field="operation_id", value="a b", reason="space"),
        ErrorType.INVALID_INPUT,
    ),
    (StrategyError(strategy="semantic"), ErrorType.STRATEGY),
    (PartialFailureError(succeeded=3, failed=1), ErrorType.PARTIAL_FAILURE),
    (ValueError("not input by itself"), ErrorType.UNKNOWN),
    (RuntimeError(), ErrorType.UNKNOWN),
    (KeyboardInterrupt(), ErrorType.UNKNOWN),
    (FileNotFoundError(errno.ENOENT, "missing"), ErrorType.UNKNOWN),
    (redis.exceptions.AuthenticationError("bad password"), ErrorType.UNKNOWN),
]


@pytest.mark.parametrize(
    ("exc", "expected"), DEFAULT_CASES, ids=[type(e).__name__ for e, _ in DEFAULT_CASES]
)
def test_default_table_classifies(exc: BaseException, expected: ErrorType) -> None:
    """Each exception the default table knows maps to its documented error type."""
    assert classify(exc) is expected


@pytest.mark.parametrize(
    "code",
    [
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ECONNABORTED,
        errno.EAGAIN,
    ],
)
def test_transient_errnos(code: int) -> None:
    """A plain OSError with a transient errno is a transient connection error."""
    assert classify(_os_error(code)) is ErrorType.TRANSIENT_CONNECTION


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.ENOMEM]
)
def test_exhaustion_errnos(code: int) -> None:
    """A plain OSError with an exhaustion errno is resource exhaustion."""
    assert classify(_os_error(code)) is ErrorType.RESOURCE_EXHAUSTION


def test_oserror_without_errno_is_unknown() -> None:
    """An OSError that carries no errno gets no verdict from the errno rule."""
    assert classify(OSError("no errno")) is ErrorType.UNKNOWN


def test_error_type_values_are_lowercase_snake() -> None:
    """Every error type's value is its name in lower case."""
    assert [t.value for t in ErrorType] == [t.name.lower() for t in ErrorType]
    assert str(ErrorType.TRANSIENT_CONNECTION) == "transient_connection"


def test_most_specific_class_wins() -> None:
    """A rule for a subclass beats a rule for its base class in the MRO."""

    class BaseProblemError(Exception):
        pass

    class SpecificProblemError(BaseProblemError):
        pass

    table = DEFAULT_TABLE.with_rule(BaseProblemError, ErrorType.STRATEGY).with_rule(
        SpecificProblemError, ErrorType.MEMORY
    )

    assert table.classify(SpecificProblemError()) is ErrorType.MEMORY
    assert table.classify(BaseProblemError()) is ErrorType.STRATEGY


def test_builtin_mro_specificity() -> None:
    """ConnectionError's own rule beats the errno rule registered for OSError."""
    exc = ConnectionResetError(errno.ENOSPC, "odd errno on a reset")
    assert classify(exc) is ErrorType.TRANSIENT_CONNECTION


def test_subclass_of_registered_type_inherits_its_type() -> None:
    """An unregistered subclass is classified by its nearest registered base."""

    class DiskFullError(ResourceExhaustedError):
        pass

    exc = DiskFullError(resource="disk_bytes", usage=10.0, limit=10.0)
    assert classify(exc) is ErrorType.RESOURCE_EXHAUSTION


def test_user_rule_wins_over_default_for_same_class() -> None:
    """A rule added for a class the defaults know replaces the default."""
    table = DEFAULT_TABLE.with_rule(MemoryError, ErrorType.RESOURCE_EXHAUSTION)
    assert table.classify(MemoryError()) is ErrorType.RESOURCE_EXHAUSTION
    assert classify(MemoryError()) is ErrorType.MEMORY


def test_user_extension_for_own_type() -> None:
    """Users register their own exception types via the table argument."""

    class ParserCrashedError(Exception):
        pass

    table = DEFAULT_TABLE.with_rule(ParserCrashedError, ErrorType.STRATEGY)

    assert classify(ParserCrashedError(), table=table) is ErrorType.STRATEGY
    assert classify(ParserCrashedError()) is ErrorType.UNKNOWN


def test_with_rule_leaves_original_unchanged() -> None:
    """with_rule returns a new table and the original keeps its rules."""
    before = dict(DEFAULT_TABLE.rules)
    DEFAULT_TABLE.with_rule(KeyError, ErrorType.INVALID_INPUT)
    assert dict(DEFAULT_TABLE.rules) == before
    assert KeyError not in DEFAULT_TABLE.rules


def test_table_is_immutable() -> None:
    """Neither the table's attribute nor its rules mapping can be changed."""
    with pytest.raises(AttributeError):
        DEFAULT_TABLE.rules = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        DEFAULT_TABLE.rules[KeyError] = ErrorType.UNKNOWN  # type: ignore[index]


def test_table_copies_caller_mapping() -> None:
    """Changing the dict a table was built from does not change the table."""
    rules: dict[type[BaseException], ErrorType] = {KeyError: ErrorType.INVALID_INPUT}
    table = ClassificationTable(rules=rules)
    rules[KeyError] = ErrorType.MEMORY
    assert table.classify(KeyError()) is ErrorType.INVALID_INPUT


def test_predicate_rule_by_message() -> None:
    """A predicate rule classifies by message and falls through on None."""

    def by_message(exc: BaseException) -> ErrorType | None:
        return ErrorType.INVALID_INPUT if "malformed" in str(exc) else None

    table = DEFAULT_TABLE.with_rule(ValueError, by_message)

    assert table.classify(ValueError("malformed header")) is ErrorType.INVALID_INPUT
    assert table.classify(ValueError("something else")) is ErrorType.UNKNOWN


def test_predicate_none_falls_through_to_base_class() -> None:
    """A predicate's None hands the decision to the next registered class in the MRO."""

    class BaseError(Exception):
        pass

    class ChildError(BaseError):
        pass

    table = ClassificationTable(
        rules={BaseError: ErrorType.TIMEOUT, ChildError: lambda exc: None},
    )
    assert table.classify(ChildError()) is ErrorType.TIMEOUT


def test_follows_cause_when_outer_unknown() -> None:
    """A MemoryError wrapped with 'raise ... from' still classifies as MEMORY."""
    try:
        try:
            raise MemoryError
        except MemoryError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert classify(outer) is ErrorType.MEMORY


def test_cause_ignored_when_outer_known() -> None:
    """The outer type decides when it is known, whatever its cause."""
    outer = StrategyError(strategy="semantic")
    outer.__cause__ = MemoryError()
    assert classify(outer) is ErrorType.STRATEGY


def test_cause_followed_one_level_only() -> None:
    """Only the direct cause is looked at, not the cause of the cause."""
    middle = RuntimeError("middle")
    middle.__cause__ = MemoryError()
    outer = RuntimeError("outer")
    outer.__cause__ = middle
    assert classify(outer) is ErrorType.UNKNOWN


def test_implicit_context_not_followed() -> None:
    """An exception raised while handling another, without 'from', is not unwrapped."""
    try:
        try:
            raise MemoryError
        except MemoryError:
            raise RuntimeError("during handling") from None
    except RuntimeError as outer:
        assert outer.__context__ is not None
        assert classify(outer) is ErrorType.UNKNOWN


@pytest.mark.parametrize(
    ("key", "rule"),
    [(int, ErrorType.MEMORY), ("MemoryError", ErrorType.MEMORY), (KeyError, "memory")],
)
def test_bad_rules_rejected(key: object, rule: object) -> None:
    """A key that is no exception class, or a rule that is no ErrorType, is refused."""
    with pytest.raises(TypeError):
        ClassificationTable(rules={key: rule})  # type: ignore[dict-item]


def test_exceptions_share_package_root() -> None:
    """Every exception defined in classify derives from RecoveryError."""
    for exc_type in (
        ResourceExhaustedError,
        StrategyError,
        InvalidInputError,
        PartialFailureError,
    ):
        assert issubclass(exc_type, RecoveryError)


def test_exceptions_carry_data_as_attributes() -> None:
    """The data of each exception is on attributes as well as in the message."""
    exhausted = ResourceExhaustedError(resource="connections", usage=100, limit=100)
    strategy = StrategyError(strategy="semantic", reason="model missing")
    invalid = InvalidInputError(subject="doc-7", reason="not UTF-8")
    partial = PartialFailureError(succeeded=9, failed=2)

    assert (exhausted.resource, exhausted.usage, exhausted.limit) == (
        "connections",
        100,
        100,
    )
    assert (strategy.strategy, strategy.reason) == ("semantic", "model missing")
    assert (invalid.subject, invalid.reason) == ("doc-7", "not UTF-8")
    assert (partial.succeeded, partial.failed) == (9, 2)
    assert "semantic" in str(strategy)
    assert "model missing" in str(strategy)


@pytest.mark.parametrize(
    "exc",
    [
        ResourceExhaustedError(resource="memory_percent", usage=96.5, limit=95.0),
        StrategyError(strategy="semantic", reason="boom"),
        InvalidInputError(subject="doc-1", reason="empty"),
        PartialFailureError(succeeded=1, failed=2),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_exceptions_survive_pickling(exc: RecoveryError) -> None:
    """Keyword-only exceptions round-trip through pickle (worker processes need it)."""
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert vars(copy) == vars(exc)
    assert str(copy) == str(exc)


def test_extending_the_default_table_reaches_classify() -> None:
    """A rule added with extend_default_table applies to classify() without a table."""
    import recovery.classify as module  # noqa: PLC0415

    class QuotaError(Exception):
        pass

    before = module.DEFAULT_TABLE
    try:
        module.extend_default_table(QuotaError, ErrorType.RESOURCE_EXHAUSTION)
        assert classify(QuotaError()) is ErrorType.RESOURCE_EXHAUSTION
    finally:
        module.DEFAULT_TABLE = before
    assert classify(QuotaError()) is ErrorType.UNKNOWN
