"""The ``chunkq`` command as a user runs it: real subprocesses, real Redis, real workers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.local import WorkerProcess

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 180


def _chunkq(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Title\n\n" + "Some words here. " * 200)
    (root / "sub" / "b.txt").write_text("Line one.\nLine two.\n" * 100)
    return root


def test_run_chunks_a_folder_and_prints_a_summary(tmp_path: Path) -> None:
    """``chunkq run`` starts its worker, writes every document and exits 0 with a summary."""
    source = _folder(tmp_path / "docs")

    done = _chunkq(
        "run",
        str(source),
        "--out",
        str(tmp_path / "out"),
        "--chunk-size",
        "200",
        "--overlap",
        "20",
        "--collection",
        "c1",
    )

    assert done.returncode == 0, done.stderr
    assert "documents  2 done, 0 failed, 2 in all" in done.stdout
    assert "MB/s" in done.stdout
    assert (tmp_path / "out" / "c1" / "a.md.jsonl").stat().st_size > 0
    assert (tmp_path / "out" / "c1" / "sub" / "b.txt.jsonl").stat().st_size > 0
    assert "documents" in done.stderr  # the progress line


def test_run_exits_3_when_some_documents_fail(tmp_path: Path) -> None:
    """A folder holding a binary file ends partial: exit code 3, the failure listed."""
    source = _folder(tmp_path / "docs")
    (source / "blob.bin").write_bytes(b"\x00\x01\x02")

    done = _chunkq("run", str(source), "--out", str(tmp_path / "out"))

    assert done.returncode == 3, done.stderr
    assert "failed     blob.bin: it is binary" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "/no/such/folder"], "/no/such/folder: no such folder"),
        (["run", "{src}", "--chunk-size", "10", "--overlap", "10"], "overlap"),
        (["run", "{src}", "--collection", "bad id"], "collection_id"),
        (["status", "no:such"], "operation_id"),
    ],
)
def test_bad_input_exits_2_naming_it(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Bad paths, parameters and ids exit 2 with a message naming the input."""
    source = _folder(tmp_path / "docs")

    done = _chunkq(*[arg.replace("{src}", str(source)) for arg in args])

    assert done.returncode == 2
    assert message in done.stderr


def test_submit_then_status(tmp_path: Path, worker: WorkerProcess) -> None:
    """``submit`` prints an operation id that running workers process and ``status`` shows."""
    source = _folder(tmp_path / "docs")

    submitted = _chunkq("submit", str(source), "--out", str(tmp_path / "out"))
    assert submitted.returncode == 0, submitted.stderr
    operation_id = submitted.stdout.strip()

    from tasks.chunking import chunk_documents  # noqa: PLC0415

    chunk_documents.AsyncResult(operation_id).get(timeout=CLI_TIMEOUT_S)
    shown = _chunkq("status", operation_id, "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["status"] == "completed"
    assert report["documents_done"] == report["documents_total"] == 2


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs root and unshare for a network namespace with no Redis",
)
def test_run_starts_a_private_redis_when_none_answers(tmp_path: Path) -> None:
    """With nothing on the default address, ``chunkq run`` brings its own real Redis."""
    source = _folder(tmp_path / "docs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKQ_")}
    script = (
        "ip link set lo up 2>/dev/null || true; "
        f"exec {sys.executable} -m worker.cli run {source} --out {tmp_path / 'out'}"
    )

    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=env,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "started a private one" in done.stderr
    assert "documents  2 done" in done.stdout


def test_output_folder_that_is_a_file_exits_2(tmp_path: Path) -> None:
    """``--out`` naming a file is refused before anything starts."""
    source = _folder(tmp_path / "docs")
    (tmp_path / "afile").write_text("x")

    done = _chunkq("run", str(source), "--out", str(tmp_path / "afile" / "sub"))

    assert done.returncode == 2
    assert "the output folder cannot be made" in done.stderr


def test_bad_configuration_exits_2_naming_the_variable(tmp_path: Path) -> None:
    """A bad CHUNKQ_* value gives one line naming the variable, not a traceback."""
    done = _chunkq("status", "some-op", env={"CHUNKQ_STATE_TTL_S": "soon"})

    assert done.returncode == 2
    assert "CHUNKQ_STATE_TTL_S" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_redis_exits_1_naming_it() -> None:
    """A Redis that does not answer gives one line naming it, not a traceback."""
    done = _chunkq(
        "status", "some-op", env={"CHUNKQ_REDIS_URL": "redis://127.0.0.1:1/0"}
    )

    assert done.returncode == 1
    assert "127.0.0.1:1" in done.stderr
    assert "Traceback" not in done.stderr


def test_interrupted_run_stops_what_it_started(tmp_path: Path) -> None:
    """SIGINT mid-job: exit 130, a truthful message, no worker left behind."""
    source = tmp_path / "docs"
    source.mkdir()
    for index in range(400):
        (source / f"d{index:03d}.md").write_text("Some text here. " * 400)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "run",
            str(source),
            "--out",
            str(tmp_path / "o"),
            "--strategy",
            "tokens",
            "--chunk-size",
            "64",
            "--overlap",
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for_line(tmp_path / "o", process)

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=CLI_TIMEOUT_S)

    assert process.returncode in {0, 130}, stderr
    assert "interrupted" in stderr
    assert not _processes_with(f"chunkq-run-{process.pid}@")


def _wait_for_line(output: Path, process: subprocess.Popen[str]) -> None:
    """Wait until the run has written some output (its worker is working)."""
    deadline_s = time.monotonic() + CLI_TIMEOUT_S
    while time.monotonic() < deadline_s and process.poll() is None:
        if any(output.rglob("*.jsonl")):
            return
        time.sleep(0.1)
    raise AssertionError("the run wrote nothing")


def _processes_with(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if text in command:
                    found.append(command)
    return found


def test_queue_shows_holders_and_the_waiting_line() -> None:
    """``chunkq queue`` lists a resource's holder and its waiters with positions."""
    from worker.runtime import stores  # noqa: PLC0415

    gate = stores().gate
    holder, waiter = "cli-holder-1", "cli-waiter-1"
    assert gate.try_admit(holder, "files").admitted
    gate.try_admit(waiter, "files")
    try:
        shown = _chunkq("queue")
        as_json = json.loads(_chunkq("queue", "--json").stdout)
    finally:
        gate.cancel(holder)
        gate.cancel(waiter)

    assert shown.returncode == 0, shown.stderr
    assert "files: 1/1 permits held, 1 waiting" in shown.stdout
    assert f"#1       {waiter}" in shown.stdout
    [files] = [entry for entry in as_json if entry["resource"] == "files"]
    assert files["holders"][0]["operation_id"] == holder
