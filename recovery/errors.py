"""Exceptions of the recovery layer.

The tree, with one root for the package and control-flow signals kept apart from
real failures::

    RecoveryError                      root of every exception raised by recovery/
    ├── InvalidIdError                 an operation or collection id is unsafe as a key part
    ├── ResourceExhaustedError         memory, CPU or connections ran out (classify.py)
    ├── StrategyError                  a processing strategy failed (classify.py)
    ├── InvalidInputError              input that no retry can fix (classify.py)
    └── PartialFailureError            some items failed, others succeeded (classify.py)

Data travels as attributes, never only inside the message.
"""

from __future__ import annotations


class RecoveryError(Exception):
    """Root of chunkq's recovery-layer exceptions."""


class InvalidIdError(RecoveryError, ValueError):
    """An id cannot be used as part of a Redis key.

    Attributes:
        field: which id it is, for example ``"operation_id"``.
        value: the refused value, shortened for messages.
        reason: what is wrong with it.
    """

    def __init__(self, *, field: str, value: str, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field} {value[:80]!r} is refused: {reason}")
