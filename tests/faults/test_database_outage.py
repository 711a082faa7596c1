"""PostgreSQL stopped and started again under run_feeds and daphne (issue 13, finding 2, the database path).

The worker keeps running and writes its quotes again once the database is back; the
dashboard page answers 503 (with Retry-After) while it is down, never 500.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings

from tests.faults.processes import PostgresServer, postgres_unavailable
from tests.servers import process, restartable_daphne

pytestmark = [pytest.mark.redis]

OUTAGE_SECONDS = 3
FAST = {
    "MARKETDATA_QUOTE_FLUSH_SECONDS": "0.2",
    "SYNTHETIC_TICKS_PER_SECOND": "20",
    "MARKETDATA_RETRY_SECONDS": "0.1",
    "MARKETDATA_RETRY_MAX_SECONDS": "0.5",
}


def status(url: str, cookie: str) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie})  # noqa: S310 (our own http:// server)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def newest_quote(url: str) -> Any:
    with psycopg.connect(url, connect_timeout=2) as conn:
        return conn.execute("SELECT max(exchange_ts), count(*) FROM marketdata_quote").fetchone()


def wait(condition: Any, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic()


@pytest.mark.skipif(bool(postgres_unavailable()), reason=f"no PostgreSQL of our own: {postgres_unavailable()}")
def test_a_database_restart_under_the_worker_answers_503_and_the_worker_writes_again(
    redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    pg = PostgresServer()
    pg.start()
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": pg.url(),
            "REDIS_URL": redis_url,
            "CHANNEL_LAYER_PREFIX": layer_prefix,
            "DEBUG": "false",
            "SECRET_KEY": "fault-test-secret-key-not-for-production-0123456789",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            **FAST,
        }

        def manage(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, "manage.py", *args], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        manage("migrate", "--no-input", "-v", "0")
        manage("seed_demo")
        cookie_value = manage(
            "shell",
            "-c",
            "from django.conf import settings; from django.contrib.auth import get_user_model; from django.test import Client; "
            "c = Client(); c.force_login(get_user_model().objects.get(username=settings.DEMO_USERNAME)); "
            "print(c.cookies[settings.SESSION_COOKIE_NAME].value)",
        ).split()[-1]  # after the shell's own notice of what it imported
        cookie = f"{settings.SESSION_COOKIE_NAME}={cookie_value}"
        with (
            restartable_daphne(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path / "logs", env=env) as daphne,
            process([sys.executable, "manage.py", "run_feeds"], env, tmp_path / "worker.log") as worker,
        ):
            page = daphne.url + "/"
            assert status(page, cookie) == 200
            start = newest_quote(pg.url())
            wait(lambda: newest_quote(pg.url()) != start, 20, "the worker writing quotes")

            before = newest_quote(pg.url())
            pg.stop()
            down = time.monotonic()
            seen = []
            while time.monotonic() - down < OUTAGE_SECONDS:  # the outage's length is the scenario
                seen.append(status(page, cookie))
                time.sleep(0.2)
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            pg.start()
            up = time.monotonic()
            page_back = wait(lambda: status(page, cookie) == 200, 20, "the page answering 200 again")
            quotes_back = wait(lambda: newest_quote(pg.url())[0] > before[0], 20, "the worker writing quotes again")
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        log = (tmp_path / "worker.log").read_text()
    finally:
        pg.stop()
        pg.remove()
    assert seen and set(seen) == {503}, f"the dashboard page answered {seen} while the database was down"
    assert log.count("the database is unreachable") == 1, log  # once per outage, not per flush
    assert log.count("the database is back") == 1, log
    print(
        f"\nFIGURE database outage {up - down:.1f} s: page answered {len(seen)}x 503 during it, 200 again {page_back - up:.2f} s "
        f"after PostgreSQL returned; the worker wrote quotes again {quotes_back - up:.2f} s after"
    )
