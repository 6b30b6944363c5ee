"""The ``chunkq`` command as a user runs it: real subprocesses, real Redis, real workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
