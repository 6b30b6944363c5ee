"""Celery signal handlers of chunkq, connected when ``worker.app`` is imported.

- Correlation ids: every published task message carries the current correlation id
  in the ``chunkq_correlation_id`` header (a fresh one when none is bound). Before a
  task runs, the worker binds the id of its message, so the task's logs, its retries
  and any task it sends carry the same id; after it, the binding is undone.
- Logging: when Celery sets up the worker's loggers, their handlers get the
  event-style formatter of :mod:`worker.logs` and the correlation id filter.
- The reaper: when a worker is ready, its main process starts a reaper thread that
  sends again the operations whose heartbeat expired (:mod:`recovery.reaper`); it
  stops with the worker.
"""

from __future__ import annotations

import logging
from contextvars import Token
from typing import Any

from celery import Task, signals

from config import get_settings
from recovery import correlation
from recovery.reaper import Reaper
from worker import logs, runtime

_bindings: dict[str, Token[str | None]] = {}


def _put_correlation_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None and not correlation.accept(
        headers.get(correlation.CORRELATION_HEADER)
    ):
        headers[correlation.CORRELATION_HEADER] = correlation.ensure_correlation_id()


def _bind_task_correlation(task_id: str, task: Task, **_: Any) -> None:
    given = correlation.accept(task.request.get(correlation.CORRELATION_HEADER))
    _bindings[task_id] = correlation.bind(given or correlation.new_correlation_id())


def _unbind_task_correlation(task_id: str, **_: Any) -> None:
    token = _bindings.pop(task_id, None)
    if token is not None:
        correlation.unbind(token)


def _install_logging(logger: logging.Logger, **_: Any) -> None:
    logs.install(logger)


_reapers: list[Reaper] = []


def _start_reaper(**_: Any) -> None:
    from tasks.chunking import resubmit  # noqa: PLC0415 - the worker's own task module

    handles = runtime.stores()
    reaper = Reaper(
        leases=handles.leases,
        locks=handles.locks,
        resubmit=resubmit,
        interval_s=get_settings().reaper_interval_s,
    )
    _reapers.append(reaper.start())


def _stop_reaper(**_: Any) -> None:
    while _reapers:
        _reapers.pop().stop()


signals.worker_ready.connect(_start_reaper, weak=False)
signals.worker_shutdown.connect(_stop_reaper, weak=False)
signals.before_task_publish.connect(_put_correlation_header, weak=False)
signals.task_prerun.connect(_bind_task_correlation, weak=False)
signals.task_postrun.connect(_unbind_task_correlation, weak=False)
signals.after_setup_logger.connect(_install_logging, weak=False)
signals.after_setup_task_logger.connect(_install_logging, weak=False)
