"""Celery's configuration, derived from chunkq's settings in one pure function.

Choices and why:

- JSON only, both ways: pickle is refused (``accept_content``), so a message cannot
  run code in the worker.
- Late acknowledgement with reject on worker loss, and a prefetch of 1: a message is
  acknowledged only after its task returns, and a worker holds one unstarted message
  at a time, so a killed worker's job is delivered again and resumes from its
  checkpoint.
- Task events on (``worker_send_task_events``, ``task_send_sent_event``) and the
  started state tracked, so Flower and ``chunkq status`` see every transition.
- One visibility timeout for the broker and the Redis result backend, above every
  hard time limit (checked in ``config.Settings``).
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings

CHUNK_TASK_NAME = "tasks.chunk_documents"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery settings mapping for ``settings``."""
    url = settings.effective_redis_url
    transport_options = {"visibility_timeout": settings.visibility_timeout_s}
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_extended": True,
        "result_expires": settings.state_ttl_s,
        "task_default_queue": settings.queue,
        "task_routes": {CHUNK_TASK_NAME: {"queue": settings.queue}},
        "task_soft_time_limit": settings.soft_time_limit_s,
        "task_time_limit": settings.hard_time_limit_s,
        "imports": list(settings.imports),
    }
