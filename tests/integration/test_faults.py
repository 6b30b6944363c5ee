"""Fault injection: workers and Redis killed at bad moments; every chunk exactly once.

Each scenario runs a job of 24 documents in batches of 4, each document slowed by the
``faulty`` strategy so faults land mid-job, then compares the sink with what a clean
run writes (chunk records equal, no document missing, none extra, no temporary files
left) and counts how many documents were chunked more than once (at most one batch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from tasks.chunking import chunk_documents
from tasks.models import ChunkRequest
from tasks.pipeline import chunk_document
from tasks.sinks import JsonlFolderSink
from tests.integration.faults import calls_key
from tests.integration.support import final_result, start_worker, wait_for
from worker.local import redis_server_binary
from worker.runtime import stores

pytestmark = pytest.mark.integration

DOCUMENTS = 24
BATCH = 4
JOB_TIMEOUT_S = 180
_RETRIED_KINDS = (
    "memory",
    "timeout",
    "resource_exhaustion",
    "strategy",
    "worker_lost",
    "unknown",
)


def _env(**extra: str) -> dict[str, str]:
    return {
        "CHUNKQ_BATCH_SIZE_DEFAULT": str(BATCH),
        "CHUNKQ_BATCH_THRESHOLDS": "[]",
        "CHUNKQ_HEARTBEAT_TIMEOUT_S": "3",
        "CHUNKQ_REAPER_INTERVAL_S": "0.5",
        "CHUNKQ_RETRY_RULES": json.dumps(
            {"worker_lost": {"backoff_base_s": 0.1, "backoff_cap_s": 0.1}}
        ),
        **extra,
    }


def _corpus(root: Path, delay_s: float = 0.15) -> dict[str, str]:
    texts = {
        f"doc-{index:02d}.txt": f"#!fault slow {delay_s}\n{root} document {index}. "
        + "Words in a sentence. " * 30
        for index in range(DOCUMENTS)
    }
    root.mkdir(parents=True)
    for document_id, text in texts.items():
        (root / document_id).write_text(text)
    return texts


def _request(tmp_path: Path) -> ChunkRequest:
    return ChunkRequest(
        operation_id=f"fault-{uuid.uuid4().hex[:12]}",
        collection_id="c",
        source_root=tmp_path / "src",
        output_dir=tmp_path / "out",
        strategy="faulty",
        chunk_size=120,
        overlap=20,
    )


def _assert_exactly_once(
    tmp_path: Path, request: ChunkRequest, texts: dict[str, str], client: redis.Redis
) -> int:
    """Compare the sink with a clean run; return how many documents were redone."""
    redone = sum(int(client.get(calls_key(text)) or 0) - 1 for text in texts.values())
    sink = JsonlFolderSink(output_dir=tmp_path / "out")
    # The faulty strategy cuts like ``characters``; the reference uses the latter,
    # so building it injects no fault.
    reference = request.model_copy(update={"strategy": "characters"})
    for document_id, text in texts.items():
        expected = [
            {**chunk.to_record(), "strategy": request.strategy}
            for chunk in chunk_document(
                text, document_id=document_id, request=reference
            )
        ]
        assert sink.read("c", document_id) == expected, document_id
    written = sorted(p.name for p in (tmp_path / "out" / "c").iterdir())
    assert written == sorted(f"{doc}.jsonl" for doc in texts)
    assert redone <= BATCH
    return redone


def _batches(operation_id: str) -> int:
    return stores().checkpoints.load(operation_id).batches


@pytest.fixture
def queue() -> str:
    """A queue of the scenario's own."""
    return f"{os.environ['CHUNKQ_QUEUE']}.fault.{uuid.uuid4().hex[:6]}"


def test_sigkill_of_the_pool_process_mid_batch(
    tmp_path: Path, queue: str, redis_client: redis.Redis
) -> None:
    """The child dies mid-batch; the message comes back and the job resumes."""
    texts = _corpus(tmp_path / "src")
    request = _request(tmp_path)
    worker = start_worker(
        tmp_path, name="child", queue=queue, env=_env(), concurrency=1
    )
    try:
        result = chunk_documents.apply_async((request,), queue=queue)
        wait_for(lambda: _batches(request.operation_id) >= 2)
        [child] = psutil.Process(worker.process.pid).children()  # type: ignore[union-attr]
        child.kill()
        summary = final_result(result)
    finally:
        worker.stop()

    assert summary["status"] == "completed"
    _assert_exactly_once(tmp_path, request, texts, redis_client)
    outcomes = stores().errors.resume_operation(request.operation_id).outcomes
    assert outcomes[1] == "lost"


def test_sigkill_of_the_whole_worker_then_a_fresh_one(
    tmp_path: Path, queue: str, redis_client: redis.Redis
) -> None:
    """The whole worker dies; a fresh worker's reaper resends the job within seconds."""
    texts = _corpus(tmp_path / "src")
    request = _request(tmp_path)
    first = start_worker(
        tmp_path, name="doomed", queue=queue, env=_env(), concurrency=1
    )
    try:
        result = chunk_documents.apply_async((request,), queue=queue)
        wait_for(lambda: _batches(request.operation_id) >= 2)
        first.signal(signal.SIGKILL)
    finally:
        first.stop()
    fresh = start_worker(tmp_path, name="fresh", queue=queue, env=_env(), concurrency=1)
    try:
        summary = final_result(result)
    finally:
        fresh.stop()

    assert summary["status"] == "completed"
    _assert_exactly_once(tmp_path, request, texts, redis_client)
    resumed = stores().errors.resume_operation(request.operation_id)
    assert resumed.outcomes[1] == "lost"
    assert resumed.outcomes[resumed.attempts] == "completed"


def test_sigterm_just_before_a_batch_commits(
    tmp_path: Path, queue: str, redis_client: redis.Redis
) -> None:
    """A warm shutdown mid-batch lets the attempt finish its work; nothing is doubled."""
    texts = _corpus(tmp_path / "src")
    request = _request(tmp_path)
    worker = start_worker(tmp_path, name="term", queue=queue, env=_env(), concurrency=1)
    try:
        result = chunk_documents.apply_async((request,), queue=queue)
        wait_for(lambda: _batches(request.operation_id) >= 1)
        time.sleep(0.15 * (BATCH - 1))  # inside the next batch, before its commit
        worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        worker.process.wait(timeout=JOB_TIMEOUT_S)  # type: ignore[union-attr]
    finally:
        worker.stop()
    fresh = start_worker(tmp_path, name="after-term", queue=queue, env=_env())
    try:
        summary = final_result(result)
    finally:
        fresh.stop()

    assert summary["status"] == "completed"
    assert _assert_exactly_once(tmp_path, request, texts, redis_client) == 0


def test_retry_countdown_near_the_visibility_timeout_with_two_workers(
    tmp_path: Path, queue: str, redis_client: redis.Redis
) -> None:
    """A retry waiting 4 s under a 6 s visibility timeout runs once, on one of two workers."""
    (tmp_path / "src").mkdir()
    text = f"#!fault connection 1\n{tmp_path}" + " word" * 40
    (tmp_path / "src" / "a.txt").write_text(text)
    request = _request(tmp_path)
    env = _env(
        CHUNKQ_VISIBILITY_TIMEOUT_S="6",
        CHUNKQ_SOFT_TIME_LIMIT_S="1",
        CHUNKQ_HARD_TIME_LIMIT_GRACE_S="1",
        CHUNKQ_RETRY_RULES=json.dumps(
            {
                **{
                    kind: {"backoff_base_s": 0.5, "backoff_cap_s": 1.0}
                    for kind in _RETRIED_KINDS
                },
                "transient_connection": {"backoff_base_s": 4.0, "backoff_cap_s": 4.0},
            }
        ),
        CHUNKQ_HEARTBEAT_TIMEOUT_S="30",
    )
    workers = [
        start_worker(tmp_path, name=f"pair{n}", queue=queue, env=env) for n in range(2)
    ]
    try:
        result = chunk_documents.apply_async(
            (request,), queue=queue, soft_time_limit=1, time_limit=2
        )
        summary = final_result(result)
        time.sleep(8)  # past one more visibility timeout: no second delivery runs it
    finally:
        for worker in workers:
            worker.stop()

    assert summary["status"] == "completed"
    resumed = stores().errors.resume_operation(request.operation_id)
    assert resumed.outcomes == {1: "retry", 2: "completed"}
    assert int(redis_client.get(calls_key(text)) or 0) == 2  # failed once, then done


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """A Redis of this test's own, persisting with an append-only file; yields restart."""
    port = _free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    command = [
        redis_server_binary(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(folder),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ]
    url = f"redis://127.0.0.1:{port}/0"
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    ]
    wait_for(lambda: _answers(url))

    def restart() -> None:
        processes[-1].terminate()
        processes[-1].wait(timeout=30)
        time.sleep(0.5)
        processes.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        )
        wait_for(lambda: _answers(url))

    restart.url = url  # type: ignore[attr-defined]
    yield restart
    processes[-1].terminate()
    processes[-1].wait(timeout=30)


def test_redis_restarted_three_times_while_retries_are_pending(
    tmp_path: Path, own_redis: Callable[[], None]
) -> None:
    """Redis goes down three times while retries wait; state survives and the job ends."""
    url = own_redis.url  # type: ignore[attr-defined]
    texts = _corpus(tmp_path / "src", delay_s=0.05)
    texts["doc-00.txt"] = f"#!fault connection 3\n{tmp_path}" + " word" * 50
    (tmp_path / "src" / "doc-00.txt").write_text(texts["doc-00.txt"])
    env = {
        **os.environ,
        **_env(
            CHUNKQ_RETRY_RULES=json.dumps(
                {"transient_connection": {"backoff_base_s": 2.0, "backoff_cap_s": 2.0}}
            )
        ),
        "CHUNKQ_REDIS_URL": url,
        "CHUNKQ_QUEUE": "restart-q",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "worker",
            "--queue",
            "restart-q",
            "--concurrency",
            "1",
        ],
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = redis.Redis.from_url(url)
    try:
        submitted = subprocess.run(
            [
                sys.executable,
                "-m",
                "worker.cli",
                "submit",
                str(tmp_path / "src"),
                "--out",
                str(tmp_path / "out"),
                "--collection",
                "c",
                "--strategy",
                "faulty",
                "--chunk-size",
                "120",
                "--overlap",
                "20",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        operation_id = submitted.stdout.strip()
        for _ in range(3):
            wait_for(lambda: _errors(client, operation_id) >= 1, timeout_s=60)
            own_redis()
        status = wait_for(
            lambda: (
                _status(client, operation_id) in {"completed", "partial", "failed"}
                and _status(client, operation_id)
            ),
            timeout_s=JOB_TIMEOUT_S,
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)

    assert status == "completed"
    request = ChunkRequest.model_validate_json(
        client.hget(f"chunkq:op:{operation_id}:state", "request")
    )
    _assert_exactly_once(tmp_path, request, texts, client)


def _errors(client: redis.Redis, operation_id: str) -> int:
    try:
        return int(client.llen(f"chunkq:op:{operation_id}:errors"))
    except redis.RedisError:
        return 0


def _status(client: redis.Redis, operation_id: str) -> str:
    try:
        return (
            client.hget(f"chunkq:op:{operation_id}:state", "status") or b""
        ).decode()
    except redis.RedisError:
        return ""


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
