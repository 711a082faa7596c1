"""`portfolio.alert_watch`: alerts in the feed worker — from memory on the tick path, reloaded on change, each
firing recorded once off the tick path, retried through outages, and announced to its owner only."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext

from marketdata import groups
from marketdata.events import PriceUpdate, Trade
from marketdata.models import Instrument
from marketdata.worker.loop import Worker
from portfolio import selectors, services
from portfolio.alert_watch import AlertWatch, PortfolioValues
from portfolio.alerts import PRICE_ABOVE, AlertIndex, Crossing, Rule
from portfolio.models import AlertKind, Notification
from tests.conftest import T0 as LEDGER_T0
from tests.conftest import listen_group, received, record

D = Decimal
T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


class Bursts:
    """A feed: bursts of BTC-USD trades, a pause (longer than a window) after each."""

    name = "bursts"

    def __init__(self, *bursts: list[str], pause: float = 0.03) -> None:
        self.bursts = bursts
        self.pause = pause

    async def __aiter__(self) -> Any:
        n = 0
        for burst in self.bursts:
            for price in burst:
                n += 1
                yield Trade("BTC-USD", T0 + timedelta(milliseconds=n), D(price), D(1), "test")
            await asyncio.sleep(self.pause)


async def no_store(_: Any) -> int:
    return 0


def worker(feed: Any, watch: AlertWatch) -> Worker:
    return Worker(feed=feed, conflation=0.01, quote_flush=60, epoch="a", store_quotes=no_store, store_candles=no_store, watchers=[watch])


@pytest.mark.django_db
def test_evaluating_a_windows_prices_with_alerts_loaded_makes_no_database_query(alice: Any, instruments: dict[str, Instrument]) -> None:
    for i in range(50):
        services.alert_create(user=alice, instrument=instruments["BTC-USD"], kind=AlertKind.PRICE_ABOVE, threshold=D(60_000 + i * 10))
    services.alert_create(user=alice, instrument=instruments["AAPL"], kind=AlertKind.MOVE_PCT, threshold=D(1), window_minutes=5)
    watch = AlertWatch()
    watch.index = AlertIndex(selectors.alert_rules_active())  # what a reload loads (in this thread's transaction)
    assert len(watch.index) == 51
    w = worker(Bursts(), watch)
    with CaptureQueriesContext(connection) as queries:
        for i in range(200):
            w.hub.apply(Trade("BTC-USD", T0 + timedelta(seconds=2 * i), D(59_900 + i * 3), D(1), "test"))
            w.hub.apply(Trade("AAPL", T0 + timedelta(seconds=2 * i), D(200 + i), D(1), "test"))
            w._drain()  # the end of a window: what the worker does on the tick path
    assert len(queries) == 0, [q["sql"] for q in queries]
    assert watch._crossings.qsize() == 50 + 1  # every BTC threshold up to 60,497, and AAPL's move (queued, not written)


@pytest.mark.django_db(transaction=True)
def test_a_worker_run_records_a_crossing_once_and_tells_its_owner_only(alice: Any, bob: Any, instruments: dict[str, Instrument]) -> None:
    btc = instruments["BTC-USD"]
    mine = services.alert_create(user=alice, instrument=btc, kind=AlertKind.PRICE_ABOVE, threshold=D("60100"), hysteresis=D("50"))
    services.alert_create(user=bob, instrument=btc, kind=AlertKind.PRICE_ABOVE, threshold=D("70000"))
    alice_hears, bob_hears = listen_group(groups.user_group(alice.pk)), listen_group(groups.user_group(bob.pk))
    watch = AlertWatch(check_seconds=0.01)

    async def run() -> None:
        await watch.reload_if_changed()
        # Up through 60,100 (fires), down to 60,080 (not past the hysteresis: stays disarmed), up again: nothing more.
        await worker(Bursts(["60000", "60050"], ["60120"], ["60080"], ["60200"], ["60300"]), watch).run(asyncio.Event())

    async_to_sync(run)()
    notes = list(Notification.objects.filter(user=alice))
    assert [(n.alert_id, n.value, n.message) for n in notes] == [(mine.pk, D("60120"), "BTC-USD at or above 60100: now 60120")]
    assert not Notification.objects.filter(user=bob).exists()
    mine.refresh_from_db()
    assert (mine.armed, mine.fired_at) == (False, notes[0].fired_at)
    events = [e for e in received(alice_hears) if e["type"] == groups.ALERT_FIRED_EVENT]
    assert [e["notification"]["message"] for e in events] == ["BTC-USD at or above 60100: now 60120"]
    assert events[0]["notification"]["value"] == "60120" and events[0]["notification"]["symbol"] == "BTC-USD"
    assert [e for e in received(bob_hears) if e["type"] == groups.ALERT_FIRED_EVENT] == []
    assert (watch.stats.fired, watch.stats.duplicates) == (1, 0)


@pytest.mark.django_db(transaction=True)
def test_a_second_worker_or_a_stale_reload_cannot_fire_an_alert_twice(alice: Any, instruments: dict[str, Instrument]) -> None:
    alert = services.alert_create(user=alice, instrument=instruments["AAPL"], kind=AlertKind.PRICE_BELOW, threshold=D("100"))
    first = services.alert_fire(alert_id=alert.pk, value=D("99"), fired_at=T0)
    again = services.alert_fire(alert_id=alert.pk, value=D("98"), fired_at=T0 + timedelta(seconds=1))
    assert first is not None and again is None
    assert Notification.objects.count() == 1
    assert services.alert_rearm(alert_id=alert.pk) is True
    assert services.alert_fire(alert_id=alert.pk, value=D("97"), fired_at=T0 + timedelta(seconds=2)) is not None


@pytest.mark.django_db(transaction=True)
def test_a_committed_change_to_alerts_makes_the_worker_reload_its_index(alice: Any, instruments: dict[str, Instrument]) -> None:
    watch = AlertWatch()

    async def reload() -> bool:
        return await watch.reload_if_changed()

    async_to_sync(reload)()
    assert async_to_sync(reload)() is False  # nothing changed: nothing read
    alert = services.alert_create(user=alice, instrument=instruments["AAPL"], kind=AlertKind.PRICE_ABOVE, threshold=D("250"))
    assert async_to_sync(reload)() is True
    assert list(watch.index.rules) == [alert.pk]
    services.alert_set_active(alert=alert, active=False)
    assert async_to_sync(reload)() is True
    assert len(watch.index) == 0


@pytest.mark.django_db
def test_paused_alerts_are_not_loaded_and_resumed_ones_come_back_armed(alice: Any, instruments: dict[str, Instrument]) -> None:
    alert = services.alert_create(user=alice, instrument=instruments["AAPL"], kind=AlertKind.PRICE_ABOVE, threshold=D("250"))
    services.alert_fire(alert_id=alert.pk, value=D("251"), fired_at=T0)
    assert [r.armed for r in selectors.alert_rules_active()] == [False]
    services.alert_set_active(alert=alert, active=False)
    assert selectors.alert_rules_active() == []
    services.alert_set_active(alert=alert, active=True)
    assert [r.armed for r in selectors.alert_rules_active()] == [True]


def crossing(alert_id: int = 1) -> Crossing:
    return Crossing(alert_id, True, "X", D("101"), D("101"), T0)


async def test_a_database_outage_while_firing_is_retried_and_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    async def fire(c: Crossing) -> int | None:
        attempts.append(c.alert_id)
        if len(attempts) < 3:
            raise OperationalError("the database is down")
        return 0

    async def version() -> str:
        return "1"

    async def load() -> list[Rule]:
        return [Rule(1, "X", PRICE_ABOVE, D("100"))]

    watch = AlertWatch(fire=fire, version=version, load=load, retry_first=0.01)
    running = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(watch.loaded.wait(), 5)
        watch.observe([PriceUpdate("X", 1, "e", D("101"), None, None, T0, "test", 1)])
        await watch.close()
    finally:
        running.cancel()
    assert attempts == [1, 1, 1]
    assert (watch.stats.fired, watch.stats.write_failures) == (1, 2)
    assert caplog.text.count("recording alert 1 failed; retrying") == 1  # once per outage
    assert "Traceback" not in caplog.text
    assert "alerts: reading and writing alerts again" in caplog.text


async def test_an_email_that_keeps_failing_is_given_up_after_its_attempts_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("portfolio.alert_watch.EMAIL_ATTEMPTS", 3)
    sent: list[int] = []

    async def fire(c: Crossing) -> int | None:
        return 42  # recorded, to be emailed as notification 42

    async def email(notification_id: int) -> bool:
        sent.append(notification_id)
        raise OSError("connection refused")

    async def version() -> str:
        return ""

    async def load() -> list[Rule]:
        return []

    watch = AlertWatch(fire=fire, email=email, version=version, load=load, retry_first=0.01)
    running = asyncio.create_task(watch.run())
    try:
        await asyncio.wait_for(watch.loaded.wait(), 5)
        watch._crossings.put_nowait(crossing())
        with caplog.at_level(logging.WARNING):
            await watch.close()
    finally:
        running.cancel()
    assert sent == [42, 42, 42]
    assert (watch.stats.fired, watch.stats.emails, watch.stats.email_failures) == (1, 0, 1)
    assert "gave up emailing notification 42 after 3 attempts" in caplog.text


# ---------------------------------------------------------------- portfolio alerts


def update(symbol: str, price: str, seq: int, reference: str | None = None) -> PriceUpdate:
    return PriceUpdate(
        symbol,
        seq,
        "w",
        D(price),
        None,
        None,
        T0 + timedelta(seconds=seq),
        "test",
        1,
        reference=None if reference is None else D(reference),
    )


@pytest.mark.django_db
def test_a_portfolio_value_alert_fires_once_when_prices_take_the_total_past_it_without_a_query(
    alice: Any, alice_portfolio: Any, instruments: dict[str, Instrument]
) -> None:
    # 10 AAPL at 200, 0.5 BTC at 60,000 and 3,499 USD: 35,499 at the stored prices.
    value = services.alert_create(user=alice, portfolio=alice_portfolio, kind=AlertKind.PORTFOLIO_VALUE_ABOVE, threshold=D("36000"))
    day = services.alert_create(user=alice, portfolio=alice_portfolio, kind=AlertKind.DAY_CHANGE_PCT, threshold=D("0.3"))
    watch = AlertWatch()
    watch.index = AlertIndex(selectors.alert_rules_active())
    watch.portfolios = PortfolioValues(*selectors.portfolio_views_load(portfolio_ids={alice_portfolio.pk}))
    with CaptureQueriesContext(connection) as queries:
        watch.observe([update("AAPL", "250", 1), update("MSFT", "999", 1)])  # 35,999; MSFT is not held
        first = drain(watch)
        watch.observe([update("AAPL", "251", 2, reference="240")])  # 36,009; BTC has no reference yet: no day change
        second = drain(watch)
        watch.observe([update("AAPL", "252", 3, reference="240"), update("BTC-USD", "60000", 1, reference="60000")])
        third = drain(watch)  # day change 120 on 35,899: +0.33 %
    assert len(queries) == 0, [q["sql"] for q in queries]
    assert first == []
    assert [(c.alert_id, c.fired, c.value) for c in second] == [(value.pk, True, D("36009.00"))]
    assert [(c.alert_id, c.fired) for c in third] == [(day.pk, True)]
    assert third[0].value.quantize(D("0.01")) == D("0.33")


@pytest.mark.django_db(transaction=True)
def test_a_ledger_change_of_a_portfolio_with_alerts_makes_the_worker_load_its_book_again(
    alice: Any, alice_portfolio: Any, instruments: dict[str, Instrument]
) -> None:
    services.alert_create(user=alice, portfolio=alice_portfolio, kind=AlertKind.PORTFOLIO_VALUE_BELOW, threshold=D("30000"))
    watch = AlertWatch()

    async def reload() -> bool:
        return await watch.reload_if_changed()

    assert async_to_sync(reload)() is True
    assert watch.portfolios is not None
    assert [v.totals().total_value for v in watch.portfolios.views] == [D("35499.00")]
    record(alice_portfolio, "withdrawal", "3000", executed_at=LEDGER_T0 + timedelta(days=2))
    assert async_to_sync(reload)() is True
    assert [v.totals().total_value for v in watch.portfolios.views] == [D("32499.00")]


@pytest.mark.django_db
def test_a_portfolio_alert_is_only_for_the_owners_portfolio_and_needs_no_instrument(
    alice: Any, bob: Any, alice_portfolio: Any, instruments: dict[str, Instrument]
) -> None:
    with pytest.raises(ValidationError) as caught:
        services.alert_create(user=bob, portfolio=alice_portfolio, kind=AlertKind.PORTFOLIO_VALUE_ABOVE, threshold=D("1"))
    assert caught.value.message_dict == {"portfolio": ["That portfolio is not the alert owner's."]}
    with pytest.raises(ValidationError) as caught:
        services.alert_create(
            user=alice, portfolio=alice_portfolio, instrument=instruments["AAPL"], kind=AlertKind.DAY_CHANGE_PCT, threshold=D("2")
        )
    assert caught.value.message_dict == {
        "instrument": ["A portfolio alert watches a portfolio, not an instrument: leave the instrument empty."]
    }
    with pytest.raises(ValidationError) as caught:
        services.alert_create(user=alice, kind=AlertKind.PRICE_ABOVE, threshold=D("2"))
    assert caught.value.message_dict == {"instrument": ["Choose the instrument this alert watches."]}
    alert = services.alert_create(user=alice, portfolio=alice_portfolio, kind=AlertKind.DAY_CHANGE_PCT, threshold=D("-2"))
    assert str(alert) == "Alice growth down 2% or more on the day"
    assert alert.hysteresis == D("0.2")


def drain(watch: AlertWatch) -> list[Crossing]:
    out = []
    while not watch._crossings.empty():
        out.append(watch._crossings.get_nowait())
    return out


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_on_the_real_redis_every_worker_sees_a_committed_alert_change_and_only_then(
    alice: Any, instruments: dict[str, Instrument], redis_layer: dict[str, Any]
) -> None:
    workers = [AlertWatch(), AlertWatch()]

    async def reload_all() -> list[bool]:
        return [await watch.reload_if_changed() for watch in workers]

    async_to_sync(reload_all)()
    assert async_to_sync(reload_all)() == [False, False]
    with transaction.atomic():
        alert = services.alert_create(user=alice, instrument=instruments["AAPL"], kind=AlertKind.PRICE_ABOVE, threshold=D("300"))
        assert async_to_sync(reload_all)() == [False, False]  # not committed yet: nothing to see
    assert async_to_sync(reload_all)() == [True, True]
    assert all(list(watch.index.rules) == [alert.pk] for watch in workers)
