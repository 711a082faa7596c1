"""Benchmark: a sparse FX day through `replay_feed --speed max` with the database, as deployed.

    python bench/replay_db.py                        (this tree only)
    python bench/replay_db.py --before-rev REV       (also REV, from a git worktree, in the same run)
    make bench-replay                                (replay.py, then this with REPLAY_DB_ARGS)

Input: a HistData tick file of one day, written in a temporary folder: 200,000 EUR/USD quotes at
random times over 24 h of 2026-11-18 (a seeded random walk, 1 to 3 pips wide), about 2.3 ticks a
second, so almost every 100 ms window holds one tick and every one of the 1,440 minutes closes.

Each tree replays it with the real command into its own copy of one SQLite database (migrated,
`seed_demo`, plus an "FX book" holding EUR/USD so each minute writes portfolio values), with its
minute hooks, candles, quotes and leases, against:
- the Redis channel layer (a redis-server this script starts on a free port, as `make run` would);
- the in-memory channel layer (`CHANNEL_LAYERS` overridden), which leaves the market history in
  the process: what remains is parsing, the worker and the database.

One run per tree and layer (a run takes 10 to 45 s). Reported: the command's own events/s, the
PortfolioValue and Candle rows written, and whether every tree wrote the same rows.
Writes bench/results/replay_db.md and replay_db.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
TICKS = 200_000
DAY = datetime(2026, 11, 18, tzinfo=UTC)
EST = timezone(timedelta(hours=-5))  # HistData's clock
FILE = "DAT_ASCII_EURUSD_T_202611.csv"
LAYERS = ("redis", "in-memory")

MEMORY_SETTINGS = """from config.settings import *  # noqa: F403
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
"""

FX_BOOK = """
from datetime import UTC, datetime
from decimal import Decimal
from django.contrib.auth import get_user_model
from marketdata.models import Instrument
from portfolio import services
owner = get_user_model().objects.get(username="demo")
book = services.portfolio_create(owner_id=owner.pk, name="FX book")
at = datetime(2026, 10, 1, tzinfo=UTC)
services.transaction_record(portfolio=book, draft=services.Draft(kind="deposit", quantity=Decimal(20000), executed_at=at))
eurusd = Instrument.objects.get(symbol="EUR/USD")
draft = services.Draft(kind="buy", quantity=Decimal(10000), instrument=eurusd, price=Decimal("1.15"), executed_at=at)
services.transaction_record(portfolio=book, draft=draft)
"""


def fx_day(path: Path) -> None:
    rng = random.Random(12)
    day_ms = 24 * 3600 * 1000
    mid = 115_420  # 1e-5
    lines = []
    for t in sorted(rng.randrange(day_ms) for _ in range(TICKS)):
        mid += rng.choice((-2, -1, -1, 0, 0, 1, 1, 2))
        half = rng.choice((1, 2, 2, 3))
        local = (DAY + timedelta(milliseconds=t)).astimezone(EST)
        lines.append(f"{local:%Y%m%d %H%M%S}{local.microsecond // 1000:03d},{(mid - half) / 1e5:.5f},{(mid + half) / 1e5:.5f},0\n")
    path.write_text("".join(lines), encoding="utf-8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench/replay_db.py: {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


@dataclass
class Result:
    tree: str
    layer: str
    events: int
    rate: float  # events/s, as replay_feed reports it
    wall: float  # s, the whole command
    values: int  # PortfolioValue rows
    candles: int
    rows_digest: str


def rows_of(db: Path) -> tuple[int, int, str]:
    with sqlite3.connect(db) as c:
        values = c.execute("select portfolio_id, minute, value from portfolio_portfoliovalue order by 1, 2").fetchall()
        candles = c.execute(
            "select instrument_id, start, open, high, low, close, volume, trades from marketdata_candle order by 1, 2"
        ).fetchall()
    return len(values), len(candles), hashlib.sha256(repr((values, candles)).encode()).hexdigest()[:16]


def replay(tree: Path, name: str, layer: str, *, seed: Path, folder: Path, redis_url: str) -> Result:
    db = folder / f"run-{name}-{layer}.sqlite3"
    shutil.copy(seed, db)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "REDIS_URL": redis_url, "PYTHONPATH": str(folder)}
    if layer == "in-memory":
        env["DJANGO_SETTINGS_MODULE"] = "memory_settings"
    subprocess.run(["redis-cli", "-u", redis_url, "flushall"], check=True, capture_output=True)
    started = time.perf_counter()
    out = run([PYTHON, "manage.py", "replay_feed", str(folder / FILE), "--speed", "max", "--no-progress"], cwd=tree, env=env)
    wall = time.perf_counter() - started
    found = re.search(r"([\d,]+) events read.*?([\d,]+) events/s", out)
    if found is None:
        sys.exit(f"bench/replay_db.py: no summary in the output of {name}:\n{out}")
    values, candles, digest = rows_of(db)
    result = Result(name, layer, int(found[1].replace(",", "")), float(found[2].replace(",", "")), wall, values, candles, digest)
    print(f"  {name}, {layer}: {result.rate:,.0f} events/s ({result.wall:.1f} s)", flush=True)
    return result


def report(results: Sequence[Result], before: str | None) -> str:
    lines = [
        "| tree | channel layer | events | events/s | command wall s | PortfolioValue rows | Candle rows | rows digest |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.tree} | {r.layer} | {r.events:,} | {r.rate:,.0f} | {r.wall:.1f} | {r.values:,} | {r.candles:,} | `{r.rows_digest}` |"
        )
    same = len({r.rows_digest for r in results}) == 1
    return "\n\n".join(
        [
            "# A sparse FX day through replay_feed with the database (bench/replay_db.py)",
            f"{datetime.now(UTC).isoformat(timespec='seconds')}; {os.cpu_count()} CPUs; one run each.",
            f"{TICKS:,} EUR/USD HistData ticks over 24 h (1,440 minutes), `replay_feed --speed max`, SQLite "
            "(seed_demo + an FX book: 3 portfolios), minute hooks on. Redis: a redis-server of its own; in-memory: "
            "the market history stays in the process."
            + (f" `{before}` is the tree before minutes were batched, from a git worktree." if before else ""),
            "\n".join(lines),
            "Every run wrote the same PortfolioValue and Candle rows." if same else "**The runs wrote different rows.**",
        ]
    )


def main(argv: Sequence[str]) -> None:
    before = argv[argv.index("--before-rev") + 1] if "--before-rev" in argv else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fx_day(folder / FILE)
        (folder / "memory_settings.py").write_text(MEMORY_SETTINGS, encoding="utf-8")
        trees = [("this tree", ROOT)]
        if before:
            worktree = folder / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), before], cwd=ROOT, check=True, capture_output=True)
            trees.insert(0, (f"before ({before})", worktree))
        port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        redis_url = f"redis://127.0.0.1:{port}/0"
        try:
            for _ in range(50):
                if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                    break
                time.sleep(0.1)
            seed = folder / "seed.sqlite3"
            env = {**os.environ, "DATABASE_URL": f"sqlite:///{seed}", "REDIS_URL": redis_url}
            run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env)
            run([PYTHON, "manage.py", "seed_demo"], cwd=ROOT, env=env)
            run([PYTHON, "manage.py", "shell", "-c", FX_BOOK], cwd=ROOT, env=env)
            results = [replay(tree, name, layer, seed=seed, folder=folder, redis_url=redis_url) for layer in LAYERS for name, tree in trees]
        finally:
            redis.terminate()
            redis.wait()
            if before:
                subprocess.run(["git", "worktree", "remove", "--force", str(folder / "before")], cwd=ROOT, check=False)
    text = report(results, before)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay_db.md").write_text(text + "\n", encoding="utf-8")
    raw = {"ticks": TICKS, "before_rev": before, "runs": [r.__dict__ for r in results]}
    (RESULTS / "replay_db.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS / 'replay_db.md'} and {RESULTS / 'replay_db.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
