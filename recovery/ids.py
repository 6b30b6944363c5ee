"""Ids that become parts of Redis keys: validation and generation.

An id is safe when it is 1 to 64 characters from ``A-Z a-z 0-9 . _ -`` and starts
with a letter or digit. The key separator ``:``, spaces, slashes and glob characters
are refused, so no id can reach into another operation's keys.
"""

from __future__ import annotations

import re
import uuid

from recovery.errors import InvalidIdError

ID_MAX_LENGTH = 64
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_id(field: str, value: str) -> str:
    """Return ``value`` when it is a safe key part.

    Raises:
        InvalidIdError: the value is empty, longer than 64 characters, or holds a
            character outside ``A-Z a-z 0-9 . _ -`` (or starts with ``.``, ``_``, ``-``).
    """
    if not value:
        raise InvalidIdError(field=field, value=value, reason="it is empty")
    if len(value) > ID_MAX_LENGTH:
        raise InvalidIdError(
            field=field,
            value=value,
            reason=f"it has {len(value)} characters, at most {ID_MAX_LENGTH} are allowed",
        )
    if not _ID_PATTERN.fullmatch(value):
        raise InvalidIdError(
            field=field,
            value=value,
            reason="only letters, digits, '.', '_' and '-' are allowed, "
            "starting with a letter or digit",
        )
    return value


def new_operation_id() -> str:
    """Return a fresh operation id (32 hexadecimal characters)."""
    return uuid.uuid4().hex
