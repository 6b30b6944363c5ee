"""Process-wide handles built from the settings: Redis client, stores, error handler.

Each is built on first use, after a worker process has forked; redis-py's pool notices
a fork and opens fresh connections in the child.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import redis

from config import get_settings
from config.policy import retry_policy
from recovery.checkpoint import CheckpointStore
from recovery.gate import AdmissionGate
from recovery.handler import ChunkingErrorHandler
from recovery.keys import KeyBuilder
from recovery.lease import LeaseStore
from recovery.locks import ResourceLocks
from recovery.policy import RetryPolicy
from recovery.state import StateStore


@dataclass(frozen=True, slots=True)
class Stores:
    """The Redis-backed stores of operations."""

    client: redis.Redis
    keys: KeyBuilder
    checkpoints: CheckpointStore
    states: StateStore
    errors: ChunkingErrorHandler
    policy: RetryPolicy
    gate: AdmissionGate
    leases: LeaseStore
    locks: ResourceLocks


@functools.cache
def stores() -> Stores:
    """Return the process's stores, connected to the configured Redis."""
    settings = get_settings()
    client = redis.Redis.from_url(
        settings.effective_redis_url, health_check_interval=30, socket_keepalive=True
    )
    keys = KeyBuilder(prefix=settings.key_prefix)
    policy = retry_policy(settings)
    return Stores(
        client=client,
        keys=keys,
        checkpoints=CheckpointStore(
            client=client, keys=keys, ttl_s=settings.state_ttl_s
        ),
        states=StateStore(client=client, keys=keys, ttl_s=settings.state_ttl_s),
        errors=ChunkingErrorHandler(
            client=client,
            keys=keys,
            policy=policy,
            ttl_s=settings.state_ttl_s,
            history_limit=settings.error_history_limit,
            dead_letter_ttl_s=settings.dead_letter_ttl_s,
            gated_queue=settings.gated_queue,
            permits_of=lambda resource: settings.gate_permits.get(
                resource, settings.gate_default_permits
            ),
        ),
        policy=policy,
        gate=AdmissionGate(
            client=client,
            keys=keys,
            permits=settings.gate_permits,
            default_permits=settings.gate_default_permits,
            permit_ttl_s=settings.gate_permit_ttl_s,
            wait_ttl_s=settings.gate_wait_ttl_s,
        ),
        leases=LeaseStore(
            client=client,
            keys=keys,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            ttl_s=settings.state_ttl_s,
        ),
        locks=ResourceLocks(
            client=client, keys=keys, timeout_s=settings.heartbeat_timeout_s
        ),
    )


def admission_gate() -> AdmissionGate:
    """Return the process's admission gate."""
    return stores().gate


def lease_store() -> LeaseStore:
    """Return the process's lease store."""
    return stores().leases


def error_handler() -> ChunkingErrorHandler:
    """Return the process's error handler."""
    return stores().errors
