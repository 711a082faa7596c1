"""Broker presets (portfolio/brokers/): each hand-built sample maps, imports (dry run) to the right holdings and cash,
is detected as its own preset and no other, and its bad row is reported at the broker file's line."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from marketdata.models import AssetClass, Instrument, SymbolAlias
from portfolio import csvio, services
from portfolio.brokers import (
    PRESETS,
    BrokerFile,
    ColumnMapping,
    GenericCsv,
    MappingError,
    RowPreset,
    UnknownFormat,
    broker_import,
    context_for,
    detect,
    detect_all,
)
from portfolio.brokers.convert import render
from portfolio.models import Portfolio
from portfolio.services import LedgerProblems

D = Decimal
SAMPLES = Path(__file__).parent / "samples"
pytestmark = pytest.mark.django_db

# sample → (preset, the bad row's line, what its problem says)
BAD_ROWS = {
    "ibkr_flex_trades.csv": ("ibkr", "line 9, Buy/Sell: 'SELL (CA.)' is a cancelled execution"),
    "degiro_transactions.csv": ("degiro", "line 5, Quantity: 'abc' is not a number"),
    "trading212.csv": ("trading212", "line 10, Action: 'Stock split open' is not an action this preset maps"),
    "coinbase.csv": ("coinbase", "line 13, Transaction Type: 'Lend Income' is not a type this preset maps"),
    "binance_history.csv": ("binance", "line 10, Operation: 'Futures Liquidation' is not an operation this preset maps"),
    "binance_trades.csv": ("binance_trades", "line 5, Side: 'HOLD' is neither BUY nor SELL"),
}


@pytest.fixture
def crypto(instruments: dict[str, Instrument]) -> dict[str, Instrument]:
    """ETH-USD besides the cast's instruments, and the aliases the presets look symbols up by."""
    eth = Instrument.objects.create(symbol="ETH-USD", name="Ether", asset_class=AssetClass.CRYPTO, quote_currency="USD")
    for alias, source, instrument in [
        ("BTCUSDT", "binance", instruments["BTC-USD"]),
        ("ETHUSDT", "binance", eth),
        ("US0378331005", "degiro", instruments["AAPL"]),
        ("DE0007164600", "", instruments["SAP"]),
    ]:
        SymbolAlias.objects.create(alias=alias, source=source, instrument=instrument)
    return {**instruments, "ETH-USD": eth}


def portfolio(owner: Any, base: str = "USD") -> Portfolio:
    return services.portfolio_create(owner_id=owner.pk, name=f"Imported {base}", base_currency=base)


def lines(name: str, *, blank: int | None = None) -> list[str]:
    """The sample's lines; `blank` empties one (keeping every other line's number), e.g. to drop the bad row."""
    out = (SAMPLES / name).read_text(encoding="utf-8").splitlines(keepends=True)
    if blank is not None:
        out[blank - 1] = "\n"
    return out


def run(p: Portfolio, name: str, preset: RowPreset | None = None, *, blank: int | None = None, dry_run: bool = True, **kw: Any) -> Any:
    preset = preset or PRESETS[BAD_ROWS[name][0]]
    file = BrokerFile(lines=lines(name, blank=blank), preset=preset, context=context_for(portfolio=p), **kw)
    return broker_import(portfolio=p, file=file, dry_run=dry_run)


def problems(p: Portfolio, name: str, preset: RowPreset | None = None, **kw: Any) -> list[str]:
    with pytest.raises(LedgerProblems) as exc:
        run(p, name, preset, **kw)
    return [csvio.describe(x) for x in exc.value.problems]


def bad_line(name: str) -> int:
    return int(BAD_ROWS[name][1].split(",")[0].removeprefix("line "))


def holdings(result: Any) -> dict[str, tuple[Decimal, Decimal]]:
    return {symbol: (quantity, average) for symbol, quantity, average in result.result.holdings()}


# --- Detection -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_ROWS))
def test_each_sample_is_detected_as_its_own_preset_and_no_other(name: str) -> None:
    assert [p.name for p in detect_all(lines(name))] == [BAD_ROWS[name][0]]
    assert detect(lines(name)).name == BAD_ROWS[name][0]


def test_degiro_is_detected_whatever_the_language_of_its_header() -> None:
    assert [p.name for p in detect_all(lines("degiro_transactions_de.csv"))] == ["degiro"]


def test_our_own_ledger_and_a_generic_file_are_no_preset() -> None:
    for text in (lines("generic_semicolon.csv"), [csvio.HEADER + "\n", "2025-01-02T09:00:00Z,deposit,,10,,,,,\n"]):
        assert detect_all(text) == []
        with pytest.raises(UnknownFormat, match="map its columns yourself"):
            detect(text)


# --- Each preset: the bad row by its line, then the rest imported -----------------


@pytest.mark.parametrize("name", sorted(BAD_ROWS))
def test_the_bad_row_is_the_only_problem_and_points_at_the_brokers_line(name: str, alice: Any, crypto: Any) -> None:
    base = "EUR" if name in ("degiro_transactions.csv", "trading212.csv", "binance_history.csv") else "USD"
    found = problems(portfolio(alice, base), name)
    assert len(found) == 1, found
    assert found[0].startswith(BAD_ROWS[name][1])


def test_ibkr_trades_give_holdings_and_cash(alice: Any, crypto: Any) -> None:
    result = run(portfolio(alice), "ibkr_flex_trades.csv", blank=9)
    assert holdings(result) == {"AAPL": (D(6), D(150)), "MSFT": (D(5), D(400)), "SAP": (D(4), D(200))}
    # 10×150+1, 5×400+1 out, 4×170−1 in; SAP in EUR at 1.1 with its 2 EUR commission
    assert result.result.cash() == [("EUR", D(-802)), ("USD", D(-2823))]
    assert result.result.kinds == {"buy": 3, "sell": 1}
    assert [(s.line, s.reason.split(":")[0].split(" (")[0]) for s in result.file.skipped] == [
        (7, "currency conversion"),
        (8, "AssetClass OPT"),
    ]


def test_ibkr_times_are_read_in_new_york_time(alice: Any, crypto: Any) -> None:
    file = BrokerFile(lines=lines("ibkr_flex_trades.csv"), preset=PRESETS["ibkr"], context=context_for(portfolio=portfolio(alice)))
    first = list(file.ledger_lines())[1]
    assert first.startswith("2025-01-15T14:30:15Z,buy,AAPL,10,150,1,USD,,IBKR trade 1001")


def test_degiro_trades_in_a_euro_account(alice: Any, crypto: Any) -> None:
    p = portfolio(alice, "EUR")
    file = BrokerFile(lines=lines("degiro_transactions.csv", blank=5), preset=PRESETS["degiro"], context=context_for(portfolio=p))
    ledger = list(file.ledger_lines())
    # 15:41 in Amsterdam (CET) is 14:41 UTC; 1.00 EUR of costs at 1.1 USD/EUR is 1.1 USD; fx = 1 / 1.1
    assert ledger[1] == "2025-01-15T14:41:00Z,buy,AAPL,10,150,1.1,USD,0.9090909091,DEGIRO APPLE INC. - COMMON ST order 4f1c2a9e-0001\n"
    assert ledger[3].startswith("2025-01-20T15:30:00Z,sell,AAPL,4,170,1.1,USD,0.9090909091,")  # decimal commas read
    result = run(p, "degiro_transactions.csv", blank=5)
    assert holdings(result) == {"AAPL": (D(6), D(150)), "SAP": (D(5), D(200))}
    assert result.result.cash() == [("EUR", D(-1002)), ("USD", D("-822.2"))]


def test_trading212_history_in_a_euro_account(alice: Any, crypto: Any) -> None:
    result = run(portfolio(alice, "EUR"), "trading212.csv", blank=10)
    assert holdings(result) == {"AAPL": (D(6), D(150)), "SAP": (D(5), D(200))}
    # EUR: 5000 in, 1000 for SAP, 2.50 interest, 100 out. USD: 1500 + 1.36×1.1 out, 680 − 0.64×1.1 in, 6×0.25 − 0.22 dividend.
    assert result.result.cash() == [("EUR", D("3902.5")), ("USD", D("-820.92"))]
    assert result.result.kinds == {"deposit": 1, "buy": 2, "sell": 1, "dividend": 1, "interest": 1, "withdrawal": 1}
    assert [(s.line, s.reason.split(":")[0]) for s in result.file.skipped] == [(8, "currency conversion inside the account")]


def test_coinbase_history_with_its_preamble(alice: Any, crypto: Any) -> None:
    result = run(portfolio(alice), "coinbase.csv", blank=13)
    assert result.file.header_line == 4
    # BTC: 0.01 bought, 0.002 converted, 0.003 sold. ETH: 0.04 from the convert, 0.001 reward, 0.011 sent.
    assert {s: q for s, (q, _) in holdings(result).items()} == {"BTC-USD": D("0.005"), "ETH-USD": D("0.03")}
    # 1000 in, 405 for BTC, converts and rewards move no cash, 124 from the sell, 100 out
    assert result.result.cash() == [("USD", D(619))]
    assert result.result.kinds == {"deposit": 1, "buy": 3, "sell": 2, "dividend": 1, "withdrawal": 1, "transfer_out": 1}
    assert [s.line for s in result.file.skipped] == [11]


def test_binance_transaction_history_keeps_fiat_and_skips_trade_legs(alice: Any, crypto: Any) -> None:
    result = run(portfolio(alice, "EUR"), "binance_history.csv", blank=10)
    assert holdings(result) == {}
    assert result.result.cash() == [("EUR", D("800.12"))]
    reasons = {s.line: s.reason for s in result.file.skipped}
    assert sorted(reasons) == [3, 4, 5, 6, 7]
    assert reasons[3].startswith("a leg of a trade") and reasons[6] == "a move between your own Binance wallets"
    assert reasons[7].startswith("ETH moved in")


def test_binance_spot_trades_with_fees_in_either_asset(alice: Any, crypto: Any) -> None:
    result = run(portfolio(alice), "binance_trades.csv", blank=5)
    # the 0.00001 BTC fee comes out of the BTC bought (and costs 0.4 USD); then 0.004 sold
    assert holdings(result) == {"BTC-USD": (D("0.00599"), D(40000)), "ETH-USD": (D(1), D(2000))}
    assert result.result.cash() == [("USD", D("-2234.168"))]


def test_binance_fee_in_bnb_is_a_transfer_out_of_bnb(alice: Any, crypto: Any) -> None:
    text = ["Date(UTC),Pair,Side,Price,Executed,Amount,Fee\n", "2025-01-03 10:00:00,BTCUSDT,BUY,40000,0.01BTC,400USDT,0.001BNB\n"]
    file = BrokerFile(lines=text, preset=PRESETS["binance_trades"], context=context_for(portfolio=portfolio(alice)))
    assert list(file.ledger_lines())[1:] == [
        "2025-01-03T10:00:00Z,buy,BTC-USD,0.01,40000,,,,Binance BUY BTCUSDT at 40000 USDT\n",
        "2025-01-03T10:00:00Z,transfer_out,BNBUSDT,0.001,,,,,Binance BUY BTCUSDT at 40000 USDT fee\n",
    ]


# --- Problems from the importer, at the broker's line -------------------------------


def test_an_importer_problem_points_at_the_brokers_line_not_ours(alice: Any, crypto: Any) -> None:
    # Coinbase: the header is line 4 and the Convert gives two ledger rows, so ledger lines and file lines differ.
    text = lines("coinbase.csv", blank=13)
    text[8] = text[8].replace("Sell,BTC,0.003", "Sell,BTC,0.3")  # line 9: sells more BTC than held
    p = portfolio(alice)
    file = BrokerFile(lines=text, preset=PRESETS["coinbase"], context=context_for(portfolio=p))
    with pytest.raises(LedgerProblems) as exc:
        broker_import(portfolio=p, file=file)
    [message] = [csvio.describe(p) for p in exc.value.problems]
    assert message.startswith("line 9, quantity: Cannot sell 0.3 BTC-USD")


def test_format_and_preset_problems_are_listed_together_in_line_order(alice: Any, crypto: Any) -> None:
    text = lines("trading212.csv")
    text[2] = text[2].replace("AAPL", "NOPE")  # line 3: an unknown instrument, found by the importer
    p = portfolio(alice, "EUR")
    file = BrokerFile(lines=text, preset=PRESETS["trading212"], context=context_for(portfolio=p))
    with pytest.raises(LedgerProblems) as exc:
        broker_import(portfolio=p, file=file)
    listed = [csvio.describe(p) for p in exc.value.problems]
    assert listed == [
        "line 3, symbol: unknown instrument 'NOPE'",
        # The ledger is checked in the same pass without the rows that have problems; the message says so.
        "line 5, quantity: Cannot sell 4 AAPL on 2025-01-20 15:00 UTC: only 0 held at that time, "
        "checked without the rows that have problems (fixing them may change this).",
        BAD_ROWS["trading212.csv"][1] + " (buys, sells, deposits, withdrawals, dividends, interest)",
    ]
    assert exc.value.total == 3


def test_a_file_without_the_presets_header_says_so(alice: Any, crypto: Any) -> None:
    assert problems(portfolio(alice), "coinbase.csv", PRESETS["ibkr"]) == [
        "line 1: no Interactive Brokers Flex Query (trades) header in the first 10 lines"
    ]


def test_nothing_is_written_by_a_dry_run_and_everything_by_a_real_import(alice: Any, crypto: Any) -> None:
    p = portfolio(alice)
    run(p, "binance_trades.csv", blank=5)
    assert p.transactions.count() == 0
    run(p, "binance_trades.csv", blank=5, dry_run=False)
    assert p.transactions.count() == 3
    assert set(p.transactions.values_list("note", flat=True)) >= {"Binance BUY BTCUSDT at 40000.00 USDT"}


# --- The generic column mapping ----------------------------------------------------

MAPPING = {
    "version": 1,
    "columns": {
        "executed_at": "Datum",
        "kind": "Typ",
        "symbol": "Wertpapier",
        "quantity": "Stück",
        "price": "Kurs",
        "fee": "Gebühr",
        "currency": "Währung",
    },
    "date_format": "%d/%m/%Y %H:%M",
    "timezone": "Europe/Berlin",
    "decimal": ",",
    "kinds": {"Einzahlung": "deposit", "Kauf": "buy", "Verkauf": "sell"},
    "delimiter": ";",
}


def test_generic_mapping_round_trips_as_a_plain_dict() -> None:
    mapping = ColumnMapping.from_dict(MAPPING)
    assert ColumnMapping.from_dict(mapping.to_dict()) == mapping
    assert mapping.to_dict()["kinds"] == {"einzahlung": "deposit", "kauf": "buy", "verkauf": "sell"}


def test_generic_mapping_lists_every_problem_at_once() -> None:
    bad = {
        "columns": {"executed_at": "Datum", "colour": "Farbe"},
        "timezone": "Mars/Olympus",
        "decimal": ";",
        "kinds": {"Kauf": "purchase"},
    }
    with pytest.raises(MappingError) as exc:
        ColumnMapping.from_dict(bad)
    message = str(exc.value)
    for part in (
        "unknown column colour",
        "map kind, quantity",
        "unknown time zone 'Mars/Olympus'",
        "decimal must be",
        "'purchase' not one of",
    ):
        assert part in message


def test_generic_mapping_imports_a_semicolon_file_with_decimal_commas(alice: Any, crypto: Any) -> None:
    mapping = ColumnMapping.from_dict(MAPPING)
    p = portfolio(alice)
    preset = GenericCsv(mapping)
    assert problems(p, "generic_semicolon.csv", preset, delimiter=";") == [
        "line 5, Typ: 'Tausch' is not a kind: map it to one of buy, sell, dividend, interest, fee, deposit, withdrawal, split, transfer_in, transfer_out"
    ]
    result = run(p, "generic_semicolon.csv", preset, blank=5, delimiter=";")
    assert holdings(result) == {"AAPL": (D(3), D("150.5"))}
    assert result.result.cash() == [("USD", D("565.5"))]
    file = BrokerFile(lines=lines("generic_semicolon.csv"), preset=preset, context=context_for(portfolio=p), delimiter=";")
    assert list(file.ledger_lines())[2].startswith("2025-01-03T14:30:00Z,buy,AAPL,5,150.5,1,USD")  # 15:30 in Berlin


def test_rendered_text_cells_survive_csvio_unchanged() -> None:
    from portfolio.brokers.base import LedgerRow

    row = LedgerRow(kind="deposit", executed_at=datetime(2025, 1, 2, tzinfo=UTC), quantity=D(1), note="=HYPERLINK(1)")
    assert render(row) == "2025-01-02T00:00:00Z,deposit,,1,,,,,'=HYPERLINK(1)\n"


def test_a_row_the_preset_cannot_map_is_left_out_of_the_ledger_check_and_the_check_says_so(alice: Any, crypto: Any) -> None:
    # Without line 2's buy, line 5's sell of 4 AAPL reads as an oversell: listed in the same pass, at the broker's line,
    # with the caveat that it was checked without the rows that have problems.
    text = lines("ibkr_flex_trades.csv", blank=9)
    text[1] = text[1].replace('"BUY","10"', '"BUY","ten"')
    p = portfolio(alice)
    file = BrokerFile(lines=text, preset=PRESETS["ibkr"], context=context_for(portfolio=p))
    with pytest.raises(LedgerProblems) as exc:
        broker_import(portfolio=p, file=file)
    assert [csvio.describe(x) for x in exc.value.problems] == [
        "line 2, Quantity: 'ten' is not a number",
        "line 5, quantity: Cannot sell 4 AAPL on 2025-01-20 20:30 UTC: only 0 held at that time, "
        "checked without the rows that have problems (fixing them may change this).",
    ]
    assert exc.value.total == 2


def test_a_malformed_file_imports_nothing_even_for_real(alice: Any, crypto: Any) -> None:
    text = lines("trading212.csv", blank=10)
    text[3] = text[3].replace('"SAP"', '"SAP" x')  # line 4: text after a closing quote, which strict CSV refuses
    p = portfolio(alice, "EUR")
    file = BrokerFile(lines=text, preset=PRESETS["trading212"], context=context_for(portfolio=p))
    with pytest.raises(LedgerProblems) as exc:
        broker_import(portfolio=p, file=file, dry_run=False)
    [message] = [csvio.describe(x) for x in exc.value.problems]
    assert message.startswith("line 4: not valid CSV")
    assert p.transactions.count() == 0
