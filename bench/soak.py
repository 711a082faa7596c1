"""The soak: the production topology under load while its parts fail, one after the other.

    python bench/soak.py             (make soak: about 10 minutes; writes bench/results/soak.json, soak.md, soak.png)
    python bench/soak.py --short     (about a minute, fewer clients: what tests/bench/test_soak.py runs in make test)

What runs, all on loopback, started here and stopped when it ends (also on failure or Ctrl-C):
- Debian's nginx with docs/deploy/nginx/livefolio.conf as tests/nginx.py renders it (TLS, a self-signed
  certificate), in front of three daphne processes configured as docs/deploy/production.env.example says;
- two `run_feeds` workers (active and standby through the per-symbol leases) on one `replay` feed: the real
  recorded Binance BTCUSDT trades of ../shared/data/ (the first 5,000 aggTrades of 2026-01-01), rebased to
  now, at recorded speed, looped. Both read the file; the standby skips what it does not hold, so when it
  takes over it publishes the same session from about the same place, under a new epoch;
- Redis: a primary, a replica and three sentinels (tests/redis_topology.py) when that helper exists, else one
  plain redis-server; PostgreSQL 15 (tests/faults/processes.py) with the demo data and the soak's users;
- bench/soak_clients.py: bots (API tokens; ticker, trades and candles of BTC-USD, the example bot's protocol
  core: resume after reconnect, silent-gap checks) and signed-in dashboards, through nginx over TLS.

Then, after a warm-up, the faults in turn, each followed by a settle time:
  daphne     kill -9 of one daphne (started again a second later, as systemd does);
  slow       a client that subscribes and never reads again (a 4 KB receive buffer);
  postgres   PostgreSQL stopped (immediate) and started again;
  worker     kill -9 of the worker holding the lease (started again after the takeover: the new standby);
  redis      kill -9 of the Redis primary (sentinels fail over to the replica); with one plain Redis, a
             restart of it (empty).
Per fault: silent gaps, time until every client is current again, staleness during and after, deliveries
against what was published, CPU and memory per process (from /proc). The short variant runs the same with
fewer clients, shorter settle times and a 3 s lease TTL.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.fanout import Child, free_port, wait_for_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DATA = ROOT.parent / "shared" / "data" / "binance_spot_btcusdt_aggtrades_2026-01-01_first5000.csv"
PY = sys.executable
PREFIX = "soak"
FEED = "soak-replay"
SYMBOL = "BTC-USD"
SERVER = "localhost"  # tests/nginx.py's server_name and certificate
FAULTS = ("daphne", "slow", "postgres", "worker", "redis")


@dataclass(frozen=True)
class Schedule:
    bots: int
    dashboards: int
    warmup_s: float  # before the first fault
    settle_s: float  # from each fault until the next
    recover_timeout_s: float  # a fault whose clients are not all current by then is reported as such
    lease_ttl_s: float
    faults: tuple[str, ...] = FAULTS


FULL = Schedule(bots=300, dashboards=250, warmup_s=60, settle_s=100, recover_timeout_s=60, lease_ttl_s=10)
SHORT = Schedule(bots=60, dashboards=40, warmup_s=4, settle_s=8, recover_timeout_s=40, lease_ttl_s=3)


# -- setup, in a child process with Django --------------------------------------------------------------


def setup_main(argv: list[str]) -> None:
    """Migrate, seed the demo, the replay feed, and `--users` users, each with a portfolio, a session and an API token."""
    parser = argparse.ArgumentParser(prog="bench/soak.py setup")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--accounts", required=True)
    args = parser.parse_args(argv)
    import django

    django.setup()
    from datetime import UTC, datetime

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from bench.fanout import dashboard_population_create
    from marketdata import services
    from marketdata.models import Feed, FeedKind

    call_command("migrate", interactive=False, verbosity=0)
    call_command("seed_demo", verbosity=0)
    Feed.objects.update(enabled=False)
    Feed.objects.update_or_create(
        name=FEED,
        defaults={
            "kind": FeedKind.REPLAY,
            "options": {"paths": [str(DATA)], "loop": True, "rebase_time": True, "speed": 1},
            "enabled": True,
        },
    )
    keys = dashboard_population_create(users=args.users, holdings=1, symbols=[SYMBOL], now=datetime.now(UTC))
    users = get_user_model().objects.filter(username__startswith="bench").order_by("username")
    tokens = [services.token_create(user=user, name="soak")[1] for user in users]
    accounts = {"cookie": settings.SESSION_COOKIE_NAME, "users": [{"session": s, "token": t} for s, t in zip(keys, tokens, strict=True)]}
    Path(args.accounts).write_text(json.dumps(accounts), encoding="utf-8")


# -- processes and their CPU and memory --------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree(pid: int) -> list[int]:
    """A process and all its descendants (/proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
    return found


def usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and RSS bytes of a process tree."""
    cpu, rss = 0.0, 0
    for p in tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, and cutime, cstime: the children it reaped (PostgreSQL's backends), which left the tree.
            cpu += sum(int(f) for f in fields[11:15]) / CLOCK_TICKS
            rss += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
    return cpu, rss


def machine_busy() -> tuple[float, float]:
    """All CPUs from /proc/stat: (busy jiffies, all jiffies); busy is everything but idle and iowait."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return float(sum(fields) - fields[3] - fields[4]), float(sum(fields))


class Sampler(threading.Thread):
    """Every second: CPU % (of one core) and RSS (MB) of each named process; `pids` is read afresh each time."""

    def __init__(self, pids: Callable[[], dict[str, int | None]], start: float) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.start_at = start
        self.samples: dict[str, list[tuple[float, float, float]]] = {}
        self.stop_event = threading.Event()
        self.last: dict[str, tuple[int, float, float]] = {}

    def run(self) -> None:
        machine = machine_busy()
        while not self.stop_event.wait(1.0):
            now = time.time()
            busy = machine_busy()
            # Every process on the machine (the soak's and anything else running), in % of one core.
            share = 100.0 * (busy[0] - machine[0]) / max(busy[1] - machine[1], 1e-6) * (os.cpu_count() or 1)
            machine = busy
            self.samples.setdefault("machine", []).append((round(now - self.start_at, 2), round(share, 1), 0.0))
            for name, pid in self.pids().items():
                if pid is None:
                    continue
                cpu, rss = usage(pid)
                previous = self.last.get(name)
                self.last[name] = (pid, cpu, now)
                if previous is None or previous[0] != pid:
                    continue  # a new process under this name: no interval yet
                share = 100.0 * (cpu - previous[1]) / max(now - previous[2], 1e-6)
                self.samples.setdefault(name, []).append((round(now - self.start_at, 2), round(share, 1), round(rss / 2**20, 1)))


# -- the topology --------------------------------------------------------------------------------------------


class Redis:
    """Sentinels (primary + replica + 3 sentinels) when tests/redis_topology.py is there, else one plain redis-server."""

    def __init__(self, workdir: Path, stack: ExitStack) -> None:
        self.workdir = workdir
        self.group: Any = None
        self.plain: Any = None
        try:
            from tests.redis_topology import sentinel_group
        except ImportError:
            from tests.faults.processes import RedisServer

            self.plain = RedisServer(workdir)
            self.plain.start()
            stack.callback(self.plain.stop)
            self.kind = "one plain redis-server (tests/redis_topology.py is not on this branch)"
        else:
            self.group = stack.enter_context(sentinel_group(workdir))
            self.group.wait_ready()
            self.kind = "a primary, a replica and 3 sentinels (tests/redis_topology.py)"

    def env(self) -> dict[str, str]:
        return dict(self.group.env) if self.group is not None else {"REDIS_URL": self.plain.url}

    def client(self) -> Any:
        import redis

        port = self.group.master_port() if self.group is not None else self.plain.port
        return redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=2, decode_responses=True)

    def pids(self) -> dict[str, int | None]:
        if self.group is None:
            return {"redis": self.plain.proc.pid if self.plain.proc is not None else None}
        # Named by their role at the start: the primary (redis-1) is the one killed, the replica (redis-2) promoted.
        nodes = {"redis-1": self.group.primary, "redis-2": self.group.replica}
        nodes.update({f"sentinel-{i + 1}": node for i, node in enumerate(self.group.sentinels)})
        return {name: node.proc.pid if node.proc.poll() is None else None for name, node in nodes.items()}

    def fault(self) -> dict[str, Any]:
        """Kill the primary (sentinels fail over), or restart the plain server."""
        if self.group is not None:
            old = self.group.master_port()
            self.group.kill_primary()
            new = self.group.wait_for_failover(old)
            return {"what": f"kill -9 of the Redis primary (port {old}); the sentinels promoted port {new}"}
        self.plain.stop()
        self.plain.start()
        return {"what": "kill -9 of the one Redis and a start again, empty (no sentinels on this branch)"}


def production_env(*, database_url: str, redis_env: dict[str, str], lease_ttl_s: float, secret: str) -> dict[str, str]:
    """docs/deploy/production.env.example for one machine behind nginx, on this run's database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url,
        CHANNEL_LAYER_PREFIX=PREFIX,
        DEBUG="false",
        SECRET_KEY=secret,
        ALLOWED_HOSTS="localhost",
        TRUSTED_PROXIES="127.0.0.1,::1",
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
        SECURE_SSL_REDIRECT="true",
        SECURE_COOKIES="true",
        MARKETDATA_LEASE_TTL_SECONDS=str(lease_ttl_s),
        PYTHONUNBUFFERED="1",
        **redis_env,
    )
    return env


class Topology:
    def __init__(self, schedule: Schedule, logs: Path, stack: ExitStack) -> None:
        self.schedule = schedule
        self.logs = logs
        self.stack = stack
        self.daphnes: list[Child | None] = []
        self.daphne_ports: list[int] = []
        self.workers: dict[str, Child] = {}
        self.worker_runs = 0
        self.env: dict[str, str] = {}
        self.clients: Child | None = None

    def start(self) -> None:
        from tests.faults.processes import PostgresServer
        from tests.nginx import Nginx

        started = time.monotonic()
        self.postgres = PostgresServer()
        self.stack.callback(self.postgres.remove)
        self.postgres.start()
        self.stack.callback(self.postgres.stop)
        import psycopg

        with psycopg.connect(self.postgres.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE livefolio")
        (self.logs / "redis").mkdir()
        self.redis = Redis(self.logs / "redis", self.stack)
        self.env = production_env(
            database_url=self.postgres.url("livefolio"),
            redis_env=self.redis.env(),
            lease_ttl_s=self.schedule.lease_ttl_s,
            secret=secrets.token_urlsafe(50),
        )
        users = self.schedule.bots + self.schedule.dashboards
        self.accounts = self.logs / "accounts.json"
        setup = subprocess.run(
            [PY, str(Path(__file__)), "setup", "--users", str(users), "--accounts", str(self.accounts)],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if setup.returncode != 0:
            raise RuntimeError(f"setup failed:\n{setup.stdout}\n{setup.stderr}")
        self.setup_s = time.monotonic() - started
        for n in range(3):
            self.daphne_ports.append(free_port())
            self.daphnes.append(None)
            self.start_daphne(n)
        self.start_worker("worker-a")
        self.wait_for_holder(lambda pid: pid == self.workers["worker-a"].pid, 30)
        self.start_worker("worker-b")
        static = self.logs / "static"
        static.mkdir()
        self.nginx = Nginx(upstreams=self.daphne_ports, static_root=static, workdir=self.logs / "nginx", worker_connections=4096)
        self.nginx.start()
        self.stack.callback(self.nginx.stop)
        self.stack.callback(self.stop_processes)
        self.start_s = time.monotonic() - started

    def start_daphne(self, n: int) -> None:
        port = self.daphne_ports[n]
        args = [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
        child = Child(f"daphne-{n + 1}", args, env=self.env, log=self.logs / f"daphne-{n + 1}.{int(time.time())}.log", cpu=None)
        self.daphnes[n] = child
        wait_for_port(port, child)

    def start_worker(self, name: str) -> Child:
        self.worker_runs += 1
        log = self.logs / f"{name}.{self.worker_runs}.log"
        child = Child(name, [PY, "manage.py", "run_feeds"], env=self.env, log=log, cpu=None)
        self.workers[name] = child
        return child

    def holder_pid(self) -> int | None:
        """The pid of the worker holding the symbol's lease, from the lease's holder text."""
        import redis

        with contextlib.suppress(redis.RedisError, OSError):
            client = self.redis.client()
            for key in client.scan_iter(match=f"{PREFIX}*lease*{SYMBOL}", count=1000):
                value = client.get(key)
                match = re.search(r"pid (\d+)", value or "")
                if match:
                    return int(match[1])
        return None

    def wait_for_holder(self, condition: Callable[[int], bool], timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in self.workers.values():
                child.check()
            pid = self.holder_pid()
            if pid is not None and condition(pid):
                return pid
            time.sleep(0.1)
        raise TimeoutError(f"no worker took the lease of {SYMBOL} within {timeout} s")

    def pids(self) -> dict[str, int | None]:
        found: dict[str, int | None] = {}
        if hasattr(self, "nginx") and self.nginx.proc is not None:
            found["nginx"] = self.nginx.proc.pid
        for n, child in enumerate(self.daphnes):
            found[f"daphne-{n + 1}"] = child.pid if child is not None and child.alive() else None
        for name, child in self.workers.items():
            found[name] = child.pid if child.alive() else None
        found.update(self.redis.pids())
        found["postgres"] = self.postgres_pid()
        if self.clients is not None:
            found["clients"] = self.clients.pid if self.clients.alive() else None
        return found

    def postgres_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.postgres.data / "postmaster.pid").read_text().split()[0])
        return None

    def stop_processes(self) -> None:
        if self.clients is not None:
            self.clients.stop()
        for child in [*self.workers.values(), *(d for d in self.daphnes if d is not None)]:
            child.stop()

    def readyz(self) -> int:
        """/readyz through nginx (Redis, the database and the fan-out): its HTTP status, 0 when nothing answered."""
        context = ssl.create_default_context(cafile=str(self.nginx.cert))
        conn = http.client.HTTPSConnection(SERVER, self.nginx.https_port, context=context, timeout=5)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status
        except OSError:
            return 0
        finally:
            conn.close()


# -- the faults ------------------------------------------------------------------------------------------------


def slow_client(url: str, cert: Path) -> ssl.SSLSocket:
    """A market socket through nginx (TLS) that subscribes to every BTC-USD channel and never reads again."""
    host, port = url.removeprefix("https://").split(":")
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect, so the window stays small
    raw.settimeout(30)
    raw.connect(("127.0.0.1", int(port)))
    sock = ssl.create_default_context(cafile=str(cert)).wrap_socket(raw, server_hostname=host)
    key = secrets.token_bytes(16).hex()[:22] + "=="
    sock.sendall(
        f"GET /ws/v1/market HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the server closed the slow client during its handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"slow client handshake refused: {head[:200]!r}")
    channels = [f"ticker:{SYMBOL}", f"trades:{SYMBOL}", f"candles:{SYMBOL}@1m", f"book:{SYMBOL}@depth=50"]
    sock.sendall(masked_text_frame(json.dumps({"op": "subscribe", "id": 1, "channels": channels}).encode()))
    return sock


def masked_text_frame(payload: bytes) -> bytes:
    """A client → server text frame (clients must mask); payloads under 64 KiB."""
    mask = os.urandom(4)
    size = len(payload)
    header = struct.pack("!BB", 0x81, 0x80 | size) if size < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, size)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def tcp_state(sock: socket.socket) -> int:
    """1 established; anything else: the peer closed it (8 close-wait) or it is gone."""
    try:
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])
    except OSError:
        return 0


class Soak:
    def __init__(self, schedule: Schedule, topology: Topology) -> None:
        self.schedule = schedule
        self.top = topology
        self.faults: list[dict[str, Any]] = []

    def run_clients(self) -> Child:
        top = self.top
        args = [
            PY, "bench/soak_clients.py", "--url", top.nginx.https_url.replace("https", "wss", 1), "--origin", top.nginx.https_url,
            "--cafile", str(top.nginx.cert), "--accounts", str(top.accounts),
            "--bots", str(self.schedule.bots), "--dashboards", str(self.schedule.dashboards),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO")}
        clients = Child("clients", args, env=env, log=top.logs / "clients.log", cpu=None, pipes=True)
        top.clients = clients
        return clients

    def watch(self) -> None:
        """Every process must stay up, except the one a fault took down."""
        for child in [*self.top.workers.values(), *(d for d in self.top.daphnes if d is not None)]:
            child.check()
        assert self.top.clients is not None
        self.top.clients.check()

    def pause(self, until: float) -> None:
        while time.time() < until:
            self.watch()
            time.sleep(min(0.2, max(0.0, until - time.time())))

    def inject(self, name: str, clients_start: float) -> dict[str, Any]:
        top = self.top
        clients = top.clients
        assert clients is not None
        # At a whole second of the clients' clock, so each of their per-second rows is before or after the fault.
        self.pause(clients_start + math.ceil(time.time() - clients_start + 0.01))
        at = time.time()
        clients.send(f"mark {name} {at * 1000:.0f}")
        info: dict[str, Any] = {"name": name, "at": at}
        after: Callable[[], None] | None = None
        if name == "daphne":
            victim = top.daphnes[1]
            assert victim is not None
            victim.proc.kill()
            victim.proc.wait()
            top.daphnes[1] = None
            info["what"] = "kill -9 of daphne-2 (one of three); started again 1 s later, as systemd's Restart= does"

            def after() -> None:
                time.sleep(max(0.0, at + 1.0 - time.time()))
                top.start_daphne(1)

        elif name == "worker":
            holder = top.holder_pid()
            victim_name = next((n for n, c in top.workers.items() if c.pid == holder), None)
            if victim_name is None:
                raise RuntimeError(f"no worker of ours holds the lease (holder pid {holder})")
            victim = top.workers.pop(victim_name)
            victim.proc.kill()
            victim.proc.wait()
            victim.stop()  # its log
            info["what"] = f"kill -9 of the active worker ({victim_name}, pid {holder}); the standby takes over"
            new = top.wait_for_holder(lambda pid: pid != holder, self.schedule.lease_ttl_s + 30)
            info["takeover_s"] = time.time() - at
            info["new_holder"] = next((n for n, c in top.workers.items() if c.pid == new), str(new))

            def after() -> None:
                top.start_worker(victim_name)  # the new standby, as systemd restarts it

        elif name == "redis":
            info.update(top.redis.fault())
            info["failover_s"] = time.time() - at
        elif name == "postgres":
            top.postgres.stop()
            down = time.time()
            statuses = [top.readyz()]
            top.postgres.start()
            info["what"] = "PostgreSQL stopped (immediate: every connection cut) and started again"
            info["down_s"] = time.time() - down
            info["readyz_during"] = statuses
            deadline = time.time() + self.schedule.recover_timeout_s
            while time.time() < deadline and top.readyz() != 200:
                time.sleep(0.1)
            info["readyz_200_after_s"] = time.time() - at
        elif name == "slow":
            sock = slow_client(top.nginx.https_url, top.nginx.cert)
            info["what"] = "one more socket through nginx subscribes to every BTC-USD channel and never reads again (4 KB receive buffer)"

            def after() -> None:
                self.pause(at + self.schedule.settle_s * 0.9)
                state = tcp_state(sock)
                info["slow_client_still_open"] = state == 1
                info["slow_client_tcp_state"] = state
                sock.close()

        else:
            raise ValueError(name)
        try:
            info["current"] = clients.event("current", timeout=self.schedule.recover_timeout_s + max(0.0, at - time.time()))
        except TimeoutError:
            clients.send(f"waiting {name}")
            info["current"] = {"after_s": None, **clients.event("waiting", timeout=30)}
        if after is not None:
            after()
        return info

    def run(self) -> dict[str, Any]:
        clients = self.run_clients()
        ready = clients.event("ready", timeout=300)
        t0 = time.time()
        self.pause(t0 + self.schedule.warmup_s)
        for name in self.schedule.faults:
            info = self.inject(name, ready["start"])
            self.faults.append(info)
            print(f"soak: {name}: {info.get('what')}; every client current after {info['current'].get('after_s')} s", flush=True)
            # At least half the settle time after every client is current again, so "after" has seconds to it.
            self.pause(max(info["at"] + self.schedule.settle_s, time.time() + self.schedule.settle_s / 2))
        clients.send("quit")
        result = clients.event("result", timeout=120)
        return {"ready": ready, "clients": result, "faults": self.faults, "measured_from": t0, "bots": self.schedule.bots}


# -- the report ------------------------------------------------------------------------------------------------


def window(seconds: list[dict[str, Any]], start: float, a: float, b: float) -> list[dict[str, Any]]:
    """The per-second rows of the clients whose second starts in [a, b) (wall clock; faults start on whole seconds)."""
    return [s for s in seconds if a - 0.5 <= start + s["t"] < b - 0.5]


def biggest(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return max(values) if values else None


def figures(run: dict[str, Any], samples: dict[str, list[tuple[float, float, float]]], sampler_start: float) -> list[dict[str, Any]]:
    """Per fault (and the warm-up before them): gaps, recovery, staleness, deliveries, CPU and memory."""
    result = run["clients"]
    start = result["start"]
    seconds = result["seconds"]
    end = start + len(seconds)
    spans = [("baseline", run["measured_from"], run["faults"][0]["at"] if run["faults"] else end, None)]
    for i, fault in enumerate(run["faults"]):
        following = run["faults"][i + 1]["at"] if i + 1 < len(run["faults"]) else end
        spans.append((fault["name"], fault["at"], following, fault))
    rows = []
    for name, a, b, fault in spans:
        rows_ = window(seconds, start, a, b)
        current_s = (fault or {}).get("current", {}).get("after_s")
        split = a + (current_s if current_s is not None else (b - a))
        during, after = window(seconds, start, a, split + 1), window(seconds, start, split + 1, b)
        processes = {}
        for proc, series in samples.items():
            inside = [s for s in series if a <= sampler_start + s[0] < b]
            if inside:
                processes[proc] = {
                    "cpu_pct_mean": round(sum(s[1] for s in inside) / len(inside), 1),
                    "cpu_pct_max": max(s[1] for s in inside),
                    "rss_mb_max": max(s[2] for s in inside),
                }
        expected = sum(r["expected"] for r in rows_)
        rows.append(
            {
                "name": name,
                "what": (fault or {}).get("what", "no fault: the steady state before the first one"),
                "seconds": round(b - a, 1),
                "silent_gaps": sum(r["silent_gaps"] for r in rows_),
                "signalled": sum(r["signalled"] for r in rows_),
                "backwards": sum(r["backwards"] for r in rows_),
                "closes": sum(r["closes"] for r in rows_),
                "connects": sum(r["connects"] for r in rows_),
                "current_after_s": current_s,
                "current": (fault or {}).get("current"),
                "stale_max_during_ms": biggest(during, "stale_max_ms") if fault else None,
                "stale_max_after_ms": biggest(after if fault else rows_, "stale_max_ms"),
                "stale_p99_after_ms": biggest(after if fault else rows_, "stale_p99_ms"),
                "bot_updates": sum(r["bot_updates"] for r in rows_),
                "bot_expected": expected,
                "bot_by_snapshot": sum(r["by_snapshot"] for r in rows_),
                "dashboard_deliveries": sum(r["dashboard_deliveries"] for r in rows_),
                "bytes_per_bot_s": round(sum(r.get("bot_bytes", 0) for r in rows_) / max(1, len(rows_)) / run["bots"]),
                "processes": processes,
                "fault": {k: v for k, v in (fault or {}).items() if k not in ("current", "what", "name")},
            }
        )
    return rows


NOTES = """How to read it:
- Silent gaps: an update that does not follow the bot's last one on its channel (same epoch and the next seq, or seq 1
  of a new epoch), a heartbeat naming a seq the bot never got, or a `resumed` replay not starting where it asked. A gap
  the server announced (a snapshot, `resumed` with `recovered: false`) is counted as signalled, not silent.
- Current again: from the fault until the first, half and every client had data published after it (bots: their
  ticker channel; dashboards: a held row's price_ts). Hit clients lost their socket; the spared ones' time is the
  recorded session's own pace (it has quiet spells of up to a second).
- Staleness: receive time minus the data's exchange time (the replay is rebased, so that is its publication time),
  the largest per-second max during the recovery and after it, and the largest per-second p99 after it.
- Published: how far each bot channel's seq moved while the bot held it; as updates plus restated by a snapshot.
- CPU and RSS from /proc, summed over each process tree (PostgreSQL's shared memory counts once per backend)."""


def fmt(value: Any, spec: str = ",.0f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    s = report["schedule"]
    lines = [
        "# Soak with faults injected",
        "",
        f"Command: `{report['command']}` ({report['finished']}, {report['git']}). Machine: {report['machine']}.",
        "",
        f"Topology: nginx (docs/deploy/nginx/livefolio.conf, TLS) → 3 daphne; 2 `run_feeds` (active + standby) replaying "
        f"the real Binance BTCUSDT trades of 2026-01-01 at recorded speed; Redis: {report['redis']}; PostgreSQL 15. "
        f"Clients: {s['bots']} bots (ticker, trades and candles of {SYMBOL}; API tokens) and {s['dashboards']} signed-in "
        f"dashboards, all through nginx. Lease TTL {s['lease_ttl_s']:g} s. Warm-up {s['warmup_s']:g} s, then each fault "
        f"and {s['settle_s']:g} s until the next.",
        "",
        "| window | silent gaps | signalled (snapshot / not recovered) | closes → reconnects | current again: first / half / every client | "
        "hit / spared clients, slowest | staleness max during → after (p99 after) | bot updates / published (restated by snapshot) | "
        "dashboard deliveries |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["windows"]:
        current = row["current"] or {}
        hit = (
            f"{current.get('hit', 0)} ({fmt(current.get('hit_max_s'), '.2f')} s) / "
            f"{current.get('spared', 0)} ({fmt(current.get('spared_max_s'), '.2f')} s)"
        )
        lines.append(
            f"| **{row['name']}** | {row['silent_gaps']} | {row['signalled']} | {row['closes']} → {row['connects']} | "
            f"{fmt(current.get('first_s'), '.2f')} / {fmt(current.get('p50_s'), '.2f')} / {fmt(row['current_after_s'], '.2f')} s | "
            f"{hit if row['current'] else '–'} | "
            f"{fmt(row['stale_max_during_ms'])} → {fmt(row['stale_max_after_ms'])} ms ({fmt(row['stale_p99_after_ms'])}) | "
            f"{row['bot_updates']:,} / {row['bot_expected']:,} ({row['bot_by_snapshot']:,}) | {row['dashboard_deliveries']:,} |"
        )
    lines += ["", "What each fault was:", ""]
    for row in report["windows"][1:]:
        extra = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row["fault"].items() if k != "at")
        lines.append(f"- **{row['name']}**: {row['what']}" + (f" ({extra})" if extra else ""))
    if "slow" in report["schedule"]["faults"]:
        slow = next(row for row in report["windows"] if row["name"] == "slow")
        lines.append(
            f"- The slow client's channels carried about {slow['bytes_per_bot_s']:,} bytes/s (what each bot received of "
            "the same ticker, trades and candles; BTC-USD's book has no data in an aggTrades file)."
        )
    lines += [
        "",
        f"CPU (mean % of one core; the machine has {os.cpu_count()}) and peak RSS (MB) per process, per window. "
        "'others' is the machine's busy time that none of the soak's processes used: other work on the machine.",
        "",
    ]
    names = sorted({p for row in report["windows"] for p in row["processes"]} - {"machine"})
    lines.append("| window | " + " | ".join(names) + " | all of the soak | the whole machine (others) |")
    lines.append("|---|" + "---|" * (len(names) + 2))
    for row in report["windows"]:
        cells = []
        for p in names:
            figures_ = row["processes"].get(p)
            cells.append(f"{figures_['cpu_pct_mean']:.0f} % / {figures_['rss_mb_max']:.0f}" if figures_ else "–")
        ours = sum(f["cpu_pct_mean"] for p, f in row["processes"].items() if p != "machine")
        whole = row["processes"].get("machine", {}).get("cpu_pct_mean")
        cells += [f"{ours:.0f} %", f"{fmt(whole)} % ({fmt(None if whole is None else max(0.0, whole - ours))} %)"]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    lines += ["", NOTES, ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], samples: dict[str, list[tuple[float, float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = report["run"]["clients"]
    start = result["start"]
    seconds = result["seconds"]
    t = [s["t"] for s in seconds]
    fig, (ax_rate, ax_stale, ax_cpu, ax_rss) = plt.subplots(4, 1, figsize=(13, 14), sharex=True)
    ax_rate.plot(t, [s["bot_updates"] for s in seconds], label="bot updates/s")
    ax_rate.plot(t, [s["dashboard_deliveries"] for s in seconds], label="dashboard price deliveries/s")
    ax_rate.plot(t, [s["expected"] for s in seconds], label="published to bots (seq advance)/s", linestyle=":")
    ax_rate.set_ylabel("per second")
    ax_stale.plot(t, [s["stale_max_ms"] or float("nan") for s in seconds], label="max")
    ax_stale.plot(t, [s["stale_p99_ms"] or float("nan") for s in seconds], label="p99")
    ax_stale.set_yscale("log")
    ax_stale.set_ylabel("staleness, ms (receive − exchange ts)")
    sampler_start = report["sampler_start"]
    for name, series in sorted(samples.items()):
        x = [sampler_start + s[0] - start for s in series]
        if name == "machine":
            ax_cpu.plot(x, [s[1] for s in series], label="the whole machine", color="black", linewidth=1.5)
            continue
        ax_cpu.plot(x, [s[1] for s in series], label=name, linewidth=1)
        ax_rss.plot(x, [s[2] for s in series], label=name, linewidth=1)
    ax_cpu.set_ylabel(f"CPU, % of one core (of {os.cpu_count()})")
    ax_rss.set_ylabel("RSS, MB")
    ax_rss.set_xlabel("seconds since the clients started")
    for ax in (ax_rate, ax_stale, ax_cpu, ax_rss):
        for fault in report["run"]["faults"]:
            ax.axvline(fault["at"] - start, color="red", linestyle="--", linewidth=1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=4, loc="upper right")
    for fault in report["run"]["faults"]:
        ax_rate.annotate(fault["name"], (fault["at"] - start, 0), rotation=90, fontsize=8, color="red", va="bottom")
    ax_rate.set_title("Soak: faults injected in turn (red lines)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs ({model or platform.machine()}), Python {platform.python_version()}, load average before {load[0]:.1f}"


def git_rev() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    return "no git"


def unavailable() -> str | None:
    """Why the soak cannot run here, or None."""
    from tests.faults.processes import postgres_unavailable
    from tests.nginx import unavailable as nginx_unavailable

    if not DATA.exists():
        return f"the recorded session is missing: {DATA}"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    return nginx_unavailable() or postgres_unavailable()


def main(argv: list[str]) -> int:
    if argv[:1] == ["setup"]:
        setup_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="about a minute, fewer clients (make test runs it)")
    parser.add_argument("--out", type=Path, help="where soak.json/.md/.png go (default bench/results; --short: a temporary directory)")
    parser.add_argument("--bots", type=int)
    parser.add_argument("--dashboards", type=int)
    parser.add_argument("--settle", type=float, help="seconds from each fault to the next")
    parser.add_argument("--faults", help=f"comma-separated, in order (default {','.join(FAULTS)})")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (their directory is printed)")
    args = parser.parse_args(argv)
    schedule = SHORT if args.short else FULL
    changes: dict[str, Any] = {}
    if args.bots is not None:
        changes["bots"] = args.bots
    if args.dashboards is not None:
        changes["dashboards"] = args.dashboards
    if args.settle is not None:
        changes["settle_s"] = args.settle
    if args.faults:
        changes["faults"] = tuple(args.faults.split(","))
        unknown = set(changes["faults"]) - set(FAULTS)
        if unknown:
            parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    schedule = Schedule(**{**asdict(schedule), **changes})
    reason = unavailable()
    if reason:
        print(f"soak: cannot run: {reason}", file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="soak-out-")) if args.short else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="soak-logs-"))
    print(f"soak: logs in {logs}", flush=True)
    command = "python bench/soak.py " + " ".join(argv)
    before = machine()
    ok = False
    with ExitStack() as stack:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        top = Topology(schedule, logs, stack)
        top.start()
        sampler_start = time.time()
        sampler = Sampler(top.pids, sampler_start)
        sampler.start()
        stack.callback(sampler.stop_event.set)
        print(f"soak: topology up in {top.start_s:.1f} s (setup {top.setup_s:.1f} s); Redis: {top.redis.kind}", flush=True)
        run = Soak(schedule, top).run()
        sampler.stop_event.set()
        report: dict[str, Any] = {
            "command": command,
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "git": git_rev(),
            "machine": before,
            "redis": top.redis.kind,
            "schedule": asdict(schedule),
            "startup_s": top.start_s,
            "sampler_start": sampler_start,
            "run": run,
            "samples": sampler.samples,
        }
        report["windows"] = figures(run, sampler.samples, sampler_start)
        report["silent_gaps"] = sum(w["silent_gaps"] for w in report["windows"])
        (out / "soak.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        (out / "soak.md").write_text(markdown(report), encoding="utf-8")
        with contextlib.suppress(ImportError):
            plot(report, sampler.samples, out / "soak.png")
        print(markdown(report), flush=True)
        print(f"soak: wrote {out / 'soak.json'}", flush=True)
        ok = True
    if ok and not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
