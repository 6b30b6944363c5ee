"""The error handler: one core with a synchronous and an asynchronous face.

:class:`ChunkingErrorHandler` (``redis.Redis``) and :class:`AsyncChunkingErrorHandler`
(``redis.asyncio.Redis``) offer the same operations over the same core:

``handle_with_correlation(operation_id, correlation_id, error, context)``
    classify the error, ask the retry policy, append an :class:`ErrorRecord` to the
    operation's capped error history, and return a :class:`RecoveryResult` with the
    ``recovery_action`` and ``retry_after`` (seconds).
``resume_operation(operation_id)``
    the saved state, checkpoint, attempts and error history: a :class:`ResumeResult`.
``begin_attempt`` / ``finish_attempt``
    number attempts in Redis, so retries landing on different workers continue one
    count, and an attempt that never finished (its worker died) is noticed by the next.
``dead_letter``
    keep the request, error history and correlation id of an operation whose attempts
    ran out, for replay.
``handle_resource_exhaustion(operation_id, resource_type, current_usage, limit)``
    what to do when a resource runs out: a smaller batch or streaming for memory, a
    wait or a simpler strategy for CPU, the gated queue for connections and the rest,
    with the place in line and the wait estimated from measured durations.

The core builds every Redis command list and parses every reply; the two faces only
send them, so they cannot drift apart. Error messages are sanitised before they are
stored: credentials in URLs are masked, white space folded, length capped.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.asyncio
from pydantic import BaseModel, ConfigDict, Field

from recovery.checkpoint import Checkpoint, checkpoint_from_replies
from recovery.classify import ClassificationTable, ErrorType, classify
from recovery.gate import estimate_wait_s, gate_key_names
from recovery.keys import KeyBuilder, OperationKeys
from recovery.policy import Action, RetryPolicy
from recovery.resources import ResourceMonitor

if TYPE_CHECKING:
    from recovery.reports import ErrorReport, PatternReport

logger = logging.getLogger(__name__)

MESSAGE_MAX_CHARS = 500
DEFAULT_HISTORY_LIMIT = 100
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.IGNORECASE
)

_BEGIN_ATTEMPT_LUA = """
local attempts_key, outcomes_key = KEYS[1], KEYS[2]
local ttl_s = tonumber(ARGV[1])
local attempt = redis.call('HLEN', attempts_key) + 1
redis.call('HSET', attempts_key, attempt, ARGV[2])
redis.call('EXPIRE', attempts_key, ttl_s)
local unfinished = 0
if attempt > 1 and redis.call('HEXISTS', outcomes_key, attempt - 1) == 0 then
  unfinished = 1
  redis.call('HSET', outcomes_key, attempt - 1, 'lost')
  redis.call('EXPIRE', outcomes_key, ttl_s)
end
return {attempt, unfinished}
"""


class ErrorContext(BaseModel):
    """What the caller knows about the failed attempt."""

    model_config = ConfigDict(frozen=True)

    attempt: int = Field(default=1, ge=1)
    batch_size: int = Field(default=1, ge=1)
    strategy: str = ""
    has_partial_results: bool = False
    current_soft_limit_s: float | None = None
    memory_percent: float | None = None
    """Memory pressure at the failure (0-100); measured by the handler when absent."""
    worker: str | None = None


class ErrorRecord(BaseModel):
    """One entry of an operation's error history."""

    at_s: float
    """Unix time of the failure, in seconds."""
    error_type: ErrorType
    exception_type: str
    message: str
    attempt: int
    correlation_id: str
    action: Action
    backoff_s: float
    reason: str
    memory_percent: float | None = None
    """Resources when the error was handled: memory and CPU in percent, and the Redis
    connections this process had in use."""
    cpu_percent: float | None = None
    connections_in_use: int | None = None
    worker: str | None = None


class RecoveryResult(BaseModel):
    """What the handler decided about one failure."""

    operation_id: str
    correlation_id: str
    error_type: ErrorType
    recovery_action: Action
    retry_after: float
    """Seconds to wait before the next attempt; 0 when there is none."""
    next_soft_limit_s: float | None = None
    next_hard_limit_s: float | None = None
    next_batch_size: int | None = None
    next_strategy: str | None = None
    reason: str
    attempt: int

    @property
    def retries(self) -> bool:
        """Whether another attempt follows."""
        return self.recovery_action not in {Action.FAIL, Action.SAVE_PARTIAL}


class ResourceDecision(BaseModel):
    """What to do when a resource ran out."""

    operation_id: str
    resource_type: str
    current_usage: float
    limit: float
    action: Action
    next_batch_size: int | None = None
    streaming: bool = False
    """One document at a time (``next_batch_size`` 1)."""
    next_strategy: str | None = None
    wait_s: float
    """Seconds to wait before trying again (0 for an immediate change)."""
    queue: str | None = None
    """The gated queue, when the work goes there."""
    position: int | None = None
    """Place in the gated queue's line, 1 for the next."""
    estimated_wait_s: float | None = None
    """From measured durations of recent gated work; ``None`` until one is measured."""
    reason: str


class AttemptStart(BaseModel):
    """The number of an attempt that starts, and whether the one before it was lost."""

    attempt: int
    previous_lost: bool


class CheckpointView(BaseModel):
    """A checkpoint as the handler reports it."""

    done: list[str]
    failed: dict[str, str]
    totals: dict[str, int]
    batch_size: int | None
    batches: int
    updated_at_s: float | None


class ResumeResult(BaseModel):
    """Everything saved about an operation, to resume it or to look at it."""

    operation_id: str
    exists: bool
    state: dict[str, str]
    checkpoint: CheckpointView
    attempts: int
    attempt_records: dict[int, dict[str, Any]] = Field(default_factory=dict)
    """Attempt number to its start record: time, worker, queue, limits, correlation id."""
    outcomes: dict[int, str]
    errors: list[ErrorRecord]


class DeadLetter(BaseModel):
    """An operation whose attempts ran out, kept for replay."""

    operation_id: str
    correlation_id: str
    task_name: str
    request: dict[str, Any]
    """The task's keyword arguments as they were on the last attempt."""
    error_type: ErrorType
    reason: str
    at_s: float
    errors: list[ErrorRecord]
    queue: str | None = None
    """The queue its last attempt came from; a replay goes back there."""


def sanitize_message(text: str) -> str:
    """Mask URL credentials, fold white space and cap the length of an error message."""
    masked = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    folded = " ".join(masked.split())
    if len(folded) > MESSAGE_MAX_CHARS:
        return folded[: MESSAGE_MAX_CHARS - 3] + "..."
    return folded


class _HandlerCore:
    """Decisions, records and the Redis commands behind both faces."""

    def __init__(
        self,
        *,
        keys: KeyBuilder,
        policy: RetryPolicy,
        table: ClassificationTable | None,
        ttl_s: int,
        history_limit: int,
        dead_letter_ttl_s: int,
        gated_queue: str,
        permits_of: Callable[[str], int],
    ) -> None:
        self.gated_queue = gated_queue
        self.permits_of = permits_of
        self.monitor = ResourceMonitor()
        self.keys = keys
        self.policy = policy
        self.table = table
        self.ttl_s = ttl_s
        self.history_limit = history_limit
        self.dead_letter_ttl_s = dead_letter_ttl_s

    def assess(
        self,
        operation_id: str,
        correlation_id: str,
        error: BaseException,
        context: ErrorContext,
    ) -> tuple[RecoveryResult, ErrorRecord]:
        """Classify ``error`` and decide; return the result and the record to store."""
        error_type = classify(error, table=self.table)
        snapshot = self.monitor.snapshot()
        pressure = context.memory_percent
        if pressure is None:
            pressure = snapshot.memory_percent
        decision = self.policy.decide(
            error_type=error_type,
            attempt=context.attempt,
            current_batch_size=context.batch_size,
            current_strategy=context.strategy,
            memory_percent=pressure,
            has_partial_results=context.has_partial_results,
            current_soft_limit_s=context.current_soft_limit_s,
        )
        result = RecoveryResult(
            operation_id=operation_id,
            correlation_id=correlation_id,
            error_type=error_type,
            recovery_action=decision.action,
            retry_after=decision.backoff_s,
            next_soft_limit_s=decision.next_soft_limit_s,
            next_hard_limit_s=decision.next_hard_limit_s,
            next_batch_size=decision.next_batch_size,
            next_strategy=decision.next_strategy,
            reason=decision.reason,
            attempt=context.attempt,
        )
        record = ErrorRecord(
            at_s=time.time(),
            error_type=error_type,
            exception_type=f"{type(error).__module__}.{type(error).__qualname__}",
            message=sanitize_message(str(error)),
            attempt=context.attempt,
            correlation_id=correlation_id,
            action=decision.action,
            backoff_s=decision.backoff_s,
            reason=decision.reason,
            memory_percent=round(pressure, 1),
            cpu_percent=round(snapshot.cpu_percent, 1),
            connections_in_use=snapshot.connections_in_use,
            worker=context.worker,
        )
        logger.info(
            "recovery.decided",
            extra={
                "operation_id": operation_id,
                "correlation_id": correlation_id,
                "attempt": context.attempt,
                "error_type": str(error_type),
                "action": str(decision.action),
                "backoff_s": round(decision.backoff_s, 3),
            },
        )
        return result, record

    def decide_resource(
        self,
        operation_id: str,
        resource_type: str,
        current_usage: float,
        limit: float,
        options: Mapping[str, Any],
    ) -> ResourceDecision:
        """Decide about an exhausted resource (before any place in line is known)."""
        decision = self.policy.decide_exhaustion(
            resource=str(resource_type),
            usage=current_usage,
            limit=limit,
            attempt=int(options.get("attempt", 1)),
            current_batch_size=options.get("current_batch_size"),
            current_strategy=options.get("current_strategy"),
        )
        gated = decision.action is Action.ROUTE_GATED
        return ResourceDecision(
            operation_id=operation_id,
            resource_type=str(resource_type),
            current_usage=current_usage,
            limit=limit,
            action=decision.action,
            next_batch_size=decision.next_batch_size,
            streaming=decision.next_batch_size == 1,
            next_strategy=decision.next_strategy,
            wait_s=decision.backoff_s,
            queue=self.gated_queue if gated else None,
            reason=decision.reason,
        )

    def queue_join(
        self, pipe: Any, operation_id: str, resource: str, now_s: float
    ) -> None:
        """Queue joining the gate's line (kept place if there) and reading the line."""
        _, waiting, durations = gate_key_names(self.keys, resource)
        pipe.zadd(waiting, {operation_id: int(now_s * 1000)}, nx=True)
        pipe.expire(waiting, self.ttl_s)
        pipe.zrank(waiting, operation_id)
        pipe.lrange(durations, 0, -1)

    def placed(
        self, decision: ResourceDecision, replies: Sequence[Any]
    ) -> ResourceDecision:
        """Add the place in line and the estimated wait from the join replies."""
        rank, durations = replies[-2], replies[-1]
        position = int(rank) + 1
        estimate = estimate_wait_s(
            position,
            permits=self.permits_of(decision.resource_type),
            durations_s=[float(item) for item in durations],
        )
        return decision.model_copy(
            update={"position": position, "estimated_wait_s": estimate}
        )

    def queue_error(self, pipe: Any, operation_id: str, record: ErrorRecord) -> None:
        """Append ``record`` to the history, keep the newest ``history_limit``."""
        key = self.keys.operation(operation_id).errors
        pipe.rpush(key, record.model_dump_json())
        pipe.ltrim(key, -self.history_limit, -1)
        pipe.expire(key, self.ttl_s)

    def queue_finish(
        self, pipe: Any, operation_id: str, attempt: int, outcome: str
    ) -> None:
        """Record how attempt ``attempt`` ended."""
        key = self.keys.operation(operation_id).outcomes
        pipe.hset(key, str(attempt), outcome)
        pipe.expire(key, self.ttl_s)

    def attempt_record(
        self,
        correlation_id: str,
        worker: str | None,
        soft_limit_s: float | None,
        hard_limit_s: float | None,
        queue: str | None,
    ) -> str:
        """Return the JSON record of an attempt's start."""
        return json.dumps(
            {
                "at_s": round(time.time(), 3),
                "correlation_id": correlation_id,
                "worker": worker,
                "queue": queue,
                "soft_limit_s": soft_limit_s,
                "hard_limit_s": hard_limit_s,
            }
        )

    def queue_resume_reads(self, pipe: Any, operation_id: str) -> None:
        """Queue every read :meth:`parse_resume` needs, in its order."""
        keys = self.keys.operation(operation_id)
        pipe.hgetall(keys.state)
        pipe.smembers(keys.done)
        pipe.hgetall(keys.failed)
        pipe.hgetall(keys.totals)
        pipe.hgetall(keys.checkpoint)
        pipe.hgetall(keys.attempts)
        pipe.hgetall(keys.outcomes)
        pipe.lrange(keys.errors, 0, -1)

    def parse_resume(self, operation_id: str, replies: Sequence[Any]) -> ResumeResult:
        """Build the :class:`ResumeResult` from the replies of the queued reads."""
        state, done, failed, totals, meta, attempts, outcomes, errors = replies
        checkpoint = checkpoint_from_replies(done, failed, totals, meta)
        return ResumeResult(
            operation_id=operation_id,
            exists=bool(state) or bool(checkpoint.batches),
            state={_text(k): _text(v) for k, v in state.items()},
            checkpoint=_checkpoint_view(checkpoint),
            attempts=len(attempts),
            attempt_records={int(_text(k)): json.loads(v) for k, v in attempts.items()},
            outcomes={int(_text(k)): _text(v) for k, v in outcomes.items()},
            errors=[ErrorRecord.model_validate_json(raw) for raw in errors],
        )

    def queue_dead_letter(self, pipe: Any, letter: DeadLetter) -> None:
        """Store ``letter`` and index it by time."""
        pipe.set(
            self.keys.dead_letter(letter.operation_id),
            letter.model_dump_json(),
            ex=self.dead_letter_ttl_s,
        )
        pipe.zadd(self.keys.dead_letters, {letter.operation_id: letter.at_s})

    def operation_keys(self, operation_id: str) -> OperationKeys:
        """Return the key names of ``operation_id``."""
        return self.keys.operation(operation_id)


class ChunkingErrorHandler:
    """The synchronous face, over ``redis.Redis``."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        keys: KeyBuilder,
        policy: RetryPolicy,
        table: ClassificationTable | None = None,
        ttl_s: int,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        dead_letter_ttl_s: int,
        gated_queue: str = "chunking.gated",
        permits_of: Callable[[str], int] = lambda _: 1,
    ) -> None:
        self.core = _HandlerCore(
            keys=keys,
            policy=policy,
            table=table,
            ttl_s=ttl_s,
            history_limit=history_limit,
            dead_letter_ttl_s=dead_letter_ttl_s,
            gated_queue=gated_queue,
            permits_of=permits_of,
        )
        self._client = client
        self.core.monitor = ResourceMonitor(pool=client.connection_pool)
        self._begin = client.register_script(_BEGIN_ATTEMPT_LUA)

    def handle_with_correlation(
        self,
        operation_id: str,
        correlation_id: str,
        error: BaseException,
        context: ErrorContext | Mapping[str, Any] | None = None,
    ) -> RecoveryResult:
        """Decide what follows ``error`` and record it in the operation's history."""
        result, record = self.core.assess(
            operation_id, correlation_id, error, _context(context)
        )
        pipe = self._client.pipeline(transaction=True)
        self.core.queue_error(pipe, operation_id, record)
        pipe.execute()
        return result

    def handle_resource_exhaustion(
        self,
        operation_id: str,
        resource_type: str,
        current_usage: float,
        limit: float,
        **options: Any,
    ) -> ResourceDecision:
        """Decide about an exhausted resource; gated work joins the line in Redis.

        ``options`` may give ``attempt``, ``current_batch_size`` and
        ``current_strategy``.
        """
        decision = self.core.decide_resource(
            operation_id, resource_type, current_usage, limit, options
        )
        if decision.queue is None:
            return decision
        pipe = self._client.pipeline(transaction=True)
        self.core.queue_join(pipe, operation_id, decision.resource_type, time.time())
        return self.core.placed(decision, pipe.execute())

    def resume_operation(self, operation_id: str) -> ResumeResult:
        """Return the operation's saved state, checkpoint, attempts and errors."""
        pipe = self._client.pipeline(transaction=False)
        self.core.queue_resume_reads(pipe, operation_id)
        return self.core.parse_resume(operation_id, pipe.execute())

    def create_error_report(self, operation_id: str) -> ErrorReport:
        """Return the operation's error report (see :mod:`recovery.reports`)."""
        from recovery.reports import build_report  # noqa: PLC0415 - it builds on this module

        return build_report(self.resume_operation(operation_id))

    def analyze_patterns(
        self, *, window_s: float = 3600.0, top: int = 10
    ) -> PatternReport:
        """Return error counts, trends and top failing items over the last ``window_s``.

        Reads every operation's error history still in Redis (a scan of its keys).
        """
        keys = self.core.keys
        errors: dict[str, list[ErrorRecord]] = {}
        failed: dict[str, dict[str, str]] = {}
        for raw_key in self._client.scan_iter(
            match=f"{keys.prefix}:op:*:errors", count=500
        ):
            operation_id = raw_key.decode().split(":")[-2]
            errors[operation_id] = self.error_history(operation_id)
            raw_failed = cast(
                dict[bytes, bytes],
                self._client.hgetall(keys.operation(operation_id).failed),
            )
            failed[operation_id] = {_text(k): _text(v) for k, v in raw_failed.items()}
        from recovery.reports import analyze_patterns  # noqa: PLC0415

        return analyze_patterns(
            errors, failed, now_s=time.time(), window_s=window_s, top=top
        )

    def begin_attempt(
        self,
        operation_id: str,
        *,
        correlation_id: str,
        worker: str | None = None,
        soft_limit_s: float | None = None,
        hard_limit_s: float | None = None,
        queue: str | None = None,
    ) -> AttemptStart:
        """Number the attempt that starts now (from 1) and notice a lost predecessor."""
        keys = self.core.operation_keys(operation_id)
        record = self.core.attempt_record(
            correlation_id, worker, soft_limit_s, hard_limit_s, queue
        )
        attempt, lost = cast(
            list[int],
            self._begin(
                keys=[keys.attempts, keys.outcomes], args=[self.core.ttl_s, record]
            ),
        )
        return AttemptStart(attempt=attempt, previous_lost=bool(lost))

    def finish_attempt(self, operation_id: str, attempt: int, outcome: str) -> None:
        """Record how attempt ``attempt`` ended."""
        pipe = self._client.pipeline(transaction=True)
        self.core.queue_finish(pipe, operation_id, attempt, outcome)
        pipe.execute()

    def dead_letter(self, letter: DeadLetter) -> None:
        """Keep ``letter`` for replay."""
        pipe = self._client.pipeline(transaction=True)
        self.core.queue_dead_letter(pipe, letter)
        pipe.execute()

    def last_attempt(self, operation_id: str) -> tuple[int, dict[str, Any]]:
        """Return the number and start record of the operation's latest attempt.

        ``(0, {})`` when no attempt began.
        """
        key = self.core.operation_keys(operation_id).attempts
        count = int(self._client.hlen(key))
        if count == 0:
            return 0, {}
        raw = cast(bytes | None, self._client.hget(key, str(count)))
        return count, json.loads(raw) if raw else {}

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """Return kept dead letters, newest first; index entries that expired are dropped."""
        keys = self.core.keys
        raw_ids = cast(
            list[bytes], self._client.zrevrange(keys.dead_letters, 0, limit - 1)
        )
        ids = [_text(item) for item in raw_ids]
        letters = []
        for operation_id in ids:
            letter = self.dead_letter_of(operation_id)
            if letter is None:
                self._client.zrem(keys.dead_letters, operation_id)
            else:
                letters.append(letter)
        return letters

    def dead_letter_of(self, operation_id: str) -> DeadLetter | None:
        """Return the operation's dead letter, or ``None``."""
        raw = self._client.get(self.core.keys.dead_letter(operation_id))
        return None if raw is None else DeadLetter.model_validate_json(cast(bytes, raw))

    def drop_dead_letter(self, operation_id: str) -> bool:
        """Remove the operation's dead letter; return whether there was one."""
        keys = self.core.keys
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(keys.dead_letter(operation_id))
        pipe.zrem(keys.dead_letters, operation_id)
        deleted, _ = pipe.execute()
        return bool(deleted)

    def purge_dead_letters(self, *, older_than_s: float | None = None) -> int:
        """Remove dead letters (only those older than ``older_than_s`` seconds, if given)."""
        keys = self.core.keys
        cutoff = "+inf" if older_than_s is None else time.time() - older_than_s
        raw_ids = cast(
            list[bytes], self._client.zrangebyscore(keys.dead_letters, "-inf", cutoff)
        )
        ids = [_text(item) for item in raw_ids]
        return sum(self.drop_dead_letter(operation_id) for operation_id in ids)

    def reset_attempts(self, operation_id: str) -> None:
        """Forget the operation's attempt count, so a replay gets a full budget.

        The error history stays.
        """
        keys = self.core.operation_keys(operation_id)
        self._client.delete(keys.attempts, keys.outcomes)

    def error_history(self, operation_id: str) -> list[ErrorRecord]:
        """Return the operation's error records, oldest first."""
        raw = cast(
            list[bytes],
            self._client.lrange(self.core.operation_keys(operation_id).errors, 0, -1),
        )
        return [ErrorRecord.model_validate_json(item) for item in raw]


class AsyncChunkingErrorHandler:
    """The asynchronous face, over ``redis.asyncio.Redis``; same operations, awaited."""

    def __init__(
        self,
        *,
        client: redis.asyncio.Redis,
        keys: KeyBuilder,
        policy: RetryPolicy,
        table: ClassificationTable | None = None,
        ttl_s: int,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        dead_letter_ttl_s: int,
        gated_queue: str = "chunking.gated",
        permits_of: Callable[[str], int] = lambda _: 1,
    ) -> None:
        self.core = _HandlerCore(
            keys=keys,
            policy=policy,
            table=table,
            ttl_s=ttl_s,
            history_limit=history_limit,
            dead_letter_ttl_s=dead_letter_ttl_s,
            gated_queue=gated_queue,
            permits_of=permits_of,
        )
        self._client = client
        self._begin = client.register_script(_BEGIN_ATTEMPT_LUA)

    async def handle_with_correlation(
        self,
        operation_id: str,
        correlation_id: str,
        error: BaseException,
        context: ErrorContext | Mapping[str, Any] | None = None,
    ) -> RecoveryResult:
        """Decide what follows ``error`` and record it in the operation's history."""
        result, record = self.core.assess(
            operation_id, correlation_id, error, _context(context)
        )
        pipe = self._client.pipeline(transaction=True)
        self.core.queue_error(pipe, operation_id, record)
        await pipe.execute()
        return result

    async def handle_resource_exhaustion(
        self,
        operation_id: str,
        resource_type: str,
        current_usage: float,
        limit: float,
        **options: Any,
    ) -> ResourceDecision:
        """Decide about an exhausted resource; gated work joins the line in Redis."""
        decision = self.core.decide_resource(
            operation_id, resource_type, current_usage, limit, options
        )
        if decision.queue is None:
            return decision
        pipe = self._client.pipeline(transaction=True)
        self.core.queue_join(pipe, operation_id, decision.resource_type, time.time())
        return self.core.placed(decision, await pipe.execute())

    async def resume_operation(self, operation_id: str) -> ResumeResult:
        """Return the operation's saved state, checkpoint, attempts and errors."""
        pipe = self._client.pipeline(transaction=False)
        self.core.queue_resume_reads(pipe, operation_id)
        return self.core.parse_resume(operation_id, await pipe.execute())

    async def create_error_report(self, operation_id: str) -> ErrorReport:
        """Return the operation's error report (see :mod:`recovery.reports`)."""
        from recovery.reports import build_report  # noqa: PLC0415 - it builds on this module

        return build_report(await self.resume_operation(operation_id))

    async def begin_attempt(
        self,
        operation_id: str,
        *,
        correlation_id: str,
        worker: str | None = None,
        soft_limit_s: float | None = None,
        hard_limit_s: float | None = None,
        queue: str | None = None,
    ) -> AttemptStart:
        """Number the attempt that starts now (from 1) and notice a lost predecessor."""
        keys = self.core.operation_keys(operation_id)
        record = self.core.attempt_record(
            correlation_id, worker, soft_limit_s, hard_limit_s, queue
        )
        attempt, lost = await self._begin(
            keys=[keys.attempts, keys.outcomes], args=[self.core.ttl_s, record]
        )
        return AttemptStart(attempt=int(attempt), previous_lost=bool(lost))

    async def finish_attempt(
        self, operation_id: str, attempt: int, outcome: str
    ) -> None:
        """Record how attempt ``attempt`` ended."""
        pipe = self._client.pipeline(transaction=True)
        self.core.queue_finish(pipe, operation_id, attempt, outcome)
        await pipe.execute()

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Keep ``letter`` for replay."""
        pipe = self._client.pipeline(transaction=True)
        self.core.queue_dead_letter(pipe, letter)
        await pipe.execute()

    async def error_history(self, operation_id: str) -> list[ErrorRecord]:
        """Return the operation's error records, oldest first."""
        raw = await self._client.lrange(
            self.core.operation_keys(operation_id).errors, 0, -1
        )
        return [ErrorRecord.model_validate_json(item) for item in raw]


def _context(context: ErrorContext | Mapping[str, Any] | None) -> ErrorContext:
    if isinstance(context, ErrorContext):
        return context
    return ErrorContext.model_validate(dict(context or {}))


def _checkpoint_view(checkpoint: Checkpoint) -> CheckpointView:
    return CheckpointView(
        done=sorted(checkpoint.done),
        failed=dict(checkpoint.failed),
        totals=dict(checkpoint.totals),
        batch_size=checkpoint.batch_size,
        batches=checkpoint.batches,
        updated_at_s=checkpoint.updated_at_s,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
