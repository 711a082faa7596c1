"""`replay_feed` end to end on real Binance data: the live path, a summary, and bad input reported, never hidden."""

import re
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from prometheus_client import REGISTRY

from marketdata.models import Candle, Instrument, Quote, SymbolAlias
from tests.conftest import AGGTRADES, listen, needs_aggtrades

pytestmark = [pytest.mark.django_db(transaction=True), needs_aggtrades]

SUMMARY = re.compile(
    r"replay_feed: (?P<read>[\d,]+) events read, (?P<published>[\d,]+) published as (?P<updates>[\d,]+) updates; "
    r"skipped: (?P<skipped>.+?); (?:passed over \(no market data\): (?P<passed>.+?); )?"
    r"data faults: (?P<faults>.+?); (?:(?P<lost>lost .+?); )?"
    r"clock: (?P<clock>.+?); [\d.]+ s wall, [\d,]+ events/s(?:; recorded (?P<span>.+) UTC)?"
)


def replay_feed(*args: str) -> re.Match[str]:
    out = StringIO()
    call_command("replay_feed", *args, "--no-progress", stdout=out)
    lines = out.getvalue().splitlines()
    assert re.match(r"replay_feed: (1 file|\d+ files) at (max speed|×[\d.]+), epoch \d+; Ctrl-C to stop$", lines[0]), lines[0]
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary, lines[-1]
    return summary


@pytest.fixture
def btc_alias(instruments: dict[str, Instrument]) -> SymbolAlias:
    return SymbolAlias.objects.create(alias="BTCUSDT", source="binance", instrument=instruments["BTC-USD"])


def test_a_days_trades_go_the_live_way_stored_as_quotes_and_candles_and_marked_as_replay(btc_alias: SymbolAlias) -> None:
    btc = listen("BTC-USD")

    summary = replay_feed(str(AGGTRADES), "--speed", "max")

    assert (summary["read"], summary["published"], summary["skipped"]) == ("5,000", "5,000", "none")
    assert summary["span"] == "2026-01-01 00:00:00 to 2026-01-01 00:12:19"
    quote = Quote.objects.get(instrument__symbol="BTC-USD")
    assert (quote.price, quote.source) == (Decimal("87759.14"), "binance")  # the file's last trade
    updates = btc.take()
    assert updates and all(u["data"]["replay"] for u in updates)
    assert [u["seq"] for u in updates] == list(range(1, len(updates) + 1))
    candles = list(Candle.objects.filter(instrument__symbol="BTC-USD").order_by("start"))
    assert [c.start.strftime("%H:%M") for c in candles] == [f"00:{m:02d}" for m in range(13)]
    assert (candles[0].open, candles[-1].close) == (Decimal("87648.21"), Decimal("87759.14"))
    assert sum(c.trades for c in candles) == 5000


def test_an_unknown_symbol_is_reported_once_with_its_count_and_nothing_is_stored(instruments: dict[str, Instrument]) -> None:
    summary = replay_feed(str(AGGTRADES), "--speed", "max", "--symbol", "BTCUSDT")
    assert summary["published"] == "0"
    assert summary["skipped"] == "unknown symbol (BTCUSDT ×5,000) 5,000"
    assert not Candle.objects.exists()


def test_create_instruments_makes_the_missing_instrument_and_stores_its_prices(db: None) -> None:
    summary = replay_feed(str(AGGTRADES), "--speed", "max", "--symbol", "BTCUSDT", "--create-instruments")
    assert summary["published"] == "5,000"
    instrument = Instrument.objects.get(symbol="BTCUSDT")
    assert (instrument.asset_class, instrument.quote_currency) == ("crypto", "USD")
    assert instrument.quote.price == Decimal("87759.14")
    assert instrument.candles.count() == 13


def test_a_time_window_and_a_symbol_filter_cut_the_session(btc_alias: SymbolAlias) -> None:
    summary = replay_feed(str(AGGTRADES), "--speed", "max", "--from", "2026-01-01T00:05:00", "--to", "2026-01-01T00:06:00Z")
    assert summary["span"] == "2026-01-01 00:05:00 to 2026-01-01 00:05:59"
    assert [c.start.strftime("%H:%M") for c in Candle.objects.all()] == ["00:05"]
    assert "before --from" in summary["skipped"]

    summary = replay_feed(str(AGGTRADES), "--speed", "max", "--symbols", "AAPL")
    assert (summary["published"], summary["skipped"]) == ("0", "not in --symbols 5,000")


def test_broken_lines_are_skipped_and_counted_or_stop_the_run_with_strict(btc_alias: SymbolAlias, tmp_path: Path) -> None:
    lines = AGGTRADES.read_text().splitlines(keepends=True)[:100]
    lines[10] = lines[10][:25] + "\n"  # truncated
    lines[20] = lines[20].replace(",0.", ",zero.", 1)  # bad number
    broken = tmp_path / "BTCUSDT-aggTrades-2026-01-01.csv"
    broken.write_text("".join(lines))

    summary = replay_feed(str(broken), "--speed", "max")
    assert summary["published"] == "98"
    assert summary["skipped"] == "wrong column count 1, bad number 1"

    with pytest.raises(CommandError, match=rf"stopped at a bad line \(--strict\): {re.escape(str(broken))}:11: wrong column count"):
        call_command("replay_feed", str(broken), "--speed", "max", "--strict", "--no-progress", stdout=StringIO())


def test_bad_arguments_are_refused_before_anything_runs(btc_alias: SymbolAlias, tmp_path: Path) -> None:
    for args, message in [
        (["--speed", "fast"], "--speed 'fast': give a number"),
        (["--speed", "0"], "must be above 0"),
        (["--from", "noon"], "--from 'noon' is not an ISO 8601 time"),
        (["--symbols", "NOPE"], "--symbols: no instrument or alias NOPE"),
        (["--format", "csv"], "option time is required"),
    ]:
        with pytest.raises(CommandError, match=re.escape(message)):
            call_command("replay_feed", str(AGGTRADES), *args, stdout=StringIO())
    with pytest.raises(CommandError, match="no such file"):
        call_command("replay_feed", str(tmp_path / "missing.csv"), stdout=StringIO())
    with pytest.raises(CommandError, match="has no receive clock"):
        call_command("replay_feed", str(AGGTRADES), "--clock", "receive", stdout=StringIO())
    (tmp_path / "mystery.txt").write_text("hello\n")
    with pytest.raises(CommandError, match="cannot tell the format"):
        call_command("replay_feed", str(tmp_path / "mystery.txt"), stdout=StringIO())


def test_the_summary_names_the_clock_and_how_far_receive_time_runs_behind(btc_alias: SymbolAlias, tmp_path: Path) -> None:
    frames = [
        f'{1714557600000 + 1270 + n} {{"stream":"btcusdt@trade","data":{{"e":"trade","E":{1714557600000 + n},"s":"BTCUSDT",'
        f'"t":{n},"p":"60000","q":"1","T":{1714557600000 + n},"m":false}}}}'
        for n in range(0, 300, 100)
    ]
    capture = tmp_path / "capture.jsonl"
    capture.write_text("\n".join(frames) + "\n")

    summary = replay_feed(str(capture), "--speed", "max")
    assert summary["clock"] == "exchange; receive − exchange: median +1.27 s, min +1.27 s, max +1.27 s (3 lines)"
    assert summary["span"] == "2024-05-01 10:00:00 to 2024-05-01 10:00:00"

    assert replay_feed(str(capture), "--speed", "max", "--clock", "receive")["clock"].startswith("receive; ")


def test_a_replay_reports_its_progress_and_windows_to_prometheus(btc_alias: SymbolAlias) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    read, windows = sample("livefolio_replay_read_events_total"), sample("livefolio_worker_windows_total", worker="replay_feed")
    running = sample("livefolio_replay_running")

    replay_feed(str(AGGTRADES), "--speed", "max")

    assert sample("livefolio_replay_read_events_total") == read + 5000
    last_second = datetime(2026, 1, 1, 0, 12, 19, tzinfo=UTC).timestamp()  # the file's last trade, as the summary says
    assert last_second <= sample("livefolio_replay_position_timestamp_seconds") < last_second + 1
    assert sample("livefolio_worker_windows_total", worker="replay_feed") > windows
    assert sample("livefolio_replay_running") == running  # running during the replay only
