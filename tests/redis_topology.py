"""Production-shaped Redis on loopback for tests: a primary, a replica and three sentinels; or plain shards.

Debian's `redis-server` is used (`make test` installs it where missing): `redis-server --sentinel`
runs a sentinel, so no separate `redis-sentinel` binary is needed. Nothing is persisted: a
killed server is gone with its data, as in a crash.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.servers import free_port

MASTER = "livefolio"
# A primary that does not answer for this long is subjectively down for a sentinel; two of three agreeing fail it over.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def _wait_ping(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} on port {port} exited with {proc.returncode}")
        try:
            if redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5).ping():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} on port {port} did not answer within {timeout} s")
        time.sleep(0.02)


@dataclass
class Node:
    """One redis-server process (a data server or a sentinel)."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to the clients."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=2, decode_responses=True)


def _data_server(workdir: Path, name: str, *extra: str) -> Node:
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed (make test installs Debian's)")
    port = free_port()
    log = workdir / f"{name}.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    args += ["--logfile", str(log), *extra]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    _wait_ping(port, proc, name)
    return Node(port, proc, log)


def _sentinel(workdir: Path, name: str, primaries: dict[str, int]) -> Node:
    """A sentinel monitoring each master set of `primaries` (name → the primary's port), quorum 2."""
    binary = redis_server_binary()
    assert binary is not None
    port = free_port()
    config = workdir / f"{name}.conf"  # a sentinel rewrites its own configuration file: it must be writable
    text = f"port {port}\nbind 127.0.0.1\ndir {workdir}\nlogfile {workdir / (name + '.log')}\n"
    for master, primary_port in primaries.items():
        text += (
            f"sentinel monitor {master} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {master} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {master} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {master} 1\n"
        )
    config.write_text(text)
    proc = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    _wait_ping(port, proc, name)
    return Node(port, proc, workdir / f"{name}.log")


@dataclass
class SentinelGroup:
    primary: Node
    replica: Node
    sentinels: list[Node]
    killed: list[Node] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for this group."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    @property
    def env(self) -> dict[str, str]:
        return {"REDIS_SENTINELS": self.addresses, "REDIS_SENTINEL_MASTER": MASTER}

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it (None: none answers)."""
        for sentinel in self.sentinels:
            if sentinel in self.killed:
                continue
            try:
                reply = sentinel.client().execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
            except redis.RedisError:
                continue
            return int(reply[1]) if reply else None
        return None

    def wait_ready(self, timeout: float = 20) -> None:
        """Until every sentinel knows the replica and the other sentinels, and the replica is in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                infos = [s.client().execute_command("SENTINEL", "master", MASTER) for s in self.sentinels]
                info = self.replica.client().info("replication")
            except redis.RedisError:
                infos, info = [], {}
            fields = [dict(zip(i[::2], i[1::2], strict=True)) if isinstance(i, list) else i for i in infos]
            if (
                fields
                and all(int(f["num-slaves"]) >= 1 and int(f["num-other-sentinels"]) >= 2 for f in fields)
                and info.get("master_link_status") == "up"
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the sentinel group did not settle within {timeout} s")

    def kill_primary(self) -> Node:
        """Kill the current primary (SIGKILL); returns it."""
        port = self.master_port()
        node = self.primary if port == self.primary.port else self.replica
        node.kill()
        self.killed.append(node)
        return node

    def wait_for_failover(self, old_port: int, timeout: float = 30) -> int:
        """Until the sentinels name a primary other than `old_port` and it answers as a master; returns its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port is not None and port != old_port:
                try:
                    role = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1).execute_command("ROLE")
                except redis.RedisError:
                    role = None
                if role and role[0] in (b"master", "master"):
                    return port
            time.sleep(0.05)
        raise TimeoutError(f"no failover away from port {old_port} within {timeout} s")


@contextmanager
def sentinel_group(workdir: Path) -> Iterator[SentinelGroup]:
    """A primary, a replica of it and three sentinels watching it (quorum 2), settled; all killed at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        primary = _data_server(workdir, "primary")
        stack.callback(primary.kill)
        replica = _data_server(workdir, "replica", "--replicaof", "127.0.0.1", str(primary.port))
        stack.callback(replica.kill)
        sentinels = []
        for i in range(3):
            sentinel = _sentinel(workdir, f"sentinel-{i + 1}", {MASTER: primary.port})
            stack.callback(sentinel.kill)
            sentinels.append(sentinel)
        group = SentinelGroup(primary, replica, sentinels)
        group.wait_ready()
        yield group


@contextmanager
def plain_shards(workdir: Path, n: int) -> Iterator[list[Node]]:
    """`n` independent Redis servers (shards); all killed at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        nodes = []
        for i in range(n):
            node = _data_server(workdir, f"shard-{i}")
            stack.callback(node.kill)
            nodes.append(node)
        yield nodes


@contextmanager
def sentinel_shards(workdir: Path, n: int) -> Iterator[tuple[list[Node], str, list[str]]]:
    """`n` primaries (no replicas), each its own master set, all monitored by the same three sentinels:
    yields (the primaries, REDIS_SENTINELS, the master names in order)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        primaries = []
        for i in range(n):
            node = _data_server(workdir, f"primary-{i}")
            stack.callback(node.kill)
            primaries.append(node)
        names = [f"{MASTER}-{i}" for i in range(n)]
        sentinels = []
        for i in range(3):
            sentinel = _sentinel(workdir, f"sentinel-{i + 1}", dict(zip(names, (p.port for p in primaries), strict=True)))
            stack.callback(sentinel.kill)
            sentinels.append(sentinel)
        yield primaries, ",".join(f"127.0.0.1:{s.port}" for s in sentinels), names
