"""Classify an exception into the error type that decides how to recover from it.

Classification is a pure lookup in an immutable :class:`ClassificationTable`. The
table maps exception classes to an :class:`ErrorType`, or to a predicate that looks
at the exception (its message, its ``errno``) and returns an error type or ``None``
for "no verdict". Lookup walks the exception's MRO, so the most specific registered
class wins; a predicate that returns ``None`` hands the decision on to the next class
in the MRO. When the outer exception classifies as ``UNKNOWN`` its ``__cause__`` (set
by ``raise ... from ...``) is classified instead, one level deep, so a wrapped
``MemoryError`` is still ``MEMORY``. The implicit ``__context__`` is not followed: it
is often an unrelated error that was being handled when the new one was raised.

The exceptions defined here share the package root from :mod:`recovery.errors`::

    RecoveryError                      root of every exception raised by recovery/
    ├── InvalidIdError                 an unsafe id (recovery/errors.py)
    ├── ResourceExhaustedError         memory, CPU or connections ran out
    ├── StrategyError                  a processing strategy failed
    ├── InvalidInputError              input that no retry can fix
    └── PartialFailureError            some items failed, others succeeded

Choices in the default table worth knowing:

* Celery's ``SoftTimeLimitExceeded`` and ``TimeLimitExceeded`` are ``TIMEOUT``: the
  attempt ran out of its time limit. The builtin ``TimeoutError`` (which is also
  ``socket.timeout`` and ``asyncio.TimeoutError``) is ``TRANSIENT_CONNECTION``: it
  comes from waiting on a peer, not from the attempt's time limit.
* Only ``UnicodeError`` and :class:`InvalidInputError` (and :class:`InvalidIdError`)
  are ``INVALID_INPUT``; a bare ``ValueError`` is ``UNKNOWN``, because it is as often
  a bug as bad input.
* A Redis ``ConnectionError`` whose message says "max number of clients reached", a
  full Redis (``OutOfMemoryError``) and an exhausted client pool are
  ``RESOURCE_EXHAUSTION``; other Redis connection errors are transient.
* Redis authentication and authorization failures are ``UNKNOWN`` rather than
  transient, so they are retried a few times only: bad credentials do not heal.
* A plain ``OSError`` is classified by its ``errno``; one with an errno in neither
  set below is ``UNKNOWN``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import celery.exceptions
import kombu.exceptions
import redis.exceptions

from recovery.errors import InvalidIdError, RecoveryError

__all__ = [
    "DEFAULT_TABLE",
    "ClassificationTable",
    "ErrorType",
    "InvalidInputError",
    "PartialFailureError",
    "Predicate",
    "ResourceExhaustedError",
    "Rule",
    "StrategyError",
    "classify",
]


class ErrorType(StrEnum):
    """What kind of failure an exception stands for; the retry policy keys on it."""

    MEMORY = "memory"
    TIMEOUT = "timeout"
    TRANSIENT_CONNECTION = "transient_connection"
    RESOURCE_EXHAUSTION = "resource_exhaustion"
    STRATEGY = "strategy"
    INVALID_INPUT = "invalid_input"
    PARTIAL_FAILURE = "partial_failure"
    WORKER_LOST = "worker_lost"
    UNKNOWN = "unknown"


class ResourceExhaustedError(RecoveryError):
    """A resource such as memory, CPU or connections ran out.

    Attributes:
        resource: which resource, for example ``"memory_percent"``.
        usage: how much was in use, in the resource's own unit.
        limit: the limit that was reached, in the same unit as ``usage``.
    """

    def __init__(self, *, resource: str, usage: float, limit: float) -> None:
        self.resource = resource
        self.usage = usage
        self.limit = limit
        super().__init__(f"{resource} exhausted: {usage:g} in use, limit {limit:g}")

    def __reduce__(self) -> tuple[object, ...]:
        kwargs = {"resource": self.resource, "usage": self.usage, "limit": self.limit}
        return (_rebuild, (type(self), kwargs))


class StrategyError(RecoveryError):
    """A processing strategy failed; another strategy may succeed.

    Attributes:
        strategy: the name of the strategy that failed.
        reason: what went wrong, empty when not known.
    """

    def __init__(self, *, strategy: str, reason: str = "") -> None:
        self.strategy = strategy
        self.reason = reason
        detail = f": {reason}" if reason else ""
        super().__init__(f"strategy {strategy!r} failed{detail}")

    def __reduce__(self) -> tuple[object, ...]:
        kwargs = {"strategy": self.strategy, "reason": self.reason}
        return (_rebuild, (type(self), kwargs))


class InvalidInputError(RecoveryError):
    """The input cannot be processed, and no retry will change that.

    Attributes:
        subject: which input, for example an item id or a field name.
        reason: what is wrong with it.
    """

    def __init__(self, *, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"invalid input {subject!r}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        kwargs = {"subject": self.subject, "reason": self.reason}
        return (_rebuild, (type(self), kwargs))


class PartialFailureError(RecoveryError):
    """Some items of a unit of work failed while others succeeded.

    Attributes:
        succeeded: how many items succeeded.
        failed: how many items failed.
    """

    def __init__(self, *, succeeded: int, failed: int) -> None:
        self.succeeded = succeeded
        self.failed = failed
        super().__init__(f"{failed} items failed, {succeeded} succeeded")

    def __reduce__(self) -> tuple[object, ...]:
        kwargs = {"succeeded": self.succeeded, "failed": self.failed}
        return (_rebuild, (type(self), kwargs))


def _rebuild(cls: type[RecoveryError], kwargs: Mapping[str, object]) -> RecoveryError:
    """Recreate an exception from its keyword arguments when it is unpickled."""
    return cls(**kwargs)


Predicate = Callable[[BaseException], ErrorType | None]
"""A message- or attribute-based rule: an error type, or ``None`` for no verdict."""

Rule = ErrorType | Predicate
"""What a table maps an exception class to."""


@dataclass(frozen=True, slots=True)
class ClassificationTable:
    """An immutable mapping from exception classes to error types or predicates.

    Extend it with :meth:`with_rule`, which returns a new table. A rule for a class
    that already has one replaces it, so a user rule wins over the default rule for
    the same class. Across classes the most specific one in the exception's MRO
    wins: a rule for a base class does not override rules for its subclasses.

    Raises:
        TypeError: on construction, when a key is not an exception class or a value
            is neither an :class:`ErrorType` nor callable.
    """

    rules: Mapping[type[BaseException], Rule]

    def __post_init__(self) -> None:
        for exc_type, rule in self.rules.items():
            _check_rule(exc_type, rule)
        object.__setattr__(self, "rules", MappingProxyType(dict(self.rules)))

    def with_rule(
        self, exc_type: type[BaseException], rule: Rule
    ) -> ClassificationTable:
        """Return a new table in which ``exc_type`` maps to ``rule``.

        Raises:
            TypeError: when ``exc_type`` is not an exception class or ``rule`` is
                neither an :class:`ErrorType` nor callable.
        """
        return ClassificationTable(rules={**self.rules, exc_type: rule})

    def classify(self, exc: BaseException) -> ErrorType:
        """Return the error type of ``exc``, following ``__cause__`` once if UNKNOWN."""
        outer = self._lookup(exc)
        if outer is not ErrorType.UNKNOWN or exc.__cause__ is None:
            return outer
        return self._lookup(exc.__cause__)

    def _lookup(self, exc: BaseException) -> ErrorType:
        for klass in type(exc).__mro__:
            rule = self.rules.get(klass)
            if rule is None:
                continue
            verdict = rule if isinstance(rule, ErrorType) else rule(exc)
            if verdict is not None:
                return verdict
        return ErrorType.UNKNOWN


def _check_rule(exc_type: object, rule: object) -> None:
    if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
        raise TypeError(f"classification key {exc_type!r} is not an exception class")
    if not (isinstance(rule, ErrorType) or callable(rule)):
        raise TypeError(f"rule {rule!r} for {exc_type.__name__} is not an ErrorType")


def classify(
    exc: BaseException, *, table: ClassificationTable | None = None
) -> ErrorType:
    """Return the error type of ``exc`` according to ``table`` (default table if None).

    Never raises for any exception passed in; an unmatched one is ``UNKNOWN``.
    """
    return (DEFAULT_TABLE if table is None else table).classify(exc)


TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ECONNABORTED,
        errno.EAGAIN,
    }
)
"""``OSError`` errnos that usually clear on their own: the peer or network hiccuped."""

EXHAUSTION_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.ENOMEM})
"""``OSError`` errnos that mean a local resource (disk, descriptors, memory) ran out."""

_MAX_CLIENTS_MESSAGE = "max number of clients reached"


def _by_errno(exc: BaseException) -> ErrorType | None:
    """Classify an ``OSError`` by its errno; no verdict for other errnos."""
    code = getattr(exc, "errno", None)
    if code in TRANSIENT_ERRNOS:
        return ErrorType.TRANSIENT_CONNECTION
    if code in EXHAUSTION_ERRNOS:
        return ErrorType.RESOURCE_EXHAUSTION
    return None


def _redis_connection(exc: BaseException) -> ErrorType:
    """A Redis connection error is transient unless the server has no client slots."""
    if _MAX_CLIENTS_MESSAGE in str(exc).lower():
        return ErrorType.RESOURCE_EXHAUSTION
    return ErrorType.TRANSIENT_CONNECTION


def _default_rules() -> dict[type[BaseException], Rule]:
    rules: dict[type[BaseException], Rule] = {
        MemoryError: ErrorType.MEMORY,
        celery.exceptions.SoftTimeLimitExceeded: ErrorType.TIMEOUT,
        celery.exceptions.TimeLimitExceeded: ErrorType.TIMEOUT,
        celery.exceptions.WorkerLostError: ErrorType.WORKER_LOST,
        redis.exceptions.ConnectionError: _redis_connection,
        redis.exceptions.TimeoutError: ErrorType.TRANSIENT_CONNECTION,
        kombu.exceptions.OperationalError: ErrorType.TRANSIENT_CONNECTION,
        ConnectionError: ErrorType.TRANSIENT_CONNECTION,
        TimeoutError: ErrorType.TRANSIENT_CONNECTION,
        OSError: _by_errno,
        UnicodeError: ErrorType.INVALID_INPUT,
        InvalidInputError: ErrorType.INVALID_INPUT,
        InvalidIdError: ErrorType.INVALID_INPUT,
        ResourceExhaustedError: ErrorType.RESOURCE_EXHAUSTION,
        StrategyError: ErrorType.STRATEGY,
        PartialFailureError: ErrorType.PARTIAL_FAILURE,
    }
    # Older redis-py releases lack some of these classes; the message rule on
    # redis ConnectionError still catches "max number of clients reached" there.
    optional = {
        "MaxClientsReachedError": ErrorType.RESOURCE_EXHAUSTION,
        "MaxConnectionsError": ErrorType.RESOURCE_EXHAUSTION,
        "OutOfMemoryError": ErrorType.RESOURCE_EXHAUSTION,
        "AuthenticationError": ErrorType.UNKNOWN,
        "AuthorizationError": ErrorType.UNKNOWN,
    }
    for name, error_type in optional.items():
        exc_type = getattr(redis.exceptions, name, None)
        if isinstance(exc_type, type) and issubclass(exc_type, BaseException):
            rules[exc_type] = error_type
    return rules


DEFAULT_TABLE = ClassificationTable(rules=_default_rules())
"""The table :func:`classify` uses when none is given; extend it with ``with_rule``."""


def extend_default_table(exc_type: type[BaseException], rule: Rule) -> None:
    """Add a rule to this process's default table, for exceptions of your own.

    Call it at import time of a module the workers load (``CHUNKQ_IMPORTS``); every
    later classification without an explicit table sees the rule.
    """
    global DEFAULT_TABLE  # noqa: PLW0603 - the process-wide default, extended at start-up
    DEFAULT_TABLE = DEFAULT_TABLE.with_rule(exc_type, rule)
