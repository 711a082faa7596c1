"""Browser fixtures: Debian's chromium through Playwright, and the demo data."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from marketdata.models import Instrument
from portfolio.models import Portfolio

CHROMIUM = "/usr/bin/chromium"
# Every browser test: real Redis, a database other processes can see, and Debian's chromium.
BROWSER_TEST = [
    pytest.mark.browser,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (make test installs it where it can)"),
]


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API refuses to start inside a running event loop; pytest-asyncio leaves none here.
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


def log_in(page: Any, base: str, username: str, password: str, next_path: str = "/") -> None:
    page.goto(f"{base}{next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Log in").click()


@pytest.fixture
def demo() -> dict[str, int]:
    call_command("seed_demo", stdout=StringIO())
    portfolios = dict(Portfolio.objects.filter(owner__username=settings.DEMO_USERNAME).values_list("name", "pk"))
    return {"usd": portfolios["Demo portfolio"], "eur": portfolios["Euro portfolio"], "qqq": Instrument.objects.get(symbol="QQQ").pk}


def wait_for_js(page: Any, expression: str, *, arg: Any = None, timeout: float = 5_000) -> None:
    """`page.wait_for_function`, but polled with `page.evaluate`, which works under our Content-Security-Policy.

    Playwright's own waiter re-evaluates the expression as a string inside the page, which a policy without
    'unsafe-eval' refuses (EvalError); `evaluate` goes through DevTools, which no page policy blocks.
    `timeout` is in milliseconds, as Playwright's.
    """
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} ms waiting for {expression}")
        page.wait_for_timeout(20)  # lets Playwright deliver the browser's events meanwhile
