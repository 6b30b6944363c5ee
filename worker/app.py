"""The Celery app of chunkq, importable as ``worker.app:app``.

``celery -A worker.app worker`` and ``celery -A worker.app flower`` work as usual;
``chunkq worker`` starts the former on the right queues. The configuration comes from
``config.get_settings()`` through :func:`worker.celery_config.celery_config`.
"""

from __future__ import annotations

from celery import Celery

from config import get_settings
from worker import signals  # noqa: F401 - connects the signal handlers
from worker.celery_config import celery_config

app = Celery("chunkq", include=["tasks.chunking"])
app.config_from_object(celery_config(get_settings()))
