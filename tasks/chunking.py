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
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.result import AsyncResult

from config import get_settings
from recovery.state import Status
from tasks.models import ChunkRequest
from tasks.pipeline import OperationRunner, Progress
from worker.app import app
from worker.celery_config import CHUNK_TASK_NAME
from worker.runtime import stores

PROGRESS_STATE = "PROGRESS"


class ChunkingTask(Task):  # type: ignore[misc]
    """Base of the chunking task: validates the request before publishing."""

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
        if self.request.called_directly:
            # Published by a caller, not re-published by the task itself (a retry).
            stores().states.update(
                request.operation_id,
                status=Status.PENDING.value,
                collection_id=request.collection_id,
                request=request.model_dump_json(),
            )
        return super().apply_async(
            args=(),
            kwargs={"request": request.model_dump(mode="json")},
            task_id=task_id or request.operation_id,
            **options,
        )

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        """Mark the operation failed when its task ends in failure."""
        stores().states.update(
            task_id, status=Status.FAILED.value, error=f"{type(exc).__name__}: {exc}"
        )


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


@app.task(bind=True, base=ChunkingTask, name=CHUNK_TASK_NAME)  # type: ignore[untyped-decorator]
def chunk_documents(self: ChunkingTask, request: dict[str, Any]) -> dict[str, Any]:
    """Chunk the request's documents; return the operation's summary."""
    parsed = ChunkRequest.parse(request)
    attempt = self.request.retries + 1
    handles = stores()
    handles.states.update(
        parsed.operation_id,
        status=Status.RUNNING.value,
        attempt=attempt,
        task_id=self.request.id or parsed.operation_id,
    )
    settings = get_settings()
    runner = OperationRunner(
        checkpoints=handles.checkpoints,
        states=handles.states,
        default_output_dir=settings.output_dir,
        sink_fsync=settings.sink_fsync,
        batch_size_for=lambda: settings.batch_size_default,
    )

    def publish(progress: Progress) -> None:
        self.update_state(state=PROGRESS_STATE, meta=progress.as_meta())

    return runner.run(parsed, attempt=attempt, on_progress=publish)
