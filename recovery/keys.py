"""Every Redis key chunkq uses, built in this one module.

Keys of one operation share the prefix ``{prefix}:op:{operation_id}:`` so that an
operation's traces can be listed, expired and removed together, and no other
operation's data is touched. Ids are checked by :mod:`recovery.ids` before they get here.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovery.ids import check_id


@dataclass(frozen=True, slots=True)
class OperationKeys:
    """The Redis keys of one operation."""

    state: str
    """Hash: status, correlation id, request, timestamps."""
    plan: str
    """String: JSON list of the item ids the operation will process, fixed on first run."""
    done: str
    """Set: ids of items finished."""
    failed: str
    """Hash: item id to the reason it failed."""
    totals: str
    """Hash: counters summed over finished items."""
    checkpoint: str
    """Hash: batch size, attempt and time of the last checkpoint."""
    attempts: str
    """Hash: attempt number to a JSON record of its start (worker, limits, time)."""
    outcomes: str
    """Hash: attempt number to how it ended (``completed``, ``retry``, ``fail`` ...)."""
    errors: str
    """List: JSON error records, oldest first, capped in length."""
    lease: str
    """Hash: the epoch of the attempt that holds the operation, and its holder."""

    def all(self) -> tuple[str, ...]:
        """Return every key of the operation (its dead letter is kept apart)."""
        return (
            self.state,
            self.plan,
            self.done,
            self.failed,
            self.totals,
            self.checkpoint,
            self.attempts,
            self.outcomes,
            self.errors,
            self.lease,
        )


@dataclass(frozen=True, slots=True)
class KeyBuilder:
    """Builds key names under one prefix (``settings.key_prefix``)."""

    prefix: str = "chunkq"

    def operation(self, operation_id: str) -> OperationKeys:
        """Return the keys of ``operation_id``.

        Raises:
            recovery.errors.InvalidIdError: the id is not a safe key part.
        """
        base = f"{self.prefix}:op:{check_id('operation_id', operation_id)}"
        return OperationKeys(
            state=f"{base}:state",
            plan=f"{base}:plan",
            done=f"{base}:done",
            failed=f"{base}:failed",
            totals=f"{base}:totals",
            checkpoint=f"{base}:checkpoint",
            attempts=f"{base}:attempts",
            outcomes=f"{base}:outcomes",
            errors=f"{base}:errors",
            lease=f"{base}:lease",
        )

    @property
    def dead_letters(self) -> str:
        """Sorted set: operation ids with a dead letter, scored by Unix time in seconds."""
        return f"{self.prefix}:dead"

    @property
    def running(self) -> str:
        """Sorted set: running operation ids by heartbeat deadline, Unix ms."""
        return f"{self.prefix}:running"

    def item_fingerprints(self, scope: str) -> str:
        """Hash: item id to the fingerprint of the work last done on it, per scope."""
        return f"{self.prefix}:fp:items:{check_id('scope', scope) if scope else '-'}"

    def work_fingerprint(self, fingerprint: str) -> str:
        """String: the operation that does the work with this fingerprint."""
        return f"{self.prefix}:fp:work:{fingerprint}"

    def dead_letter(self, operation_id: str) -> str:
        """String: the JSON dead-letter record of ``operation_id``."""
        return f"{self.prefix}:dead:{check_id('operation_id', operation_id)}"
