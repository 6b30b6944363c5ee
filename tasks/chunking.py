"""The Celery task ``tasks.chunk_documents``.

Call it as any Celery task::

    from tasks import chunk_documents
    result = chunk_documents.delay(source_root="/data/docs", collection_id="docs")
    result.id          # the operation id; progress: result.state == "PROGRESS", .info
    result.get()       # the summary once finished

Arguments may be a :class:`tasks.models.ChunkRequest`, a mapping, or keyword arguments
of one. The request is validated before anything is published, so bad parameters raise
:class:`tasks.errors.InvalidRequestError` in the caller at once; the worker validates
again. The task id is the operation id, so a redelivered or resubmitted operation
resumes the same checkpoint.

Failures go to :class:`recovery.task.RecoverableTask`: a retry after a memory error
carries a lower ``max_batch_size``; when attempts run out, the request's cleanup
strategy (or ``CHUNKQ_CLEANUP_STRATEGY``) decides what stays:

- ``save_partial``: finished documents stay; the others are marked failed. With at
  least one document done the task returns a ``partial`` summary with an ``error``;
  with none it fails.
- ``rollback``: every chunk file the operation wrote is removed; the task fails.
- ``discard``: as ``rollback``, and the operation's Redis traces go too (its dead
  letter stays, for replay); the task fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from typing import Any

from celery.result import AsyncResult

from config import get_settings
from config.policy import batch_sizing
from recovery import correlation
from recovery.gate import Admission
from recovery.handler import RecoveryResult, sanitize_message
from recovery.pressure import memory_percent
from recovery.state import Status
from recovery.task import RecoverableTask, current_attempt
from tasks.cleanup import UnknownOperationError, cleanup_operation, stored_request
from tasks.errors import InvalidRequestError
from tasks.models import ChunkRequest
from tasks.pipeline import OperationRunner, Progress, request_signature, summary
from tasks.sources import FolderSource, printable_id
from worker.app import app
from worker.celery_config import CHUNK_TASK_NAME
from worker.runtime import stores

logger = logging.getLogger(__name__)

PROGRESS_STATE = "PROGRESS"
PROGRESS_EVENT = "task-progress"


class ChunkingTask(RecoverableTask):
    """Base of the chunking task: validates before publishing, adapts retries."""

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Validate the request, then publish it with the operation id as task id.

        Raises:
            tasks.errors.InvalidRequestError: the request is malformed; nothing was sent.
        """
        request = _request_from_call(args, kwargs)
        headers = dict(options.pop("headers", None) or {})
        correlation_id = (
            correlation.accept(headers.get(correlation.CORRELATION_HEADER))
            or correlation.ensure_correlation_id()
        )
        headers[correlation.CORRELATION_HEADER] = correlation_id
        if self.request.called_directly and not options.get("retries"):
            # A new submission, not a retry sent by the task or the worker.
            existing = _existing_operation(request) or _same_work(request)
            if existing is not None:
                return existing
            stores().states.update(
                request.operation_id,
                status=Status.PENDING.value,
                collection_id=request.collection_id,
                correlation_id=correlation_id,
                request=request.model_dump_json(),
                error="",
            )
        return super().apply_async(
            args=(),
            kwargs={"request": request.model_dump(mode="json")},
            task_id=task_id or request.operation_id,
            headers=headers,
            **options,
        )

    def operation_id_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The operation id of the request (it is also the task id)."""
        return str(_request_from_call(args, kwargs).operation_id)

    def arguments_for_retry(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], result: RecoveryResult
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Carry a smaller batch size or a simpler strategy into the next attempt."""
        request = _request_from_call(args, kwargs)
        changes: dict[str, Any] = {}
        if result.next_batch_size is not None:
            changes["max_batch_size"] = result.next_batch_size
        if result.next_strategy is not None:
            spec = request.spec.converted_to(result.next_strategy)
            changes.update(
                strategy=spec.strategy, chunk_size=spec.chunk_size, overlap=spec.overlap
            )
        updated = ChunkRequest.parse({**request.model_dump(), **changes})
        return (), {"request": updated.model_dump(mode="json")}

    def on_waiting(
        self, operation_id: str, resource: str, admission: Admission
    ) -> None:
        """Show the wait in the operation's state: resource, position, estimate."""
        stores().states.update(
            operation_id,
            status=Status.WAITING.value,
            gate_resource=resource,
            gate_position=admission.position,
            gate_estimated_wait_s=(
                ""
                if admission.estimated_wait_s is None
                else round(admission.estimated_wait_s, 1)
            ),
        )

    def on_attempts_exhausted(
        self,
        error: BaseException,
        result: RecoveryResult,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Apply the cleanup strategy; return a partial summary or re-raise."""
        partial = _clean_up(_request_from_call(args, kwargs), result, error)
        if partial is not None:
            return partial
        raise error

    def on_stopped_by_hard_limit(
        self,
        error: BaseException,
        result: RecoveryResult,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Apply the cleanup strategy after hard time limits ended the operation."""
        _clean_up(_request_from_call(args, kwargs), result, error)


def _clean_up(
    request: ChunkRequest, result: RecoveryResult, error: BaseException
) -> dict[str, Any] | None:
    """Apply the request's cleanup strategy; return the partial summary, if one stays."""
    strategy = request.cleanup or get_settings().cleanup_strategy
    reason = f"{type(error).__name__}: {sanitize_message(str(error))} ({result.reason})"
    done = cleanup_operation(request.operation_id, strategy, reason=reason)
    if done.status != Status.PARTIAL.value:
        return None
    handles = stores()
    return summary(
        request,
        sink=_runner().sink_for(request),
        checkpoint=handles.checkpoints.load(request.operation_id),
        plan_size=len(handles.checkpoints.plan(request.operation_id) or []),
        status=Status.PARTIAL,
        attempt=result.attempt,
        elapsed_s=0.0,
        error=reason,
    )


WORK_FIELDS = (
    "collection_id",
    "source_root",
    "document_ids",
    "include",
    "exclude",
    "strategy",
    "chunk_size",
    "overlap",
    "output_dir",
)
"""The request fields that say what work an operation does."""

ACTIVE = frozenset({Status.PENDING.value, Status.WAITING.value, Status.RUNNING.value})


def _existing_operation(request: ChunkRequest) -> AsyncResult | None:
    """Return the operation already under way with this id, if any.

    An operation id names one piece of work: submitting it again with other
    parameters is refused; submitting it while it is pending, waiting or running
    returns it instead of sending a second copy; submitting a finished one resumes
    it (its old result is forgotten, so ``.get()`` waits for the new run).

    Raises:
        InvalidRequestError: the id exists with other parameters.
    """
    state = stores().states.get(request.operation_id)
    if not state:
        return None
    stored_json = state.get("request")
    if stored_json:
        stored = ChunkRequest.model_validate_json(stored_json)
        differing = [
            name
            for name in WORK_FIELDS
            if getattr(stored, name) != getattr(request, name)
        ]
        if differing:
            message = (
                f"operation {request.operation_id!r} exists with other "
                f"{', '.join(differing)}; give a new operation id for new work"
            )
            raise InvalidRequestError(message, errors=[message])
    result = chunk_documents.AsyncResult(request.operation_id)
    if state.get("status") in ACTIVE:
        return result
    result.forget()
    return None


def work_fingerprint(request: ChunkRequest) -> str | None:
    """Return the SHA-256 of the work a request asks for, or ``None`` if unknowable.

    It covers the collection, source and output folders, strategy and sizes, selection
    patterns,
    the engine version, and every document with its size and modification time, as
    this machine sees the source folder (not the operation id). ``None`` when the
    source folder is not visible here.
    """
    if not request.source_root.is_dir():
        return None
    source = FolderSource(
        root=request.source_root,
        include=request.include,
        exclude=request.exclude,
        skip_dirs=(request.output_dir or get_settings().output_dir,),
    )
    ids = (
        list(request.document_ids)
        if request.document_ids is not None
        else source.list_ids()
    )
    identities = []
    for document_id in sorted(ids):
        try:
            status = (source.root / document_id).stat()
            identities.append(
                [printable_id(document_id), status.st_size, status.st_mtime_ns]
            )
        except (OSError, UnicodeError):
            identities.append([printable_id(document_id), -1, -1])
    work = {
        "collection_id": request.collection_id,
        "source_root": str(request.source_root),
        "output_dir": str(request.output_dir or get_settings().output_dir),
        "signature": request_signature(request),
        "include": request.include,
        "exclude": request.exclude,
        "documents": identities,
    }
    return hashlib.sha256(json.dumps(work, sort_keys=True).encode()).hexdigest()


def _same_work(request: ChunkRequest) -> AsyncResult | None:
    """Return the operation that already does or did this work, if any.

    The first operation to claim a fingerprint (set-if-absent in Redis) keeps it
    while it is pending, waiting, running, or finished with its result still kept;
    a failed or forgotten one gives it up to the new request.
    """
    if not request.deduplicate:
        return None
    fingerprint = work_fingerprint(request)
    if fingerprint is None:
        return None
    handles = stores()
    key = handles.keys.work_fingerprint(fingerprint)
    ttl_s = get_settings().fingerprint_ttl_s
    if handles.client.set(key, request.operation_id, nx=True, ex=ttl_s):
        return None
    raw_owner = handles.client.get(key)
    owner = raw_owner.decode() if isinstance(raw_owner, bytes) else ""
    if owner and owner != request.operation_id:
        status = handles.states.get(owner).get("status")
        result = chunk_documents.AsyncResult(owner)
        kept = status in ACTIVE or (
            status in {Status.COMPLETED.value, Status.PARTIAL.value}
            and result.state != "PENDING"
        )
        if kept:
            logger.info(
                "operation.deduplicated",
                extra={"operation_id": request.operation_id, "same_as": owner},
            )
            return result
    handles.client.set(key, request.operation_id, ex=ttl_s)
    return None


def replay(operation_id: str) -> AsyncResult:
    """Send a dead-lettered operation again from its checkpoint, with its correlation id.

    Its attempt count starts afresh (the error history stays), documents recorded as
    failed are tried again, and its dead letter is removed; a new one is written if it
    fails again.

    Raises:
        tasks.cleanup.UnknownOperationError: no dead letter exists for it.
    """
    handles = stores()
    letter = handles.errors.dead_letter_of(operation_id)
    if letter is None:
        raise UnknownOperationError(operation_id)
    request = ChunkRequest.parse(letter.request.get("request", letter.request))
    handles.errors.reset_attempts(operation_id)
    handles.errors.drop_dead_letter(operation_id)
    handles.checkpoints.forget_failures(operation_id)
    queue = letter.queue if letter.queue != get_settings().gated_queue else None
    return chunk_documents.apply_async(
        (request,),
        headers={correlation.CORRELATION_HEADER: letter.correlation_id},
        **({"queue": queue} if queue else {}),
    )


def resume(operation_id: str) -> AsyncResult:
    """Send a stopped (failed, partial or interrupted) operation again from its checkpoint.

    Finished documents are skipped; documents recorded as failed are tried again.

    Raises:
        tasks.cleanup.UnknownOperationError: the operation is unknown or expired.
    """
    request = stored_request(operation_id)
    stores().checkpoints.forget_failures(operation_id)
    correlation_id = stores().states.get(operation_id).get("correlation_id")
    headers = {correlation.CORRELATION_HEADER: correlation_id} if correlation_id else {}
    return chunk_documents.apply_async((request,), headers=headers)


def resubmit(operation_id: str) -> bool:
    """Send a running operation whose worker stopped beating again, from its checkpoint.

    Used by the reaper. Returns ``False`` (and stops watching it) when the operation
    is finished or unknown.
    """
    handles = stores()
    state = handles.states.get(operation_id)
    if not state or state.get("status") not in ACTIVE or not state.get("request"):
        handles.client.zrem(handles.keys.running, operation_id)
        return False
    request = ChunkRequest.model_validate_json(state["request"])
    attempt, _ = handles.errors.last_attempt(operation_id)
    correlation_id = state.get("correlation_id") or correlation.new_correlation_id()
    chunk_documents.apply_async(
        (request,),
        task_id=operation_id,
        retries=max(attempt, 1),
        headers={correlation.CORRELATION_HEADER: correlation_id},
    )
    return True


def _request_from_call(
    args: tuple[Any, ...] | list[Any] | None, kwargs: dict[str, Any] | None
) -> ChunkRequest:
    args = tuple(args or ())
    kwargs = dict(kwargs or {})
    if len(args) > 1:
        raise TypeError("chunk_documents takes one request, or keyword arguments")
    if args and kwargs:
        raise TypeError(
            "chunk_documents takes a request or keyword arguments, not both"
        )
    if args:
        return ChunkRequest.parse(args[0])
    if set(kwargs) == {"request"}:
        return ChunkRequest.parse(kwargs["request"])
    return ChunkRequest.parse(kwargs)


def _runner() -> OperationRunner:
    settings = get_settings()
    handles = stores()
    sizing = batch_sizing(settings)
    return OperationRunner(
        checkpoints=handles.checkpoints,
        states=handles.states,
        default_output_dir=settings.output_dir,
        sink_fsync=settings.sink_fsync,
        batch_size_for=lambda: sizing.batch_size_for(memory_percent()),
        next_strategy=handles.policy.next_strategy,
        leases=handles.leases,
    )


@app.task(bind=True, base=ChunkingTask, name=CHUNK_TASK_NAME)  # type: ignore[untyped-decorator]
def chunk_documents(self: ChunkingTask, request: dict[str, Any]) -> dict[str, Any]:
    """Chunk the request's documents; return the operation's summary."""
    parsed = ChunkRequest.parse(request)
    context = current_attempt()
    attempt = context.attempt if context else self.request.retries + 1
    hard_s, soft_s = self._time_limits()
    stores().states.update(
        parsed.operation_id,
        status=Status.RUNNING.value,
        attempt=attempt,
        task_id=self.request.id or parsed.operation_id,
        correlation_id=correlation.ensure_correlation_id(),
        soft_time_limit_s=soft_s or "",
        time_limit_s=hard_s or "",
    )

    def publish(progress: Progress) -> None:
        meta = progress.as_meta()
        self.update_state(state=PROGRESS_STATE, meta=meta)
        with contextlib.suppress(Exception):  # events are best effort; state is not
            self.send_event(PROGRESS_EVENT, **meta)

    started_s = time.monotonic()
    result = _runner().run(
        parsed, attempt=attempt, on_progress=publish, context=context
    )
    result["elapsed_s"] = round(time.monotonic() - started_s, 3)
    return result
