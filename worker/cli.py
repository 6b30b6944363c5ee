"""The ``chunkq`` command line.

Commands (``chunkq COMMAND --help`` for each):

``run PATH``        chunk a folder end to end: bring Redis and a worker if needed,
                    show progress, print a summary, stop what it started.
``worker``          run a worker on chunkq's queues (``celery worker`` underneath).
``submit PATH``     enqueue a job for running workers; print its operation id.
``status OP_ID``    show an operation's state, progress and checkpoint.
``queue``           show the gated queue: permits and their holders, the waiting line.
``report OP_ID``    the error report: breakdown, timeline, attempts, recommendations.
``patterns``        errors across operations over a window: counts, trends, top items.
``cleanup OP_ID``   save_partial, rollback or discard what an operation wrote.
``resume OP_ID``    send a stopped operation again from its checkpoint.
``dead ...``        dead letters: ``list``, ``show ID``, ``replay ID``, ``purge``.

Exit codes: 0 done; 1 the job or the infrastructure failed; 2 bad input or bad
configuration (the message names it); 3 the job finished but some documents failed
(partial); 130 interrupted. ``status`` exits with the code of the operation's state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import pydantic
import pydantic_settings
import redis

from config import get_settings
from config.settings import DEFAULT_REDIS_URL
from recovery.errors import InvalidIdError
from tasks.engine import Strategy
from tasks.errors import InvalidRequestError
from tasks.models import ChunkRequest
from worker.errors import LocalServiceError
from worker.local import LocalRedis, WorkerProcess, celery_worker_argv, redis_answers

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130
STATUS_EXIT_CODES = {"failed": EXIT_FAILED, "partial": EXIT_PARTIAL}
"""``chunkq status`` exits 1 for a failed operation, 3 for a partial one, else 0."""

POLL_INTERVAL_S = 0.2
PLAIN_PROGRESS_INTERVAL_S = 2.0
MB = 1_000_000


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"chunkq: {message}", err=True)
    sys.exit(code)


def _job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("path", type=click.Path(path_type=Path)),
        click.option(
            "--collection",
            "collection_id",
            default="default",
            show_default=True,
            help="Collection id: a folder of the output and a part of keys.",
        ),
        click.option(
            "--strategy",
            default=Strategy.RECURSIVE.value,
            show_default=True,
            help="characters, recursive, markdown, tokens, or one registered by a module "
            "in CHUNKQ_IMPORTS.",
        ),
        click.option(
            "--chunk-size",
            type=int,
            default=1000,
            show_default=True,
            help="Chunk size: characters, or tokens with --strategy tokens.",
        ),
        click.option(
            "--overlap",
            type=int,
            default=200,
            show_default=True,
            help="Overlap between neighbouring chunks, in the same unit.",
        ),
        click.option(
            "--include",
            multiple=True,
            default=("*",),
            show_default=True,
            help="Shell pattern of files to take (repeatable).",
        ),
        click.option(
            "--exclude", multiple=True, help="Shell pattern to skip (repeatable)."
        ),
        click.option(
            "--out",
            "output_dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Output folder [default: CHUNKQ_OUTPUT_DIR or ./chunkq-output].",
        ),
        click.option(
            "--operation-id",
            default=None,
            help="Reuse an operation id to resume it (default: a new one).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _check_source(path: Path) -> None:
    if not path.exists():
        _fail(f"{path}: no such folder", EXIT_BAD_INPUT)
    if not path.is_dir():
        _fail(f"{path}: not a folder", EXIT_BAD_INPUT)


def _request(path: Path, **fields: Any) -> ChunkRequest:
    _check_source(path)
    values = {name: value for name, value in fields.items() if value is not None}
    values["output_dir"] = values.get("output_dir") or get_settings().output_dir
    try:
        request = ChunkRequest.parse({"source_root": path, **values})
    except InvalidRequestError as error:
        _fail(str(error), EXIT_BAD_INPUT)
    _check_output_dir(request.output_dir or get_settings().output_dir)
    return request


def _check_output_dir(folder: Path) -> None:
    """Refuse an output folder that cannot be created or written (exit 2)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        _fail(f"{folder}: the output folder cannot be made ({existing} is a file)", 2)
    if not os.access(existing, os.W_OK | os.X_OK):
        _fail(f"{folder}: the output folder is not writable", EXIT_BAD_INPUT)


@click.group()
@click.version_option(package_name="chunkq")
def cli() -> None:
    """chunkq: document chunking as Celery work that survives failure."""


@cli.command()
@_job_options
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Worker processes [default: CHUNKQ_WORKER_CONCURRENCY].",
)
def run(path: Path, concurrency: int | None, **fields: Any) -> None:
    """Chunk the documents under PATH, end to end, and print a summary."""
    _check_source(path)
    try:
        code = _run(path, fields, concurrency or get_settings().worker_concurrency)
    except LocalServiceError as error:
        _fail(str(error), EXIT_FAILED)
    sys.exit(code)


def _run(path: Path, fields: dict[str, Any], concurrency: int) -> int:
    with contextlib.ExitStack() as stack:
        url, private_redis_url = _redis_for_run(stack)
        run_id = fields.get("operation_id") or uuid.uuid4().hex
        queue = f"{get_settings().queue}.run.{run_id[:16]}"
        private = {
            "CHUNKQ_REDIS_URL": url,
            "CHUNKQ_QUEUE": queue,
            "CHUNKQ_GATED_QUEUE": f"{queue}.gated",
        }
        os.environ.update(private)
        get_settings.cache_clear()
        from tasks.chunking import chunk_documents  # noqa: PLC0415 - after the settings
        from worker.app import app  # noqa: PLC0415

        request = _request(path, **fields)  # strategies of CHUNKQ_IMPORTS are known now
        folder = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="chunkq-run-"))
        )
        log_file = folder / "worker.log"
        worker = WorkerProcess(
            env=private,
            queues=[queue, private["CHUNKQ_GATED_QUEUE"]],
            concurrency=concurrency,
            hostname=f"chunkq-run-{os.getpid()}@{socket.gethostname()}",
            log_file=log_file,
        ).start()
        stack.callback(worker.stop)
        lasting = private_redis_url is None
        if lasting:
            stack.callback(_forget_private_queues, url, queue)
        worker.wait_ready(app)

        started_s = time.monotonic()
        result = chunk_documents.delay(request)
        click.echo(
            f"operation {request.operation_id}: chunking {request.source_root}",
            err=True,
        )
        try:
            _follow(result, worker)
        except KeyboardInterrupt:
            worker.stop(cold=True)
            return _interrupted(request, lasting=lasting)
        elapsed_s = time.monotonic() - started_s
        if not result.successful():
            click.echo(_worker_log_tail(log_file), err=True)
            _fail(
                f"operation {request.operation_id} failed: {result.result}", EXIT_FAILED
            )
        summary = result.result
        click.echo(_summary_text(summary, elapsed_s))
        return EXIT_PARTIAL if summary["status"] == "partial" else EXIT_OK
    return EXIT_FAILED


def _redis_for_run(stack: contextlib.ExitStack) -> tuple[str, str | None]:
    """Return the Redis URL to use, and the same URL again when it is a private one."""
    configured = get_settings().redis_url
    if configured:
        if not redis_answers(configured):
            _fail(
                f"CHUNKQ_REDIS_URL={_redacted(configured)} does not answer", EXIT_FAILED
            )
        return configured, None
    if redis_answers(DEFAULT_REDIS_URL):
        return DEFAULT_REDIS_URL, None
    local = LocalRedis()
    stack.callback(local.stop)
    url = local.start()
    click.echo("no Redis answered; started a private one on 127.0.0.1", err=True)
    return url, url


def _interrupted(request: ChunkRequest, *, lasting: bool) -> int:
    """Say truthfully where an interrupted run stands; return the exit code."""
    from worker.runtime import stores  # noqa: PLC0415

    handles = stores()
    status = handles.states.get(request.operation_id).get("status", "unknown")
    checkpoint = handles.checkpoints.load(request.operation_id)
    total = len(handles.checkpoints.plan(request.operation_id) or [])
    if status in {"completed", "partial"}:
        click.echo(
            f"chunkq: interrupted, but operation {request.operation_id} had finished "
            f"({status})",
            err=True,
        )
        return EXIT_OK if status == "completed" else EXIT_PARTIAL
    where = f"{len(checkpoint.finished)} of {total} documents finished"
    if lasting:
        click.echo(
            f"chunkq: interrupted; operation {request.operation_id} stopped at its last "
            f"checkpoint ({where}); run the same command with --operation-id "
            f"{request.operation_id} to resume",
            err=True,
        )
    else:
        click.echo(
            f"chunkq: interrupted after {where}; the private Redis held the checkpoint "
            "and stops now, so a new run starts over (set CHUNKQ_REDIS_URL to resume)",
            err=True,
        )
    return EXIT_INTERRUPTED


def _forget_private_queues(url: str, queue: str) -> None:
    """Remove what kombu keeps of a run's private queues in a lasting Redis."""
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.RedisError):
        names = list(client.scan_iter(match=f"*{queue}*", count=500))
        if names:
            client.delete(*names)
    client.close()


def _follow(result: Any, worker: WorkerProcess) -> None:
    """Draw the task's progress until it is ready; the last figures are always drawn.

    Raises:
        LocalServiceError: the worker exited before the task was ready.
    """
    bar = _ProgressBar(tty=sys.stderr.isatty())
    try:
        while not result.ready():
            if not worker.alive:
                raise LocalServiceError(
                    f"the worker exited with code {worker.returncode}"
                )
            if result.state == "PROGRESS" and isinstance(result.info, dict):
                bar.draw(result.info)
            time.sleep(POLL_INTERVAL_S)
        if result.successful():
            summary = result.result
            finished = summary["documents_done"] + summary["documents_failed"]
            bar.draw({**summary, "documents_finished": finished}, final=True)
    finally:
        bar.close()


class _ProgressBar:
    """Progress on stderr: a redrawn bar on a terminal, a line every 2 s elsewhere."""

    WIDTH = 30

    def __init__(self, *, tty: bool) -> None:
        self._tty = tty
        self._started_s = time.monotonic()
        self._last_plain_s = 0.0
        self._drawn = False

    def draw(self, info: dict[str, Any], *, final: bool = False) -> None:
        total = max(int(info.get("documents_total", 0)), 1)
        finished = int(info.get("documents_finished", 0))
        elapsed_s = max(time.monotonic() - self._started_s, 1e-9)
        rate = info.get("bytes_in", 0) / MB / elapsed_s
        filled = self.WIDTH * finished // total
        line = (
            f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {finished}/{total} documents"
            f"  {info.get('chunks', 0)} chunks  {rate:.1f} MB/s"
        )
        if self._tty:
            click.echo(f"\r{line}", nl=False, err=True)
            self._drawn = True
        elif (
            final or time.monotonic() - self._last_plain_s >= PLAIN_PROGRESS_INTERVAL_S
        ):
            click.echo(line, err=True)
            self._last_plain_s = time.monotonic()

    def close(self) -> None:
        if self._drawn:
            click.echo("", err=True)


def _summary_text(summary: dict[str, Any], elapsed_s: float) -> str:
    megabytes = summary["bytes_in"] / MB
    lines = [
        f"status     {summary['status']}",
        f"documents  {summary['documents_done']} done, {summary['documents_failed']} failed,"
        f" {summary['documents_total']} in all",
        f"chunks     {summary['chunks']}",
        f"input      {megabytes:.2f} MB in {elapsed_s:.2f} s"
        f" ({megabytes / max(elapsed_s, 1e-9):.1f} MB/s)",
        f"output     {summary['output_dir']} ({summary['bytes_out'] / MB:.2f} MB)",
        f"operation  {summary['operation_id']}",
    ]
    failures = summary.get("failures") or {}
    for document_id, reason in list(failures.items())[:10]:
        lines.append(f"failed     {document_id}: {reason}")
    if summary["documents_failed"] > 10:
        lines.append(f"           ... {summary['documents_failed'] - 10} more failures")
    return "\n".join(lines)


def _worker_log_tail(log_file: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _redacted(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


@cli.command()
@_job_options
@click.option(
    "--skip-local-check",
    is_flag=True,
    help="Do not check PATH here; it exists only where the workers run.",
)
def submit(path: Path, skip_local_check: bool, **fields: Any) -> None:
    """Enqueue a job for running workers and print its operation id."""
    from tasks.chunking import chunk_documents  # noqa: PLC0415 - loads app and strategies

    if skip_local_check:
        values = {name: value for name, value in fields.items() if value is not None}
        try:
            request = ChunkRequest.parse({"source_root": path, **values})
        except InvalidRequestError as error:
            _fail(str(error), EXIT_BAD_INPUT)
    else:
        request = _request(path, **fields)
    click.echo(chunk_documents.delay(request).id)


@cli.command()
@click.argument("operation_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def status(operation_id: str, as_json: bool) -> None:
    """Show an operation's state, progress and checkpoint."""
    from celery.result import AsyncResult  # noqa: PLC0415

    from worker.app import app  # noqa: PLC0415
    from worker.runtime import stores  # noqa: PLC0415

    handles = stores()
    try:
        state = handles.states.get(operation_id)
        checkpoint = handles.checkpoints.load(operation_id)
    except InvalidIdError as error:
        _fail(str(error), EXIT_BAD_INPUT)
    if not state:
        _fail(f"no operation {operation_id!r} (unknown, or expired)", EXIT_BAD_INPUT)
    plan = handles.checkpoints.plan(operation_id) or []
    report = {
        "operation_id": operation_id,
        "status": state.get("status"),
        "task_state": AsyncResult(operation_id, app=app).state,
        "collection_id": state.get("collection_id"),
        "attempt": int(state.get("attempt", "0")),
        "documents_total": len(plan),
        "documents_done": checkpoint.totals.get("items_done", 0),
        "documents_failed": checkpoint.totals.get("items_failed", 0),
        "chunks": checkpoint.totals.get("chunks", 0),
        "batch_size": checkpoint.batch_size,
        "batches": checkpoint.batches,
        "soft_time_limit_s": state.get("soft_time_limit_s"),
        "time_limit_s": state.get("time_limit_s"),
        "correlation_id": state.get("correlation_id"),
        "gate": state.get("gate_resource")
        if state.get("status") == "waiting"
        else None,
        "error": state.get("error"),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        width = max(len(name) for name in report)
        for name, value in report.items():
            if value not in (None, ""):
                click.echo(f"{name:<{width}}  {value}")
    sys.exit(STATUS_EXIT_CODES.get(str(report["status"]), EXIT_OK))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def queue(as_json: bool) -> None:
    """Show the gated queue: holders of permits and the waiting line, per resource."""
    from worker.runtime import stores  # noqa: PLC0415

    gate = stores().gate
    statuses = [gate.status(resource) for resource in gate.resources()]
    if as_json:
        click.echo(
            json.dumps([dataclasses.asdict(status) for status in statuses], indent=2)
        )
        return
    if not statuses:
        click.echo("the gated queue is empty")
        return
    for status in statuses:
        mean = (
            "unknown"
            if status.mean_duration_s is None
            else f"{status.mean_duration_s:.1f} s"
        )
        click.echo(
            f"{status.resource}: {len(status.holders)}/{status.permits} permits held,"
            f" {len(status.waiting)} waiting, mean hold {mean}"
        )
        for holder in status.holders:
            click.echo(
                f"  holder    {holder.operation_id}  expires in {holder.expires_in_s:.1f} s"
            )
        for waiter in status.waiting:
            wait = (
                "unknown"
                if waiter.estimated_wait_s is None
                else f"{waiter.estimated_wait_s:.1f} s"
            )
            click.echo(
                f"  #{waiter.position:<7} {waiter.operation_id}  waited {waiter.waited_s:.1f} s,"
                f" estimated wait {wait}"
            )


def _waiting_for(state: dict[str, str]) -> str | None:
    if state.get("status") != "waiting":
        return None
    estimate = state.get("gate_estimated_wait_s") or "unknown"
    return (
        f"{state.get('gate_resource')} permit, position {state.get('gate_position')}, "
        f"estimated wait {estimate} s"
    )


def _json_or_lines(payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    width = max(len(name) for name in payload)
    for name, value in payload.items():
        if value not in (None, "", [], {}):
            click.echo(f"{name:<{width}}  {value}")


def _known(operation_id: str) -> None:
    """Exit 2 unless the id is safe and names a known operation."""
    from worker.runtime import stores  # noqa: PLC0415

    try:
        state = stores().states.get(operation_id)
    except InvalidIdError as error:
        _fail(str(error), EXIT_BAD_INPUT)
    if not state:
        _fail(f"no operation {operation_id!r} (unknown, or expired)", EXIT_BAD_INPUT)


@cli.command()
@click.argument("operation_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def report(operation_id: str, as_json: bool) -> None:
    """Show an operation's error report: breakdown, timeline, attempts, advice."""
    from worker.runtime import stores  # noqa: PLC0415

    _known(operation_id)
    error_report = stores().errors.create_error_report(operation_id)
    if as_json:
        click.echo(error_report.model_dump_json(indent=2))
        return
    click.echo(f"operation   {error_report.operation_id}  ({error_report.status})")
    click.echo(f"correlation {', '.join(error_report.correlation_ids) or '-'}")
    breakdown = ", ".join(f"{k} {v}" for k, v in error_report.error_breakdown.items())
    click.echo(f"errors      {breakdown or 'none'}")
    usage = error_report.resource_usage
    if usage.samples:
        click.echo(
            f"memory      {usage.memory_percent_min}% to {usage.memory_percent_max}% "
            f"at errors (mean {usage.memory_percent_mean}%)"
        )
    click.echo(
        "\nattempt  started              worker                 limits (s)  outcome"
    )
    for attempt in error_report.recovery_attempts:
        started = _clock(attempt.started_at_s)
        limits = f"{attempt.soft_limit_s or '-'}/{attempt.hard_limit_s or '-'}"
        click.echo(
            f"{attempt.attempt:<8} {started:<20} {(attempt.worker or '-')[:22]:<22} "
            f"{limits:<11} {attempt.outcome or 'running'}"
        )
    click.echo(
        "\ntime                 attempt  error                 action        message"
    )
    for record in error_report.timeline:
        click.echo(
            f"{_clock(record.at_s):<20} {record.attempt:<8} {record.error_type:<21} "
            f"{record.action:<13} {record.message[:60]}"
        )
    for advice in error_report.recommendations:
        click.echo(f"\nrecommended: {advice}")
    for document_id, reason in list(error_report.documents_failed.items())[:10]:
        click.echo(f"failed document {document_id}: {reason}")


def _clock(at_s: float | None) -> str:
    if at_s is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at_s))


@cli.command()
@click.option(
    "--window",
    "window_s",
    type=float,
    default=3600.0,
    show_default=True,
    help="Seconds back from now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def patterns(window_s: float, as_json: bool) -> None:
    """Show errors across operations over a window: counts, trends, failing documents."""
    from worker.runtime import stores  # noqa: PLC0415

    found = stores().errors.analyze_patterns(window_s=window_s)
    if as_json:
        click.echo(found.model_dump_json(indent=2))
        return
    click.echo(
        f"{found.errors} errors in {found.operations} operations, last {window_s:g} s"
    )
    for name, count in sorted(found.counts.items(), key=lambda item: -item[1]):
        click.echo(f"  {name:<22} {count:>5}  {found.trend[name]}")
    for item, count in found.top_failing_items:
        click.echo(f"  failing: {item} ({count} operations)")


@cli.command()
@click.argument("operation_id")
@click.option(
    "--strategy",
    type=click.Choice(["save_partial", "rollback", "discard"]),
    required=True,
)
@click.option(
    "--forget-fingerprints",
    is_flag=True,
    help="With discard: forget its fingerprints, so the same work runs again.",
)
def cleanup(operation_id: str, strategy: str, forget_fingerprints: bool) -> None:
    """Keep what an operation finished, roll it back, or discard it and its traces."""
    from tasks.cleanup import cleanup_operation  # noqa: PLC0415

    _known(operation_id)
    done = cleanup_operation(
        operation_id, strategy, forget_fingerprints=forget_fingerprints
    )
    _json_or_lines(done.model_dump(mode="json"), as_json=False)


@cli.command()
@click.argument("operation_id")
def resume(operation_id: str) -> None:
    """Send a stopped operation again from its checkpoint, then show its status."""
    from tasks.chunking import resume as resume_operation  # noqa: PLC0415

    _known(operation_id)
    result = resume_operation(operation_id)
    click.echo(f"operation {result.id} sent again from its checkpoint", err=True)
    status.callback(operation_id=result.id, as_json=False)  # type: ignore[misc]


@cli.group()
def dead() -> None:
    """Dead letters: operations whose attempts ran out, kept for replay."""


@dead.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def dead_list(as_json: bool) -> None:
    """List dead letters, newest first."""
    from worker.runtime import stores  # noqa: PLC0415

    letters = stores().errors.dead_letters()
    if as_json:
        click.echo(
            json.dumps([letter.model_dump(mode="json") for letter in letters], indent=2)
        )
        return
    if not letters:
        click.echo("no dead letters")
    for letter in letters:
        click.echo(
            f"{letter.operation_id}  {_clock(letter.at_s)}  {letter.error_type:<20} "
            f"{letter.reason[:70]}"
        )


@dead.command("show")
@click.argument("operation_id")
def dead_show(operation_id: str) -> None:
    """Show one dead letter in full (JSON)."""
    from worker.runtime import stores  # noqa: PLC0415

    try:
        letter = stores().errors.dead_letter_of(operation_id)
    except InvalidIdError as error:
        _fail(str(error), EXIT_BAD_INPUT)
    if letter is None:
        _fail(f"no dead letter for {operation_id!r}", EXIT_BAD_INPUT)
    click.echo(letter.model_dump_json(indent=2))


@dead.command("replay")
@click.argument("operation_id")
def dead_replay(operation_id: str) -> None:
    """Send a dead-lettered operation again from its checkpoint, same correlation id."""
    from tasks.chunking import replay  # noqa: PLC0415
    from tasks.cleanup import UnknownOperationError  # noqa: PLC0415

    try:
        result = replay(operation_id)
    except (UnknownOperationError, InvalidIdError):
        _fail(f"no dead letter for {operation_id!r}", EXIT_BAD_INPUT)
    click.echo(result.id)


@dead.command("purge")
@click.option(
    "--older-than",
    "older_than_s",
    type=float,
    default=None,
    help="Only those older than this many seconds.",
)
def dead_purge(older_than_s: float | None) -> None:
    """Remove dead letters."""
    from worker.runtime import stores  # noqa: PLC0415

    click.echo(
        f"removed {stores().errors.purge_dead_letters(older_than_s=older_than_s)}"
    )


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--queue", "queues", multiple=True, help="Queue to consume (repeatable).")
@click.option("--concurrency", type=int, default=None)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "--no-restart", is_flag=True, help="Exit when the Celery worker exits abnormally."
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    queues: tuple[str, ...],
    concurrency: int | None,
    loglevel: str,
    no_restart: bool,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker on chunkq's queues (main and gated by default).

    The worker runs as a child process and is started again when it exits
    abnormally (for example after losing Redis while busy), at most 5 times a
    minute. SIGTERM, SIGINT and SIGQUIT go to it. Extra arguments go to
    ``celery worker``.
    """
    settings = get_settings()
    argv = celery_worker_argv(
        queues=queues or (settings.queue, settings.gated_queue),
        concurrency=concurrency or settings.worker_concurrency,
        loglevel=loglevel,
        extra=celery_args,
    )
    sys.exit(supervise(argv, restart=not no_restart))


RESTARTS_PER_MINUTE = 5


def supervise(argv: list[str], *, restart: bool) -> int:
    """Run ``argv``, forwarding stop signals, and start it again after a crash.

    Returns the exit code of the last run: 0 after a requested stop.
    """
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, forward)
    starts_s: list[float] = []
    while True:
        starts_s = [at for at in starts_s if time.monotonic() - at < 60] + [
            time.monotonic()
        ]
        child = subprocess.Popen(argv)
        code = child.wait()
        if stopping or code == 0 or not restart:
            return code
        if len(starts_s) >= RESTARTS_PER_MINUTE:
            click.echo(
                f"chunkq: the worker exited {len(starts_s)} times in a minute", err=True
            )
            return code
        click.echo(
            f"chunkq: the worker exited with code {code}; starting it again", err=True
        )
        time.sleep(1.0)


def main() -> None:
    """Entry point of the ``chunkq`` console script.

    Configuration errors exit 2 and an unreachable Redis exits 1, each with one line
    naming the problem instead of a traceback.
    """
    try:
        cli()
    except pydantic.ValidationError as error:
        problems = "; ".join(
            (
                f"CHUNKQ_{'_'.join(str(part) for part in item['loc']).upper()}: "
                if item["loc"]
                else ""
            )
            + item["msg"]
            for item in error.errors()
        )
        _fail(f"invalid configuration: {problems}", EXIT_BAD_INPUT)
    except pydantic_settings.SettingsError as error:
        _fail(f"invalid configuration: {error}", EXIT_BAD_INPUT)
    except redis.ConnectionError as error:
        url = _redacted(get_settings().effective_redis_url)
        _fail(f"Redis at {url} does not answer ({error})", EXIT_FAILED)


if __name__ == "__main__":
    main()
