"""The compose file parses and refers only to what the project has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from config.settings import Settings
from worker.cli import cli

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
OWN_VARIABLES = {"CHUNKQ_REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "REDIS_PASSWORD"}


def _services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def test_compose_has_redis_workers_and_flower() -> None:
    """Redis, a main and a gated worker, and Flower are defined."""
    assert set(_services()) == {"redis", "worker", "gated-worker", "flower"}


def test_built_images_come_from_the_project() -> None:
    """Every built service uses a Dockerfile that exists in the repository."""
    for name, service in _services().items():
        if "build" in service:
            dockerfile = (
                ROOT / service["build"]["context"] / service["build"]["dockerfile"]
            )
            assert dockerfile.is_file(), name
        else:
            assert name == "redis" and service["image"].startswith("redis:")


def test_worker_commands_are_chunkq_commands() -> None:
    """The workers run `chunkq worker` on the main and the gated queue."""
    services = _services()
    fields = Settings.model_fields  # the defaults, whatever the environment says
    for name, queue in (
        ("worker", fields["queue"].default),
        ("gated-worker", fields["gated_queue"].default),
    ):
        command = services[name]["command"]
        assert command[0] in cli.commands
        assert command[command.index("--queue") + 1] == queue


def test_redis_persists_and_wants_a_password() -> None:
    """Append-only persistence is on and the server requires a password."""
    command = _services()["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "--requirepass" in command


def test_flower_runs_the_project_app_behind_basic_auth() -> None:
    """Flower monitors worker.app and needs basic authentication."""
    flower = _services()["flower"]
    assert flower["entrypoint"][:3] == ["celery", "-A", "worker.app"]
    assert any(part.startswith("--basic-auth=") for part in flower["command"])


def test_every_variable_is_a_setting_or_documented() -> None:
    """CHUNKQ_* names in the compose file are fields of the settings."""
    text = COMPOSE.read_text()
    fields = {f"CHUNKQ_{name.upper()}" for name in Settings.model_fields}
    names = set(re.findall(r"\b(CHUNKQ_[A-Z_]+|FLOWER_[A-Z_]+|REDIS_[A-Z_]+)\b", text))
    assert names <= fields | OWN_VARIABLES
