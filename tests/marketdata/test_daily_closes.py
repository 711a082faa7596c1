"""Daily closes: vendor CSVs (`import_prices`), closes made from candles, and the worker's closed-day watch."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from marketdata import services
from marketdata.closes_csv import FormatError, parse
from marketdata.models import Candle, DailyClose, Instrument, SymbolAlias
from marketdata.worker.days import DayWatch

D = Decimal

# As Yahoo Finance's "Download" on a history page writes it (a holiday row carries "null").
YAHOO = """Date,Open,High,Low,Close,Adj Close,Volume
2024-01-02,187.149994,188.440002,183.889999,185.639999,184.938217,82488700
2024-01-03,184.220001,185.880005,183.429993,184.250000,183.553467,58414500
2024-01-04,null,null,null,null,null,null
2024-01-05,181.990005,182.759995,180.169998,181.179993,180.495071,62303300
"""
# Stooq's daily download (https://stooq.com/q/d/l/?s=aapl.us&i=d).
STOOQ = """Date,Open,High,Low,Close,Volume
2024-01-02,185.61,186.46,181.88,183.9,82488700
2024-01-03,182.16,183.65,181.32,182.53,58414500
"""
GENERIC = """date,symbol,close
2024-01-02,AAPL,185.64
2024-01-02,EURUSD,1.0942
2024-01-03,NOPE,12
2024-01-03,AAPL,-1
2024-01-03,AAPL,184.25
2024-01-03,AAPL,184.26
2024-13-01,AAPL,180
"""


def closes(symbol: str) -> list[tuple[date, Decimal, str]]:
    rows = DailyClose.objects.filter(instrument__symbol=symbol).order_by("date").values_list("date", "close", "source")
    return [(day, close.normalize(), source) for day, close, source in rows]


def run(tmp_path: Path, text: str, *args: str) -> tuple[str, str]:
    path = tmp_path / "prices.csv"
    path.write_text(text)
    out, err = StringIO(), StringIO()
    call_command("import_prices", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- parsing


def test_a_yahoo_download_gives_its_closes_and_reports_the_null_row() -> None:
    parsed = parse(YAHOO.splitlines(), symbol="AAPL")
    assert parsed.format == "yahoo"
    assert [(c.line, c.date, c.close) for c in parsed.closes] == [
        (2, date(2024, 1, 2), D("185.639999")),
        (3, date(2024, 1, 3), D("184.250000")),
        (5, date(2024, 1, 5), D("181.179993")),
    ]
    assert [(b.line, b.reason) for b in parsed.bad] == [(4, "Close 'null' is not a number")]


def test_yahoo_adjusted_takes_the_adj_close_column() -> None:
    parsed = parse(YAHOO.splitlines(), symbol="AAPL", adjusted=True)
    assert parsed.closes[0].close == D("184.938217")


def test_a_one_symbol_file_needs_its_symbol() -> None:
    with pytest.raises(FormatError, match="--symbol"):
        parse(STOOQ.splitlines())


def test_an_unknown_header_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="Unknown header"):
        parse(["when,what,price", "2024-01-02,AAPL,1"])


# ---------------------------------------------------------------- import_prices


@pytest.fixture
def aapl(db: None) -> Instrument:
    return Instrument.objects.create(symbol="AAPL", name="Apple", asset_class="equity", quote_currency="USD")


@pytest.fixture
def eurusd(db: None) -> Instrument:
    return Instrument.objects.create(symbol="EUR/USD", name="Euro", asset_class="fx", quote_currency="USD")


def test_import_prices_reads_a_yahoo_file_and_lists_the_bad_row(tmp_path: Path, aapl: Instrument) -> None:
    out, err = run(tmp_path, YAHOO, "--symbol", "AAPL")
    assert closes("AAPL") == [
        (date(2024, 1, 2), D("185.639999"), "yahoo"),
        (date(2024, 1, 3), D("184.25"), "yahoo"),
        (date(2024, 1, 5), D("181.179993"), "yahoo"),
    ]
    assert err == "line 4: Close 'null' is not a number\n"
    assert "yahoo file: wrote 3 closes (3 new, 0 updated); 1 bad row skipped" in out


def test_importing_again_updates_and_adds_nothing(tmp_path: Path, aapl: Instrument) -> None:
    run(tmp_path, YAHOO, "--symbol", "AAPL")
    out, _ = run(tmp_path, STOOQ, "--symbol", "AAPL")  # another vendor's closes of two of the same days
    assert "stooq file: wrote 2 closes (0 new, 2 updated)" in out
    assert closes("AAPL")[:2] == [(date(2024, 1, 2), D("183.9"), "stooq"), (date(2024, 1, 3), D("182.53"), "stooq")]
    assert DailyClose.objects.count() == 3


def test_a_generic_file_lists_every_bad_row_by_line_and_keeps_the_good_ones(tmp_path: Path, aapl: Instrument, eurusd: Instrument) -> None:
    SymbolAlias.objects.create(alias="EURUSD", source="", instrument=eurusd)
    out, err = run(tmp_path, GENERIC)
    assert err.splitlines() == [
        "line 4: no instrument 'NOPE' (add it, or an alias, in the admin)",
        "line 5: Close '-1' must be a positive number",
        "line 7: AAPL on 2024-01-03 is already on line 6",
        "line 8: date '2024-13-01' is not YYYY-MM-DD",
    ]
    assert closes("AAPL") == [(date(2024, 1, 2), D("185.64"), "csv"), (date(2024, 1, 3), D("184.25"), "csv")]
    assert closes("EUR/USD") == [(date(2024, 1, 2), D("1.0942"), "csv")]
    assert "csv file: wrote 3 closes (3 new, 0 updated); 4 bad rows skipped" in out


def test_a_dry_run_counts_but_writes_nothing(tmp_path: Path, aapl: Instrument) -> None:
    run(tmp_path, STOOQ, "--symbol", "AAPL")
    out, _ = run(tmp_path, YAHOO, "--symbol", "AAPL", "--dry-run")
    assert "yahoo file: would write 3 closes (1 new, 2 updated)" in out
    assert [close for _, close, _ in closes("AAPL")] == [D("183.9"), D("182.53")]


def test_an_unreadable_file_is_a_command_error(tmp_path: Path, aapl: Instrument) -> None:
    with pytest.raises(CommandError, match="--symbol"):
        run(tmp_path, YAHOO)
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_prices", str(tmp_path / "missing.csv"))


# ---------------------------------------------------------------- from candles


def candle(instrument: Instrument, start: datetime, close: str) -> None:
    price = D(close)
    Candle.objects.create(instrument=instrument, start=start, open=price, high=price, low=price, close=price)


def test_the_close_of_a_utc_day_is_its_last_candles_close(aapl: Instrument, eurusd: Instrument) -> None:
    day = date(2026, 1, 5)
    midnight = datetime(2026, 1, 5, tzinfo=UTC)
    candle(aapl, midnight - timedelta(minutes=1), "99")  # the day before
    candle(aapl, midnight + timedelta(hours=20), "101")
    candle(aapl, midnight + timedelta(hours=20, minutes=59), "102")  # the last of the day
    candle(aapl, midnight + timedelta(days=1), "103")  # the next day
    candle(eurusd, midnight + timedelta(hours=23, minutes=59), "1.1")
    assert services.daily_closes_from_candles(day=day) == 2
    assert closes("AAPL") == [(day, D(102), "candles")]
    assert closes("EUR/USD") == [(day, D("1.1"), "candles")]


def test_closes_from_candles_leave_an_imported_close_alone(tmp_path: Path, aapl: Instrument) -> None:
    run(tmp_path, STOOQ, "--symbol", "AAPL")
    candle(aapl, datetime(2024, 1, 2, 20, tzinfo=UTC), "1")
    candle(aapl, datetime(2024, 1, 4, 20, tzinfo=UTC), "2")
    out = StringIO()
    call_command("import_prices", "--from-candles", stdout=out)
    assert closes("AAPL") == [
        (date(2024, 1, 2), D("183.9"), "stooq"),  # the vendor's close stays
        (date(2024, 1, 3), D("182.53"), "stooq"),
        (date(2024, 1, 4), D(2), "candles"),
    ]
    assert "1 closes from candles over 3 days" in out.getvalue()


def test_the_day_watch_closes_each_day_once_and_the_day_before_its_first_batch() -> None:
    watch = DayWatch()
    at = datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert watch.closed([at]) == [date(2026, 1, 4)]  # first batch: the day before may not have been closed
    assert watch.closed([at + timedelta(hours=1)]) == []
    assert watch.closed([at + timedelta(hours=11, minutes=59), at + timedelta(days=2)]) == [date(2026, 1, 5), date(2026, 1, 6)]
    assert watch.closed([at + timedelta(days=2, hours=1)]) == []


def test_the_minute_hooks_include_the_daily_closes(settings: Any) -> None:
    assert "marketdata.worker.days.daily_closes_record" in settings.MARKETDATA_MINUTE_HOOKS
