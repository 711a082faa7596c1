"""A replay is exact: what it publishes is a function of the file and the options, never of the machine's speed."""

from __future__ import annotations

from collections import defaultdict
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command

from marketdata.api.channels import market_channels
from marketdata.delivery import streams
from marketdata.models import Candle, Instrument, SymbolAlias
from tests.conftest import Tap
from tests.marketdata.binance_capture import binance_capture

pytestmark = pytest.mark.django_db(transaction=True)

CHANNELS = [channel.name for channel in market_channels("BTC-USD")]


@pytest.fixture
def btc_alias(instruments: dict[str, Instrument]) -> SymbolAlias:
    return SymbolAlias.objects.create(alias="BTCUSDT", source="binance", instrument=instruments["BTC-USD"])


def replayed(path: Path, *options: str) -> dict[str, list[dict[str, Any]]]:
    """Every message `replay_feed` published, per channel, as a client of the hub receives them (epoch left out)."""
    tap = Tap()
    async_to_sync(streams.subscribe_market)(tap, CHANNELS)
    try:
        call_command("replay_feed", str(path), "--no-progress", "--conflation-ms", "100", *options, stdout=StringIO())
    finally:
        streams.unsubscribe_market(tap, CHANNELS)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in tap.take():
        out[message["ch"]].append({key: value for key, value in message.items() if key != "epoch"})
    return dict(out)


def test_the_same_capture_publishes_the_same_messages_at_max_speed_twice_and_at_50x(btc_alias: SymbolAlias, tmp_path: Path) -> None:
    capture = binance_capture().write(tmp_path / "capture.txt")  # 10 s of exchange time: 0.2 s at ×50

    first = replayed(capture, "--speed", "max")
    again = replayed(capture, "--speed", "max")
    paced = replayed(capture, "--speed", "50")

    assert set(first) == set(CHANNELS)  # every channel carried something
    # Windows of 100 ms of exchange time over 10 s: about one ticker per window, never the handful a wall-clock
    # window at max speed made of the whole file.
    assert len(first["ticker:BTC-USD"]) > 90
    assert again == first
    assert paced == first


def test_the_published_book_equals_the_exchanges_book_ticker_at_every_diff_it_names(btc_alias: SymbolAlias, tmp_path: Path) -> None:
    """A client following book:BTC-USD@depth=1 holds, after the message carrying update id u, the top the
    capture's bookTicker with that u shows: the snapshot straddling a diff and every diff after it are applied
    as Binance documents, one window per diff, at --speed max."""
    capture = binance_capture(seed=11, receive_unit="ns")  # as hftbacktest records: receive time in nanoseconds
    path = capture.write(tmp_path / "capture.txt")

    messages = replayed(path, "--speed", "max")["book:BTC-USD@depth=1"]

    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    tops: dict[int, tuple[str, str, str, str]] = {}
    for message in messages:
        data = message["data"]
        assert data["state"] == "synced"
        for side, changes in ((bids, data["bids"]), (asks, data["asks"])):
            for price, qty in changes:
                if qty == "0":
                    side.pop(price, None)
                else:
                    side[price] = qty
        [(bid, bid_qty)], [(ask, ask_qty)] = bids.items(), asks.items()
        tops[data["update_id"]] = (bid, bid_qty, ask, ask_qty)
    assert min(tops) > capture.snapshot_id  # nothing before the book synced from the straddling snapshot
    checked = 0
    held = None
    for update_id in sorted(capture.checkpoints):
        held = tops.get(update_id, held)  # no message: the top 1 did not change with this diff
        if update_id <= capture.snapshot_id or held is None:
            continue
        bid, bid_qty, ask, ask_qty = capture.checkpoints[update_id]
        assert held == (_plain(bid), _plain(bid_qty), _plain(ask), _plain(ask_qty)), update_id
        checked += 1
    assert checked >= capture.diffs - 5


def _plain(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def test_a_duplicated_trade_counts_once_and_a_lost_diff_is_reported_with_the_book_out_of_sync(
    btc_alias: SymbolAlias, tmp_path: Path
) -> None:
    capture = binance_capture(seed=3, diffs=30)
    lines = list(capture.lines)
    trade = next(i for i, line in enumerate(lines) if "@aggTrade" in line)
    lines.insert(trade + 1, lines[trade])  # the recorder wrote it twice
    diffs = [i for i, line in enumerate(lines) if "@depth" in line]
    del lines[diffs[20]]  # a diff the recorder never received: the book is lost from there on
    path = tmp_path / "capture.txt"
    path.write_text("".join(line + "\n" for line in lines))
    tap = Tap()
    async_to_sync(streams.subscribe_market)(tap, ["book:BTC-USD@depth=10"])

    out = StringIO()
    call_command("replay_feed", str(path), "--speed", "max", "--no-progress", stdout=out)

    summary = out.getvalue().splitlines()[-1]
    assert "data faults: duplicate trades (dropped) 1, book syncs lost 1;" in summary, summary
    assert sum(c.trades for c in Candle.objects.filter(instrument__symbol="BTC-USD")) == capture.trades
    states = [m["data"]["state"] for m in tap.take()]
    assert states[-1] == "out_of_sync" and states.count("out_of_sync") == 1  # said once, then quiet until a snapshot
    streams.unsubscribe_market(tap, ["book:BTC-USD@depth=10"])
