"""The capacity model of docs/scaling.md: its formulas (D1-D9) over its inputs (M and A), as tables.

Pure arithmetic, no measurement: change an input (say `--symbols 5000`) and see what follows.
The defaults are the document's; each constant names the input it comes from.

    .venv/bin/python bench/capacity_model.py
"""

from __future__ import annotations

import argparse
import math

# Measured (docs/scaling.md, section 1)
FRAME_UNEXPLAINED_US = 456.0  # D1: M5's ~590 µs per frame less M7's build and M19's send
DAPHNE_SEND_US = 14.0  # M19, 5,000-byte frames
FRAME_BASE_US, FRAME_ROW_US = 39.0, 9.7  # M7
PAYLOAD_RECEIPT_US = 40.0  # M10: 29-46 µs per payload received by a process
PROCESS_BASE_MB, DASHBOARD_KB = 85.0, 77.0  # M4
MINUTE_HOOK_US = 52.5  # M8, per portfolio per minute
QUERIES_PER_CONNECT = 24  # M16
OPENS_PER_PROCESS = 42  # M6
FRAME_BYTES_BASE, FRAME_BYTES_ROW = 1430, 430  # M7's frame sizes
MINUTES_KEPT = 30 * 1440  # HISTORY_RETENTION_DAYS
# Assumed (section 2)
PROCESS_BUDGET_US = 0.6e6  # A4
IDLE_US, PER_PRICE_US = 20.0, 2.0  # A11
REDIS_PUBLISH_US, REDIS_HISTORY_US, REDIS_DELIVERY_US, REDIS_BUDGET = 2.5, 5.0, 0.6, 0.5  # A6 (M11 × 2)
WINDOW_US, WORKER_BUDGET = 90.0, 0.6  # A7
NGINX_KB, NGINX_FRAME_US = (10, 50), (5, 15)  # A8
ROW_BYTES = 120  # A9
CONNECTS_PER_HOUR = 1  # A10
PG_QUERIES_PER_S = 50_000  # A12
COALESCE_S = 0.2  # PORTFOLIO_COALESCE_MS
WS_MAX_CONNECTIONS = 2000


def frames_per_s(r: float) -> float:
    """A3: a frame in each flush in which a Poisson stream of r changes/s brought something."""
    return (1 / COALESCE_S) * (1 - math.exp(-r * COALESCE_S))


def rows_per_frame(r: float, holdings: int) -> float:
    return min(holdings, r / frames_per_s(r))


def dashboard_us(r: float, holdings: int, *, floor: bool) -> float:
    """D1, D2: CPU per dashboard per second."""
    frame = DAPHNE_SEND_US + FRAME_BASE_US + FRAME_ROW_US * rows_per_frame(r, holdings)
    if not floor:
        frame += FRAME_UNEXPLAINED_US
    return frames_per_s(r) * frame + r * PER_PRICE_US + IDLE_US


def held(dashboards: int, symbols: int, holdings: int) -> float:
    """D3: distinct symbols held by a process's dashboards (holdings drawn uniformly)."""
    return symbols * (1 - (1 - holdings / symbols) ** dashboards)


def per_process(r: float, symbols: int, holdings: int, *, floor: bool) -> int:
    """D4: the most dashboards a process serves within its budget."""
    u = r / holdings
    best = 0
    for d in range(1, WS_MAX_CONNECTIONS + 1):
        if d * dashboard_us(r, holdings, floor=floor) + held(d, symbols, holdings) * u * PAYLOAD_RECEIPT_US > PROCESS_BUDGET_US:
            break
        best = d
    return best


def count(x: float) -> str:
    return f"{x / 1e6:.1f} M" if x >= 1e6 else f"{x:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=1000, help="A1: active symbols held by someone")
    parser.add_argument("--holdings", type=int, default=10, help="A1: holdings per dashboard")
    parser.add_argument("--dashboards", default="10000,100000,1000000")
    parser.add_argument("--rates", default="1,10,100", help="A2: changed holdings per dashboard per second")
    args = parser.parse_args()
    s, h = args.symbols, args.holdings
    cases = [(int(n), float(r)) for n in args.dashboards.split(",") for r in args.rates.split(",")]
    print(f"S = {s:,} symbols, H = {h} holdings\n")
    print(
        "| dashboards | r | per process | processes (cores) | at the floor (X1) | daphne RSS, GB | PUBLISH/s | Redis deliveries/s "
        "| Redis CPU, cores | Redis shards | subscriber connections per shard | workers | worker CPU, cores | minute hook, cores |"
    )
    print("|---:" * 14 + "|")
    for n, r in cases:
        u = r / h
        d = per_process(r, s, h, floor=False)
        p = math.ceil(n / d)
        p_floor = math.ceil(n / per_process(r, s, h, floor=True))
        publishes = s * u
        deliveries = p * held(d, s, h) * u
        redis = (publishes * (REDIS_PUBLISH_US + REDIS_HISTORY_US) + deliveries * REDIS_DELIVERY_US) / 1e6
        worker = publishes * WINDOW_US / 1e6
        workers = max(1, math.ceil(worker / WORKER_BUDGET))
        print(
            f"| {n:,} | {r:g} | {d:,} | {p:,} | {p_floor:,} | {p * (PROCESS_BASE_MB + d * DASHBOARD_KB / 1024) / 1024:,.0f} "
            f"| {publishes:,.0f} | {count(deliveries)} | {redis:.2f} | {max(1, math.ceil(redis / REDIS_BUDGET))} | {p:,} "
            f"| {workers} (+{workers}) | {worker:.2f} | {n * MINUTE_HOOK_US / 60 / 1e6:.2f} |"
        )
    print()
    print(
        "| dashboards | r | nginx fds | frames/s through nginx | egress, Gbit/s | nginx memory, GB (A8) | nginx CPU, cores (A8) "
        "| `PortfolioValue` rows/s | rows kept (30 days) | size kept (A9) | connect queries/s, steady "
        "| one daphne dies: queries/s while its dashboards return | full reconnect: queries | at A12, s |"
    )
    print("|---:" * 14 + "|")
    for n, r in cases:
        d = per_process(r, s, h, floor=False)
        p = math.ceil(n / d)
        frames = n * frames_per_s(r)
        egress = frames * (FRAME_BYTES_BASE + FRAME_BYTES_ROW * rows_per_frame(r, h)) * 8 / 1e9
        kept = n * MINUTES_KEPT
        returning = min(2 * d, (p - 1) * OPENS_PER_PROCESS) * QUERIES_PER_CONNECT
        print(
            f"| {n:,} | {r:g} | {2 * n:,} | {count(frames)} | {egress:.1f} | {n * NGINX_KB[0] / 1e6:g}–{n * NGINX_KB[1] / 1e6:g} "
            f"| {frames * NGINX_FRAME_US[0] / 1e6:.2f}–{frames * NGINX_FRAME_US[1] / 1e6:.2f} | {n / 60:,.0f} | {kept / 1e9:.2f} G "
            f"| {kept * ROW_BYTES / 1e9:,.0f} GB | {n * CONNECTS_PER_HOUR / 3600 * QUERIES_PER_CONNECT:,.0f} | {returning:,} "
            f"| {count(n * QUERIES_PER_CONNECT)} | {n * QUERIES_PER_CONNECT / PG_QUERIES_PER_S:,.0f} |"
        )


if __name__ == "__main__":
    main()
