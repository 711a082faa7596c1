"""Start the real processes — daphne and `run_feeds` — against the test database and a real Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection


def database_url() -> str:
    """The URL of the database the tests are using right now (the test database, not the configured one)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout} s:\n{log.read_text()}")


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stack_env(*, redis_url: str, layer_prefix: str) -> dict[str, str]:
    """The environment of a process sharing this test's database, Redis and channel-layer prefix."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": layer_prefix,
        "DEBUG": "true",
        "PYTHONUNBUFFERED": "1",
    }


def manage(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `manage.py <args>` in its own process, output to `log`; the caller waits for it."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "manage.py", *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR)


@contextmanager
def live_stack(*, redis_url: str, layer_prefix: str, logs: Path, feeds: bool = True) -> Iterator[str]:
    """Run daphne (and, with `feeds`, `run_feeds` on the enabled feeds); yields the server's base URL."""
    port = free_port()
    env = stack_env(redis_url=redis_url, layer_prefix=layer_prefix)
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        daphne = stack.enter_context(
            process(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"], env, logs / "daphne.log"
            )
        )
        wait_for_port(port, daphne, logs / "daphne.log")
        if feeds:
            stack.enter_context(process([sys.executable, "manage.py", "run_feeds"], env, logs / "run_feeds.log"))
        yield f"http://127.0.0.1:{port}"


class Daphne:
    """A daphne on a fixed port that a test can stop and start again: a server restart under its clients.

    Each run writes its own log (`daphne-1.log`, `daphne-2.log`, ...) in `logs`.
    """

    def __init__(self, *, env: dict[str, str], logs: Path, port: int | None = None) -> None:
        self.env = env
        self.logs = logs
        self.port = port or free_port()
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None, "daphne is already running"
        self.runs += 1
        log = self.logs / f"daphne-{self.runs}.log"
        args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR)
        wait_for_port(self.port, self.proc, log)

    def stop(self) -> None:
        """SIGTERM, as a deployment stops it (its clients see their connections close); SIGKILL after 10 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def restartable_daphne(*, redis_url: str, layer_prefix: str, logs: Path, env: dict[str, str] | None = None) -> Iterator[Daphne]:
    """Like `live_stack(feeds=False)`, but yields the `Daphne`, to `restart()` on the same port; `env` adds to its environment."""
    logs.mkdir(parents=True, exist_ok=True)
    daphne = Daphne(env={**stack_env(redis_url=redis_url, layer_prefix=layer_prefix), **(env or {})}, logs=logs)
    daphne.start()
    try:
        yield daphne
    finally:
        daphne.stop()


@contextmanager
def asgi_server(kind: str, *, env: dict[str, str], log: Path) -> Iterator[str]:
    """Serve config.asgi:application with `kind` ("daphne", or "uvicorn" with permessage-deflate off); yields its base URL."""
    port = free_port()
    if kind == "daphne":
        args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
    elif kind == "uvicorn":
        args = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--ws-per-message-deflate", "false", "--lifespan", "off", "--log-level", "warning"]
    else:
        raise ValueError(f"no ASGI server {kind!r}")
    log.parent.mkdir(parents=True, exist_ok=True)
    with process(args, env, log) as proc:
        wait_for_port(port, proc, log)
        yield f"http://127.0.0.1:{port}"
