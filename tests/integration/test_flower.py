"""Flower, started locally against the tests' Redis, sees chunkq's retries and results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasks.chunking import chunk_documents
from tasks.models import ChunkRequest
from tests.integration.support import final_result, start_worker, wait_for

pytestmark = pytest.mark.integration

AUTH = ("chunkq", "s3cret")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def flower(tmp_path: Path) -> Iterator[str]:
    """A Flower process with basic auth on a loopback port; yields its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            f"--basic-auth={AUTH[0]}:{AUTH[1]}",
        ],
        stdout=(tmp_path / "flower.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), timeout_s=60)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/workers", auth=AUTH, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_flower_shows_a_retried_task_with_its_retry_count_and_state(
    tmp_path: Path, flower: str
) -> None:
    """A task retried once appears in Flower's API as SUCCESS with one retry."""
    queue = f"{os.environ['CHUNKQ_QUEUE']}.flower.{uuid.uuid4().hex[:6]}"
    rules = {"transient_connection": {"backoff_base_s": 0.1, "backoff_cap_s": 0.1}}
    worker = start_worker(
        tmp_path,
        name="flower-worker",
        queue=queue,
        env={"CHUNKQ_RETRY_RULES": json.dumps(rules)},
    )
    request = _faulty_job(tmp_path, {"a.txt": "#!fault connection 1"})
    try:
        result = chunk_documents.apply_async((request,), queue=queue)
        final_result(result)
        info = _seen_in_state(flower, result.id, "SUCCESS")
    finally:
        worker.stop()

    assert httpx.get(f"{flower}/api/tasks", timeout=5).status_code == 401
    assert info["retries"] == 1
    assert info["name"] == "tasks.chunk_documents"


def _faulty_job(tmp_path: Path, texts: dict[str, str]) -> ChunkRequest:
    """A request over ``texts`` (made unique to this test) with the faulty strategy."""
    (tmp_path / "src").mkdir()
    for document_id, text in texts.items():
        (tmp_path / "src" / document_id).write_text(f"{text}\n{tmp_path}")
    return ChunkRequest(
        source_root=tmp_path / "src",
        output_dir=tmp_path / "out",
        strategy="faulty",
        chunk_size=50,
        overlap=0,
    )


def _seen_in_state(base: str, task_id: str, state: str) -> dict[str, object]:
    """Wait until Flower reports the task in ``state``; return its task info."""
    return dict(
        wait_for(
            lambda: (
                (info := _task(base, task_id)) and info.get("state") == state and info
            ),
            timeout_s=30,
        )
    )


def _task(base: str, task_id: str) -> dict[str, object] | None:
    response = httpx.get(f"{base}/api/task/info/{task_id}", auth=AUTH, timeout=2)
    return response.json() if response.status_code == 200 else None


def test_flower_shows_progress_from_the_task_progress_events(
    tmp_path: Path, flower: str
) -> None:
    """While a job runs, Flower shows it in the PROGRESS state its events announce."""
    queue = f"{os.environ['CHUNKQ_QUEUE']}.flowerp.{uuid.uuid4().hex[:6]}"
    worker = start_worker(
        tmp_path,
        name="flower-progress",
        queue=queue,
        env={"CHUNKQ_BATCH_SIZE_DEFAULT": "1", "CHUNKQ_BATCH_THRESHOLDS": "[]"},
    )
    request = _faulty_job(
        tmp_path, {f"d{i}.txt": f"#!fault slow 1\n{i}" for i in range(4)}
    )
    try:
        result = chunk_documents.apply_async((request,), queue=queue)
        seen = _seen_in_state(flower, result.id, "PROGRESS")
        final_result(result)
    finally:
        worker.stop()

    assert seen["state"] == "PROGRESS"
