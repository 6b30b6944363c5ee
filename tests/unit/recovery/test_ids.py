"""Unit tests for recovery.ids and recovery.keys: safe ids and key names."""

from __future__ import annotations

import re

import pytest

from recovery.errors import InvalidIdError, RecoveryError
from recovery.ids import ID_MAX_LENGTH, check_id, new_operation_id
from recovery.keys import KeyBuilder


@pytest.mark.parametrize(
    "value", ["a", "A1", "op-1", "op_1", "op.1", "0abc", "x" * ID_MAX_LENGTH]
)
def test_check_id_accepts_safe_values(value: str) -> None:
    """Letters, digits, '.', '_' and '-' starting with a letter or digit are safe."""
    assert check_id("operation_id", value) == value


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        ("", "empty"),
        ("x" * (ID_MAX_LENGTH + 1), "65 characters"),
        ("a:b", "only letters"),
        ("a b", "only letters"),
        ("a/b", "only letters"),
        ("a*", "only letters"),
        ("a?", "only letters"),
        ("[ab]", "only letters"),
        (".a", "only letters"),
        ("_a", "only letters"),
        ("-a", "only letters"),
        ("é", "only letters"),
        ("a\n", "only letters"),
    ],
)
def test_check_id_refuses_unsafe_values(value: str, reason_part: str) -> None:
    """Unsafe ids raise InvalidIdError carrying the field, value and reason."""
    with pytest.raises(InvalidIdError) as caught:
        check_id("collection_id", value)

    assert caught.value.field == "collection_id"
    assert caught.value.value == value
    assert reason_part in caught.value.reason
    assert str(caught.value).startswith("collection_id ")


def test_invalid_id_error_is_a_recovery_and_value_error() -> None:
    """InvalidIdError sits under RecoveryError and is a ValueError."""
    assert issubclass(InvalidIdError, RecoveryError)
    assert issubclass(InvalidIdError, ValueError)


def test_long_value_is_shortened_in_message() -> None:
    """The message shows at most 80 characters of a refused value."""
    with pytest.raises(InvalidIdError) as caught:
        check_id("operation_id", "y" * 500)

    assert "y" * 81 not in str(caught.value)


def test_new_operation_id_is_32_hex_and_safe() -> None:
    """A new operation id is 32 hexadecimal characters and passes check_id."""
    operation_id = new_operation_id()

    assert re.fullmatch(r"[0-9a-f]{32}", operation_id)
    assert check_id("operation_id", operation_id) == operation_id
    assert new_operation_id() != operation_id


def test_operation_keys_share_the_operation_prefix() -> None:
    """Every key of an operation starts with '{prefix}:op:{id}:' and they differ."""
    keys = KeyBuilder(prefix="chunkq").operation("op-1").all()

    assert all(key.startswith("chunkq:op:op-1:") for key in keys)
    assert len(set(keys)) == len(keys) == 10


def test_operation_keys_names() -> None:
    """Each key has its documented suffix."""
    keys = KeyBuilder().operation("abc")

    assert keys.state == "chunkq:op:abc:state"
    assert keys.plan == "chunkq:op:abc:plan"
    assert keys.done == "chunkq:op:abc:done"
    assert keys.failed == "chunkq:op:abc:failed"
    assert keys.totals == "chunkq:op:abc:totals"
    assert keys.checkpoint == "chunkq:op:abc:checkpoint"


def test_custom_prefix_is_used() -> None:
    """The builder's prefix begins every key."""
    keys = KeyBuilder(prefix="tenant7").operation("abc").all()

    assert all(key.startswith("tenant7:op:abc:") for key in keys)


def test_operations_do_not_share_keys() -> None:
    """An operation whose id prefixes another's still gets disjoint keys."""
    first = set(KeyBuilder().operation("op").all())
    second = set(KeyBuilder().operation("op1").all())

    assert first.isdisjoint(second)
    assert not any(key.startswith("chunkq:op:op:") for key in second)


@pytest.mark.parametrize("operation_id", ["a:b", "*", "op 1", "", "../x", "x" * 65])
def test_unsafe_operation_id_raises(operation_id: str) -> None:
    """An unsafe operation id raises InvalidIdError before any key is built."""
    with pytest.raises(InvalidIdError) as caught:
        KeyBuilder().operation(operation_id)

    assert caught.value.field == "operation_id"
