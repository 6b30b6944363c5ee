"""Celery signal handlers of chunkq, connected when ``worker.app`` is imported.

- Logging: when Celery sets up the worker's loggers, their handlers get the
  event-style formatter of :mod:`worker.logs`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from worker import logs


def _install_event_formatter(logger: logging.Logger, **_: Any) -> None:
    logs.install(logger)


signals.after_setup_logger.connect(_install_event_formatter, weak=False)
signals.after_setup_task_logger.connect(_install_event_formatter, weak=False)
