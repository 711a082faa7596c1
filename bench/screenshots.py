"""Screenshots of the live pages, light and dark, on a desktop and a phone — one command:

    .venv/bin/python -m bench.screenshots [--out docs/screenshots] [--symbol BTC-USD]

It starts the stack the browser tests start (tests/servers.py): a fresh SQLite database in a temporary
directory, migrated and seeded with `seed_demo`, then daphne and `run_feeds` (the demo's synthetic feed)
against the Redis at REDIS_URL (an embedded one when none answers; keys under a prefix of this run's
own). In Debian's chromium (never a downloaded browser) it logs in as the demo user and writes

    <out>/dashboard-{desktop,phone}-{light,dark}.png     the dashboard, the USD demo portfolio's tab
    <out>/instrument-{desktop,phone}-{light,dark}.png    /market/<symbol>/

at 1440x900 (desktop) and 390x844 (phone), full page. "light" and "dark" are the browser's
prefers-color-scheme with the theme left on Auto, so they show what a new visitor sees. Each shot waits
for the page to be live and drawn (prices moving, charts and tapes filled), never a fixed sleep.
Re-run it after changing the pages and commit the PNGs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
SCHEMES = ("light", "dark")
CHROMIUM = "/usr/bin/chromium"


def wait_js(page: Any, expression: str, arg: Any = None, *, timeout: float = 20) -> None:
    """Poll `expression` in the page (through DevTools, which the pages' CSP allows) until it is truthy."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {expression}")
        page.wait_for_timeout(50)


def shoot_dashboard(page: Any, base: str, portfolio_id: int, path: Path) -> None:
    page.goto(f"{base}/")
    wait_js(page, "document.querySelector('#connection-status')?.dataset.state === 'live'")
    page.locator(f'[data-testid="view-tab"][data-view-id="{portfolio_id}"]').click()
    wait_js(page, "document.querySelectorAll('[data-testid=holdings] tbody tr').length > 3")
    # The value chart drawn (lightweight-charts draws on canvases).
    wait_js(page, "!!document.querySelector('[data-testid=value-chart] canvas')")
    # Values moved at least once since the snapshot: the page is live, not just drawn.
    total = f'[data-testid="total-value"][data-portfolio-id="{portfolio_id}"]'
    first = page.locator(total).inner_text()
    wait_js(page, "([selector, first]) => document.querySelector(selector).textContent !== first", [total, first])
    # The first update after a snapshot marks every cell that moved at once; the shot waits for that wave
    # to fade (each cell then rests a random while, dom.js), to show the page as it usually looks.
    wait_js(page, "document.querySelectorAll('.flash-up, .flash-down').length <= 2")
    page.screenshot(path=str(path), full_page=True)


def shoot_instrument(page: Any, base: str, symbol: str, path: Path) -> None:
    page.goto(f"{base}/market/{symbol}/")
    wait_js(page, "document.querySelector('#connection-status')?.dataset.state === 'live'")
    wait_js(page, "document.querySelectorAll('[data-testid=trades] tbody tr').length >= 8")
    page.screenshot(path=str(path), full_page=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go (docs/screenshots)")
    parser.add_argument("--symbol", default="BTC-USD", help="the instrument page to shoot (BTC-USD)")
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"screenshots: {CHROMIUM} is not installed (apt-get install chromium)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="livefolio-shots-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{work / 'db.sqlite3'}"
    os.environ.setdefault("DEBUG", "true")
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)

    import django

    django.setup()
    from io import StringIO

    from django.conf import settings
    from django.core.management import call_command

    from config.devstack import ensure_redis
    from portfolio.models import Portfolio
    from tests.servers import live_stack

    call_command("migrate", verbosity=0)
    call_command("seed_demo", stdout=StringIO())
    usd = Portfolio.objects.get(owner__username=settings.DEMO_USERNAME, name="Demo portfolio").pk
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    with ensure_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), log=False) as redis_url:
        prefix = f"livefolio-shots-{uuid.uuid4().hex[:8]}"
        with live_stack(redis_url=redis_url, layer_prefix=prefix, logs=work / "logs") as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            for scheme in SCHEMES:
                for size, viewport in SIZES.items():
                    context = browser.new_context(
                        viewport=viewport, color_scheme=scheme, locale="en-US", timezone_id="UTC", device_scale_factor=1
                    )
                    page = context.new_page()
                    page.goto(f"{base}/accounts/login/")
                    page.fill("#id_username", settings.DEMO_USERNAME)
                    page.fill("#id_password", settings.DEMO_PASSWORD)
                    page.get_by_role("button", name="Log in").click()
                    page.wait_for_url(f"{base}/")
                    for name, shoot in (
                        ("dashboard", lambda p, path: shoot_dashboard(p, base, usd, path)),
                        ("instrument", lambda p, path: shoot_instrument(p, base, args.symbol, path)),
                    ):
                        path = args.out / f"{name}-{size}-{scheme}.png"
                        shoot(page, path)
                        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
                    context.close()
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
