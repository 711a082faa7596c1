"""One cast for every test: alice owns a portfolio, bob owns another, charlie has none.

Tests run on the in-memory channel layer unless they ask for `redis_layer`,
which points the layer at a real Redis server (REDIS_URL if it answers,
otherwise an embedded one started for the session) under a unique prefix.
"""

from __future__ import annotations

import asyncio
import copy
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings as django_settings
from django.db.backends.utils import CursorWrapper
from django.test import Client

from config.devstack import ensure_redis
from marketdata.delivery import streams
from marketdata.delivery.fanout import Update
from marketdata.delivery.history import market_store
from marketdata.events import PriceUpdate, to_epoch_ms
from marketdata.models import AssetClass, Feed, FeedKind, Instrument, Quote
from marketdata.worker.market import ticker_data
from portfolio import services
from portfolio.models import Portfolio

D = Decimal
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Real recorded market data beside the project (../shared/data); tests using it skip when it is absent.
AGGTRADES = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance_spot_btcusdt_aggtrades_2026-01-01_first5000.csv"
needs_aggtrades = pytest.mark.skipif(not AGGTRADES.exists(), reason=f"the shared Binance aggTrades sample is not at {AGGTRADES}")
# The layer exactly as config/settings.py builds it, before tests swap in the in-memory one.
PRODUCTION_LAYER: dict[str, Any] = copy.deepcopy(django_settings.CHANNEL_LAYERS["default"])


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    # A file, not :memory:, so servers started by tests in other processes share the test database.
    db = django_settings.DATABASES["default"]
    # Connections opened in database_sync_to_async threads close after each call,
    # so none outlives the test database (PostgreSQL refuses to drop one in use).
    db["CONN_MAX_AGE"] = 0
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("TEST", {})["NAME"] = str(Path(tempfile.gettempdir()) / f"livefolio-test-{os.getpid()}.sqlite3")


def _use_layer(config: dict[str, Any]) -> None:
    django_settings.CHANNEL_LAYERS = {"default": config}
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def in_memory_layer() -> Iterator[None]:
    saved = django_settings.CHANNEL_LAYERS
    _use_layer({"BACKEND": "channels.layers.InMemoryChannelLayer"})
    yield
    django_settings.CHANNEL_LAYERS = saved
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fast_password_hashing(request: pytest.FixtureRequest, settings: Any) -> None:
    # PBKDF2 costs ~0.3 s per user. Browser tests keep the real hashers: their
    # server runs in another process, which must verify the passwords.
    if request.node.get_closest_marker("browser") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with ensure_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), log=False) as url:
        yield url


@pytest.fixture
def layer_prefix() -> str:
    return f"livefolio-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def redis_layer(redis_url: str, layer_prefix: str) -> dict[str, Any]:
    """Switch this test to the real Redis channel layer, configured exactly as production is."""
    config = {
        "BACKEND": PRODUCTION_LAYER["BACKEND"],
        "CONFIG": {
            **PRODUCTION_LAYER["CONFIG"],
            "hosts": [{**PRODUCTION_LAYER["CONFIG"]["hosts"][0], "address": redis_url}],
            "prefix": layer_prefix,
        },
    }
    _use_layer(config)
    return config


@pytest.fixture
def instruments(db: None) -> dict[str, Instrument]:
    rows = [
        ("AAPL", "Apple Inc.", AssetClass.EQUITY, "USD", D("200")),
        ("MSFT", "Microsoft Corp.", AssetClass.EQUITY, "USD", D("400")),
        ("BTC-USD", "Bitcoin", AssetClass.CRYPTO, "USD", D("60000")),
        ("EUR/USD", "Euro / US dollar", AssetClass.FX, "USD", D("1.10")),
        ("SAP", "SAP SE", AssetClass.EQUITY, "EUR", D("230")),
    ]
    out = {}
    for symbol, name, asset_class, currency, price in rows:
        inst = Instrument.objects.create(symbol=symbol, name=name, asset_class=asset_class, quote_currency=currency)
        Quote.objects.create(instrument=inst, price=price, exchange_ts=T0, seq=0, source="test")
        out[symbol] = inst
    return out


@pytest.fixture
def synthetic_feed(db: None) -> Feed:
    """What `run_feeds` runs in tests that start it: a fast random walk of every active instrument."""
    # update_or_create: the migration made it, unless an earlier transactional test flushed the database.
    feed, _ = Feed.objects.update_or_create(
        name="synthetic", defaults={"kind": FeedKind.SYNTHETIC, "options": {"ticks_per_second": 10}, "enabled": True}
    )
    return feed


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", password="bob-pass-123")


@pytest.fixture
def charlie(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("charlie", password="charlie-pass-123")


def record(portfolio: Portfolio, kind: str, quantity: str, instrument: Instrument | None = None, **fields: Any) -> Any:
    """Record one ledger entry through the service (decimal fields may be given as strings); executed at T0 by default."""
    values = {name: D(value) if isinstance(value, str) and name in ("price", "fee", "fx_rate") else value for name, value in fields.items()}
    values.setdefault("executed_at", T0)
    draft = services.Draft(kind=kind, quantity=D(quantity), instrument=instrument, **values)
    return services.transaction_record(portfolio=portfolio, draft=draft)


@pytest.fixture
def alice_portfolio(alice: Any, instruments: dict[str, Instrument]) -> Portfolio:
    # 25000 deposited; 10 AAPL at 150 + 1 fee; 0.5 BTC at 40000 → 3499 USD cash left.
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Alice growth")
    record(portfolio, "deposit", "25000", executed_at=T0 - timedelta(days=1))
    record(portfolio, "buy", "10", instruments["AAPL"], price="150", fee="1")
    record(portfolio, "buy", "0.5", instruments["BTC-USD"], price="40000")
    return portfolio


@pytest.fixture
def bob_portfolio(bob: Any, instruments: dict[str, Instrument]) -> Portfolio:
    portfolio = services.portfolio_create(owner_id=bob.pk, name="Bob income")
    record(portfolio, "buy", "3", instruments["MSFT"], price="300", executed_at=T0 + timedelta(days=1))
    return portfolio


def session_cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}".encode()


def listen_group(group: str) -> str:
    """A channel on the current layer that receives `group`'s messages (per-user events)."""
    layer = get_channel_layer()
    channel: str = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return channel


def received(channel: str) -> list[dict[str, Any]]:
    """Everything waiting on an in-memory layer channel, without blocking."""
    layer = get_channel_layer()

    async def drain() -> list[dict[str, Any]]:
        out = []
        while channel in layer.channels and not layer.channels[channel].empty():
            out.append(await layer.receive(channel))
        return out

    return async_to_sync(drain)()


class Tap:
    """A sink of the process's market hub, as a connection is: the live messages of the channels it holds, in order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def deliver(self, update: Update) -> None:
        self.messages.append(update.message)

    def missed(self, channels: Sequence[str]) -> None:
        raise AssertionError(f"the in-process hub never loses messages ({channels})")

    def take(self) -> list[dict[str, Any]]:
        """What arrived since the last take."""
        taken, self.messages = self.messages, []
        return taken


def ticker_message(update: PriceUpdate) -> dict[str, Any]:
    """The `ticker:SYM` message the feed worker makes of a price update."""
    return {
        "ch": f"ticker:{update.symbol}",
        "epoch": update.epoch,
        "seq": update.seq,
        "ts": to_epoch_ms(update.ts),
        "data": ticker_data(update),
    }


async def publish_price(update: PriceUpdate) -> None:
    """Publish a price as the feed worker does: its ticker message, appended to the history, then live on the hub."""
    message = ticker_message(update)
    await market_store().append([message])
    await streams.publish_market(update.symbol, [message])


def listen(*symbols: str) -> Tap:
    """The tickers (prices) of `symbols` as the hub hands them to dashboards: sync tests call this, async ones `alisten`."""
    return async_to_sync(alisten)(*symbols)


async def alisten(*symbols: str) -> Tap:
    tap = Tap()
    await streams.subscribe_market(tap, [f"ticker:{symbol}" for symbol in symbols])
    return tap


async def until(condition: Callable[[], bool] | Callable[[], Awaitable[bool]], *, timeout: float = 5, what: str = "") -> None:  # noqa: ASYNC109
    """Wait for `condition` (polled), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


@contextmanager
def count_queries() -> Iterator[list[str]]:
    """Every SQL statement from any thread (database_sync_to_async runs queries off the event loop)."""
    seen: list[str] = []
    original = CursorWrapper._execute_with_wrappers

    def counting(self: CursorWrapper, sql: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(sql)
        return original(self, sql, *args, **kwargs)

    CursorWrapper._execute_with_wrappers = counting  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        CursorWrapper._execute_with_wrappers = original  # type: ignore[method-assign]
