"""Benchmark: peak memory and time of a 1,000,000-row CSV import, dry run and real, beside an older tree.

    python bench/import_memory.py                           (this tree only)
    python bench/import_memory.py --before-rev REV          (also REV, from a git worktree, in the same run)
    python bench/import_memory.py --rows 200000             (a smaller file)
    make bench-import                                       (with IMPORT_ARGS, by default the tree before streaming)

Input: `bench/import_csv.py`'s sound USD ledger (a deposit, then buys of AAPL and MSFT with sells and
dividends mixed in, one a minute), written to a temporary file: 1,000,000 rows are about 47 MB.

Each tree runs the real command, `manage.py import_transactions FILE --portfolio ID [--dry-run]`, as a
child process against its own copy of one migrated SQLite database (the two instruments, an empty
portfolio) with the in-memory channel layer (no Redis: the import's only message is the owner's reload
event). The peak resident set size is the child's own `ru_maxrss` from `os.wait4`, so it is the
whole Python process: the interpreter, Django, the parse and the database work. Time is the command's
wall clock. One run per tree and mode; the machine may be shared, so times are rough, memory is not.
Every run must end with the same summary, and the real imports with the same database rows.
Writes bench/results/import.md and import.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.import_csv import SYMBOLS, ledger_lines  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
ROWS = 1_000_000
TARGET_MB = 200
MODES = ("dry run", "import")

MEMORY_SETTINGS = """from config.settings import *  # noqa: F403
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
"""

SEED = f"""
from django.contrib.auth import get_user_model
from marketdata.models import AssetClass, Instrument
from portfolio import services
for symbol in {SYMBOLS!r}:
    Instrument.objects.create(symbol=symbol, name=symbol, asset_class=AssetClass.EQUITY, quote_currency="USD")
owner = get_user_model().objects.create_user("bench")
print(services.portfolio_create(owner_id=owner.pk, name="Bench").pk)
"""


@dataclass
class Result:
    tree: str
    mode: str
    rows: int
    peak_rss_mb: float
    wall_s: float
    summary: str  # the command's last line, without its time
    output_digest: str  # of everything it printed (a dry run's preview of holdings and cash), without the time
    rows_digest: str  # of the ledger, holdings and cash in the database afterwards


def run(args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench/import_memory.py: {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def measured(args: Sequence[str], *, cwd: Path, env: dict[str, str], folder: Path) -> tuple[str, float, float]:
    """Run a child; returns its stdout, its own peak RSS in MB (ru_maxrss, KB on Linux) and its wall time."""
    out, err = folder / "out.txt", folder / "err.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(args, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen so it does not wait again
    if child.returncode != 0:
        sys.exit(f"bench/import_memory.py: {' '.join(args)} exited {child.returncode}:\n{err.read_text()[-3000:]}")
    return out.read_text(encoding="utf-8"), usage.ru_maxrss / 1024, wall


def rows_digest(db: Path) -> str:
    with sqlite3.connect(db) as c:
        ledger = c.execute(
            "select kind, executed_at, quantity, price, fee, currency, fx_rate, note from portfolio_transaction order by executed_at, id"
        )
        digest = hashlib.sha256()
        for row in ledger:
            digest.update(repr(row).encode())
        digest.update(
            repr(c.execute("select instrument_id, quantity, cost, cost_base from portfolio_holding order by 1").fetchall()).encode()
        )
        digest.update(repr(c.execute("select currency, amount from portfolio_cashbalance order by 1").fetchall()).encode())
    return digest.hexdigest()[:16]


def one(tree: Path, name: str, mode: str, *, seed: Path, folder: Path, csv: Path, portfolio: str, rows: int) -> Result:
    db = folder / "run.sqlite3"
    shutil.copy(seed, db)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "PYTHONPATH": str(folder), "DJANGO_SETTINGS_MODULE": "memory_settings"}
    args = [PYTHON, "manage.py", "import_transactions", str(csv), "--portfolio", portfolio, *(["--dry-run"] if mode == "dry run" else [])]
    out, peak, wall = measured(args, cwd=tree, env=env, folder=folder)
    out = re.sub(r" in [\d.]+ s; ", "; ", out)  # without the time, which differs
    summary, preview = out.strip().splitlines()[-1], hashlib.sha256(out.encode()).hexdigest()[:16]
    result = Result(name, mode, rows, round(peak, 1), round(wall, 1), summary, preview, rows_digest(db))
    print(f"  {name}, {mode}: peak RSS {result.peak_rss_mb:,.0f} MB, {result.wall_s:.1f} s", flush=True)
    return result


def report(results: Sequence[Result], before: str | None, rows: int, size_mb: float) -> str:
    lines = [
        "| tree | mode | rows | peak RSS MB | wall s | rows/s | under 200 MB |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        under = "yes" if r.peak_rss_mb < TARGET_MB else "**no**"
        lines.append(f"| {r.tree} | {r.mode} | {r.rows:,} | {r.peak_rss_mb:,.0f} | {r.wall_s:.1f} | {r.rows / r.wall_s:,.0f} | {under} |")
    same_summary = all(len({r.output_digest for r in results if r.mode == m}) == 1 for m in MODES)
    imports = [r for r in results if r.mode == "import"]
    same_rows = len({r.rows_digest for r in imports}) == 1
    return "\n\n".join(
        [
            f"# A {rows:,}-row CSV import: peak memory and time (bench/import_memory.py)",
            f"{datetime.now(UTC).isoformat(timespec='seconds')}; {os.cpu_count()} CPUs, shared with other work; one run each.",
            f"{rows:,} rows ({size_mb:.0f} MB) of bench/import_csv.py's ledger, `manage.py import_transactions` (with and without "
            "`--dry-run`) in a child process into an empty portfolio, SQLite, the in-memory channel layer. Peak RSS is the child's "
            f"own `ru_maxrss`: the whole process. The target is under {TARGET_MB} MB."
            + (f" `{before}` is the tree before imports streamed, from a git worktree." if before else ""),
            "\n".join(lines),
            ("Every run of a mode printed the same (summary and preview)" if same_summary else "**The outputs differ**")
            + (
                "; every real import left the same ledger, holdings and cash (by digest)."
                if same_rows
                else "; **the real imports left different rows.**"
            ),
            "\n".join(f"- {r.tree}, {r.mode}: `{r.summary}`" for r in results),
        ]
    )


def main(argv: Sequence[str]) -> None:
    before = argv[argv.index("--before-rev") + 1] if "--before-rev" in argv else None
    rows = int(argv[argv.index("--rows") + 1]) if "--rows" in argv else ROWS
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csv = folder / "ledger.csv"
        with csv.open("w", encoding="utf-8", newline="") as out:
            out.writelines(ledger_lines(rows))
        size_mb = csv.stat().st_size / 2**20
        (folder / "memory_settings.py").write_text(MEMORY_SETTINGS, encoding="utf-8")
        trees = [("this tree", ROOT)]
        if before:
            worktree = folder / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), before], cwd=ROOT, check=True, capture_output=True)
            trees.insert(0, (f"before ({before})", worktree))
        try:
            seed = folder / "seed.sqlite3"
            env = {**os.environ, "DATABASE_URL": f"sqlite:///{seed}"}
            run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env)
            portfolio = (
                run([PYTHON, "manage.py", "shell", "-c", SEED], cwd=ROOT, env=env).strip().splitlines()[-1]
            )  # after shell's own notes
            print(f"{rows:,} rows, {size_mb:.0f} MB", flush=True)
            results = [
                one(tree, name, mode, seed=seed, folder=folder, csv=csv, portfolio=portfolio, rows=rows)
                for mode in MODES
                for name, tree in trees
            ]
        finally:
            if before:
                subprocess.run(["git", "worktree", "remove", "--force", str(folder / "before")], cwd=ROOT, check=False)
    text = report(results, before, rows, size_mb)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "import.md").write_text(text + "\n", encoding="utf-8")
    raw = {"rows": rows, "file_mb": round(size_mb, 1), "before_rev": before, "target_mb": TARGET_MB, "runs": [r.__dict__ for r in results]}
    (RESULTS / "import.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS / 'import.md'} and {RESULTS / 'import.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
