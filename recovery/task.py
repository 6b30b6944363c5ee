"""The recovering base Task: every failure classified, one policy applied.

Use it as the base of any Celery task::

    @app.task(bind=True, base=RecoverableTask)
    def ingest(self, ...): ...

When an attempt raises, :class:`RecoverableTask` asks the error handler (classify,
policy, error history) and acts on the decision through Celery's own ``retry()``: the
decided ``countdown``, a ``soft_time_limit`` and ``time_limit`` (grown after a
timeout; the soft limit stays below the hard one), arguments updated by
:meth:`RecoverableTask.arguments_for_retry`, and the gated queue when the decision
routes there. Celery's ``autoretry_for`` and ``max_retries`` are not used beside it:
``max_retries`` is ``None`` and the policy alone ends the retries. When it does, the
operation's dead letter is written and :meth:`RecoverableTask.on_attempts_exhausted`
decides what the caller sees.

Attempts are numbered in Redis (see :mod:`recovery.handler`), not in the message or
in process memory, so a retry that lands on another worker, or a message delivered
again after its worker died, continues one count. An attempt that starts after a lost
one records a ``worker_lost`` error and stops the operation when the policy says so,
so a job that keeps killing its worker does not loop for ever.

A hard time limit kills the attempt's process, so nothing in it can react; Celery then
calls :meth:`RecoverableTask.on_failure` in the worker's main process, where the same
policy decides (``timeout``), from the attempt's record in Redis: the task is sent
again with larger limits, or the operation stops with its dead letter.

Control-flow signals pass untouched: Celery's ``Retry``, ``Ignore`` and ``Reject``,
and ``BaseException`` that is not an ``Exception`` (worker shutdown, interrupts).

The task needs a :class:`RecoveryConfig` in ``app.conf.chunkq_recovery``; chunkq's
app puts one there (``worker/app.py``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, TimeLimitExceeded, WorkerLostError

from recovery import correlation
from recovery.classify import ErrorType
from recovery.gate import (
    GATE_HEADER,
    Admission,
    AdmissionGate,
    keep_permit,
    resource_of,
)
from recovery.handler import (
    ChunkingErrorHandler,
    DeadLetter,
    ErrorContext,
    RecoveryResult,
)
from recovery.keepalive import KeepAlive
from recovery.lease import Lease, LeaseStore, StaleEpochError
from recovery.policy import Action

logger = logging.getLogger(__name__)

CONTROL_FLOW: tuple[type[BaseException], ...] = (Retry, Ignore, Reject)
"""Exceptions that steer Celery and are never treated as failures."""


@dataclass(frozen=True)
class RecoveryConfig:
    """What a recovering task needs, built once per process by the app."""

    handler_factory: Callable[[], ChunkingErrorHandler]
    """Returns the process's handler; called after the worker forked."""
    gate_factory: Callable[[], AdmissionGate]
    """Returns the process's admission gate."""
    lease_factory: Callable[[], LeaseStore]
    """Returns the process's lease store (epochs and heartbeats)."""
    gated_queue: str
    gate_poll_s: float = 2.0
    """Seconds between two admission requests of a waiting message."""


@dataclass
class AttemptContext:
    """What the running attempt tells the policy; the task updates it as it goes."""

    operation_id: str
    correlation_id: str
    attempt: int
    batch_size: int = 1
    strategy: str = ""
    has_partial_results: bool = False
    lease: Lease | None = None
    """The attempt's hold on the operation; writes carry its epoch."""
    heartbeat: KeepAlive | None = None
    details: dict[str, Any] = field(default_factory=dict)


_current_attempt: ContextVar[AttemptContext | None] = ContextVar(
    "chunkq_attempt", default=None
)


def current_attempt() -> AttemptContext | None:
    """Return the context of the attempt running in this process, if any."""
    return _current_attempt.get()


class AttemptsExhaustedError(Exception):
    """The operation ends: raised in place of an error that cannot itself be raised.

    A ``WorkerLostError`` raised by a task would make Celery requeue the message
    again (reject on worker loss), so an operation stopped after lost attempts ends
    with this instead.

    Attributes:
        result: the handler's last decision.
    """

    def __init__(self, result: RecoveryResult, last_error: BaseException) -> None:
        self.result = result
        super().__init__(
            f"{result.reason} Last error: {type(last_error).__name__}: {last_error}"
        )


class RecoverableTask(Task):  # type: ignore[misc]
    """Base Task that catches every failure and applies chunkq's retry policy."""

    max_retries = None
    """The policy, not Celery's counter, ends retries."""

    def operation_id_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Return the id under which attempts and errors are kept (the task id)."""
        return str(self.request.id)

    def arguments_for_retry(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], result: RecoveryResult
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return the arguments of the next attempt; unchanged unless overridden."""
        return args, kwargs

    def on_waiting(
        self, operation_id: str, resource: str, admission: Admission
    ) -> None:
        """Called when a message waits for a permit of ``resource``; no-op by default."""

    def on_attempts_exhausted(
        self,
        error: BaseException,
        result: RecoveryResult,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Decide what the caller sees when the operation stops; re-raises by default.

        Overrides may clean up and return a value instead (a partial result).
        """
        raise error

    def _recovery(self) -> tuple[RecoveryConfig, ChunkingErrorHandler]:
        config: RecoveryConfig = self.app.conf.chunkq_recovery
        return config, config.handler_factory()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run one attempt under the policy, admitted first when it came gated."""
        if self.request.called_directly:
            return super().__call__(*args, **kwargs)

        config, handler = self._recovery()
        operation_id = self.operation_id_for(args, kwargs)
        correlation_id = correlation.ensure_correlation_id()
        resource = self.request.get(GATE_HEADER)
        if not resource:
            return self._attempt(
                config,
                handler,
                operation_id=operation_id,
                correlation_id=correlation_id,
                args=args,
                kwargs=kwargs,
            )

        gate = config.gate_factory()
        admission = gate.try_admit(operation_id, resource)
        if not admission.admitted:
            self.on_waiting(operation_id, resource, admission)
            logger.info(
                "gate.waiting",
                extra={
                    "operation_id": operation_id,
                    "resource": resource,
                    "position": admission.position,
                },
            )
            raise self.retry(
                countdown=config.gate_poll_s,
                queue=config.gated_queue,
                headers=_headers(correlation_id, resource),
                throw=False,
            )
        keeper = keep_permit(gate, operation_id, resource)
        admitted_s = time.monotonic()
        logger.info(
            "gate.admitted", extra={"operation_id": operation_id, "resource": resource}
        )
        held_s: float | None = None
        try:
            value = self._attempt(
                config,
                handler,
                operation_id=operation_id,
                correlation_id=correlation_id,
                args=args,
                kwargs=kwargs,
            )
            held_s = time.monotonic() - admitted_s
        finally:
            keeper.stop()
            gate.release(operation_id, resource, held_s=held_s)
        return value

    def _attempt(
        self,
        config: RecoveryConfig,
        handler: ChunkingErrorHandler,
        *,
        operation_id: str,
        correlation_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        hard_s, soft_s = self._time_limits()
        start = handler.begin_attempt(
            operation_id,
            correlation_id=correlation_id,
            worker=self.request.hostname,
            soft_limit_s=soft_s,
            hard_limit_s=hard_s,
            queue=(self.request.delivery_info or {}).get("routing_key"),
        )
        leases = config.lease_factory()
        lease = leases.take(
            operation_id, holder=f"{self.request.hostname}/{os.getpid()}"
        )
        heartbeat = KeepAlive(
            renew=lambda: leases.beat(lease),
            interval_s=leases.heartbeat_timeout_s / 3,
            name="heartbeat",
        ).start()
        context = AttemptContext(
            operation_id,
            correlation_id,
            start.attempt,
            lease=lease,
            heartbeat=heartbeat,
        )
        token = _current_attempt.set(context)
        try:
            if start.previous_lost:
                self._after_lost_attempt(handler, context, args, kwargs)
            value = super().__call__(*args, **kwargs)
        except StaleEpochError:
            handler.finish_attempt(operation_id, context.attempt, "superseded")
            logger.info(
                "task.superseded",
                extra={"operation_id": operation_id, "attempt": context.attempt},
            )
            raise Ignore() from None
        except CONTROL_FLOW:
            raise
        except Exception as error:  # every failure goes to the policy
            return self._recover(
                config, handler, context, error, args=args, kwargs=kwargs
            )
        finally:
            _current_attempt.reset(token)
            heartbeat.stop()
        leases.release(lease)
        handler.finish_attempt(operation_id, context.attempt, "completed")
        return value

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        """Recover from a hard time limit, the one failure the attempt cannot see."""
        if not isinstance(exc, TimeLimitExceeded):
            return
        _, handler = self._recovery()
        operation_id = self.operation_id_for(args, kwargs)
        attempt, record = handler.last_attempt(operation_id)
        correlation_id = correlation.accept(record.get("correlation_id"))
        correlation_id = correlation_id or correlation.new_correlation_id()
        with correlation.correlation_scope(correlation_id):
            result = handler.handle_with_correlation(
                operation_id,
                correlation_id,
                exc,
                ErrorContext(
                    attempt=max(attempt, 1),
                    current_soft_limit_s=record.get("soft_limit_s"),
                    worker=record.get("worker"),
                ),
            )
            extra = {
                "operation_id": operation_id,
                "correlation_id": correlation_id,
                "attempt": attempt,
                "action": str(result.recovery_action),
            }
            if result.retries:
                handler.finish_attempt(operation_id, attempt, "retry")
                logger.info("task.hard_time_limit_retry", extra=extra)
                self.apply_async(
                    args,
                    kwargs,
                    task_id=task_id,
                    countdown=result.retry_after,
                    soft_time_limit=result.next_soft_limit_s,
                    time_limit=result.next_hard_limit_s,
                    headers={correlation.CORRELATION_HEADER: correlation_id},
                    retries=attempt,
                )
                return
            handler.finish_attempt(operation_id, attempt, str(result.recovery_action))
            context = AttemptContext(operation_id, correlation_id, max(attempt, 1))
            handler.dead_letter(self._dead_letter(handler, context, result, kwargs))
            logger.warning("task.attempts_exhausted", extra=extra)
            self.on_stopped_by_hard_limit(exc, result, args, kwargs)

    def on_stopped_by_hard_limit(
        self,
        error: BaseException,
        result: RecoveryResult,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Called in the main process when hard limits ended the operation; no-op."""

    def _after_lost_attempt(
        self,
        handler: ChunkingErrorHandler,
        context: AttemptContext,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        lost = WorkerLostError(
            f"attempt {context.attempt - 1} of {context.operation_id} ended without "
            "an outcome: its worker was lost"
        )
        result = handler.handle_with_correlation(
            context.operation_id,
            context.correlation_id,
            lost,
            self._error_context(context, attempt=context.attempt - 1),
        )
        if not result.retries:
            raise AttemptsExhaustedError(result, lost) from lost
        logger.info(
            "task.resumed_after_lost_worker",
            extra={
                "operation_id": context.operation_id,
                "correlation_id": context.correlation_id,
                "attempt": context.attempt,
            },
        )

    def _recover(
        self,
        config: RecoveryConfig,
        handler: ChunkingErrorHandler,
        context: AttemptContext,
        error: Exception,
        *,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if isinstance(error, AttemptsExhaustedError):
            result = error.result
            cause: BaseException = error
        else:
            result = handler.handle_with_correlation(
                context.operation_id,
                context.correlation_id,
                error,
                self._error_context(context),
            )
            cause = error
        extra = {
            "operation_id": context.operation_id,
            "correlation_id": context.correlation_id,
            "attempt": context.attempt,
            "error_type": str(result.error_type),
            "action": str(result.recovery_action),
        }

        if result.retries:
            logger.info(
                "task.retry_scheduled",
                extra={**extra, "countdown_s": round(result.retry_after, 3)},
            )
            handler.finish_attempt(context.operation_id, context.attempt, "retry")
            if context.lease is not None and context.heartbeat is not None:
                # Watched through the backoff: a retry lost with its worker is resent.
                context.heartbeat.stop()
                config.lease_factory().beat(context.lease, extra_s=result.retry_after)
            raise self._retry(config, result, cause, args, kwargs)

        handler.finish_attempt(
            context.operation_id, context.attempt, str(result.recovery_action)
        )
        if context.lease is not None:
            config.lease_factory().release(context.lease)
        handler.dead_letter(self._dead_letter(handler, context, result, kwargs))
        if result.error_type is ErrorType.UNKNOWN:
            logger.error("task.failed_unexpectedly", extra=extra, exc_info=cause)
        else:
            logger.warning("task.attempts_exhausted", extra=extra)
        return self.on_attempts_exhausted(cause, result, args, kwargs)

    def _retry(
        self,
        config: RecoveryConfig,
        result: RecoveryResult,
        error: BaseException,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Retry:
        hard_s, soft_s = self._time_limits()
        next_args, next_kwargs = self.arguments_for_retry(args, kwargs, result)
        options: dict[str, Any] = {}
        if result.recovery_action is Action.ROUTE_GATED:
            headers = _headers(correlation.ensure_correlation_id(), resource_of(error))
            options = {"queue": config.gated_queue, "headers": headers}
        return self.retry(
            args=next_args,
            kwargs=next_kwargs,
            exc=error,
            countdown=result.retry_after,
            soft_time_limit=result.next_soft_limit_s or soft_s,
            time_limit=result.next_hard_limit_s or hard_s,
            throw=False,
            **options,
        )

    def _time_limits(self) -> tuple[float | None, float | None]:
        """Return the (hard, soft) limits in force for this attempt, in seconds."""
        hard_s, soft_s = self.request.timelimit or (None, None)
        hard_s = hard_s or self.time_limit or self.app.conf.task_time_limit
        soft_s = soft_s or self.soft_time_limit or self.app.conf.task_soft_time_limit
        return hard_s, soft_s

    def _error_context(
        self, context: AttemptContext, *, attempt: int | None = None
    ) -> ErrorContext:
        return ErrorContext(
            attempt=attempt or context.attempt,
            batch_size=max(context.batch_size, 1),
            strategy=context.strategy,
            has_partial_results=context.has_partial_results,
            current_soft_limit_s=self._time_limits()[1],
            worker=self.request.hostname,
        )

    def _dead_letter(
        self,
        handler: ChunkingErrorHandler,
        context: AttemptContext,
        result: RecoveryResult,
        kwargs: dict[str, Any],
    ) -> DeadLetter:
        return DeadLetter(
            operation_id=context.operation_id,
            correlation_id=context.correlation_id,
            task_name=self.name,
            request=dict(kwargs),
            error_type=result.error_type,
            reason=result.reason,
            at_s=time.time(),
            errors=handler.error_history(context.operation_id),
            queue=(self.request.delivery_info or {}).get("routing_key"),
        )


def _headers(correlation_id: str, resource: str) -> dict[str, str]:
    return {correlation.CORRELATION_HEADER: correlation_id, GATE_HEADER: resource}
