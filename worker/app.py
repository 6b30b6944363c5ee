"""The Celery app of chunkq, importable as ``worker.app:app``.

``celery -A worker.app worker`` and ``celery -A worker.app flower`` work as usual;
``chunkq worker`` starts the former on the right queues. The configuration comes from
``config.get_settings()`` through :func:`worker.celery_config.celery_config`; the
recovery layer's needs go in ``app.conf.chunkq_recovery``.
"""

from __future__ import annotations

import importlib

from celery import Celery

from config import get_settings
from recovery.task import RecoveryConfig
from worker import (
    runtime,
    signals,  # noqa: F401 - connects the signal handlers
)
from worker.celery_config import celery_config

_settings = get_settings()
app = Celery("chunkq", include=["tasks.chunking"])
app.config_from_object(celery_config(_settings))
app.conf.chunkq_recovery = RecoveryConfig(
    handler_factory=runtime.error_handler,
    gate_factory=runtime.admission_gate,
    lease_factory=runtime.lease_store,
    gated_queue=_settings.gated_queue,
    gate_poll_s=_settings.gate_poll_s,
)

for _module in _settings.imports:
    # Modules that register strategies must load in callers too, so that requests
    # naming their strategies validate before publishing.
    importlib.import_module(_module)
