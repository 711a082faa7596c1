"""SymbolMap: how a source's spelling of a symbol becomes an instrument symbol, or is skipped and counted."""

import logging

import pytest

from marketdata.symbols import SymbolMap

ALIASES = {
    ("binance", "BTCUSDT"): "BTC-USD",
    ("", "EURUSD"): "EUR/USD",
    ("", "ETHUSDT"): "ETH-USD",
    ("binance", "ETHUSDT"): "ETH-USD-BINANCE",
}


def symbol_map(*, create: bool = False, wanted: list[str] | None = None) -> SymbolMap:
    return SymbolMap(
        instruments=["BTC-USD", "ETH-USD", "ETH-USD-BINANCE", "EUR/USD", "AAPL"], aliases=ALIASES, create=create, wanted=wanted
    )


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "marketdata.symbols" and r.levelno == logging.WARNING]


def test_a_source_specific_alias_resolves_only_for_that_source() -> None:
    symbols = symbol_map()
    assert symbols.resolve("BTCUSDT", source="binance") == "BTC-USD"
    assert symbols.resolve("BTCUSDT", source="coinbase") is None


def test_an_alias_without_a_source_resolves_for_every_source() -> None:
    symbols = symbol_map()
    assert [symbols.resolve("EURUSD", source=s) for s in ("histdata", "csv", "binance")] == ["EUR/USD"] * 3


def test_a_source_specific_alias_wins_over_one_for_every_source() -> None:
    symbols = symbol_map()
    assert symbols.resolve("ETHUSDT", source="binance") == "ETH-USD-BINANCE"
    assert symbols.resolve("ETHUSDT", source="coinbase") == "ETH-USD"


def test_an_instrument_symbol_resolves_to_itself_from_any_source() -> None:
    symbols = symbol_map()
    assert symbols.resolve("AAPL", source="csv") == "AAPL"
    assert symbols.resolve("BTC-USD", source="coinbase") == "BTC-USD"
    assert symbols.unknown == {} and symbols.filtered == 0


def test_an_unknown_symbol_is_counted_per_event_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    symbols = symbol_map()
    with caplog.at_level(logging.INFO, logger="marketdata.symbols"):
        results = [symbols.resolve("DOGEUSDT", source="binance") for _ in range(5)]
        results.append(symbols.resolve("SHIBUSDT", source="binance"))

    assert results == [None] * 6
    assert symbols.unknown == {"DOGEUSDT": 5, "SHIBUSDT": 1}
    [doge, shib] = warnings(caplog)
    assert "unknown symbol DOGEUSDT from binance" in doge and "alias" in doge
    assert "SHIBUSDT" in shib
    assert symbols.take_new() == {}  # nothing is created without `create`


def test_the_report_lists_unknown_symbols_most_skipped_first() -> None:
    symbols = symbol_map()
    assert symbols.report() == ""
    for _ in range(4980):
        symbols.resolve("DOGEUSDT", source="binance")
    for _ in range(12):
        symbols.resolve("SHIBUSDT", source="binance")
    assert symbols.report() == "DOGEUSDT ×4,980, SHIBUSDT ×12"


def test_symbols_not_wanted_are_dropped_and_counted_as_filtered_not_unknown(caplog: pytest.LogCaptureFixture) -> None:
    symbols = symbol_map(wanted=["BTC-USD"])
    with caplog.at_level(logging.INFO, logger="marketdata.symbols"):
        assert symbols.resolve("BTCUSDT", source="binance") == "BTC-USD"
        assert symbols.resolve("BTC-USD", source="coinbase") == "BTC-USD"
        for _ in range(3):
            assert symbols.resolve("EURUSD", source="histdata") is None
        assert symbols.resolve("AAPL", source="csv") is None
        assert symbols.resolve("NOPE", source="csv") is None

    assert symbols.filtered == 4
    assert symbols.unknown == {"NOPE": 1}
    assert [w for w in warnings(caplog) if "EURUSD" in w or "AAPL" in w] == []


def test_in_create_mode_a_new_symbol_maps_to_itself_and_is_queued_once(caplog: pytest.LogCaptureFixture) -> None:
    symbols = symbol_map(create=True)
    with caplog.at_level(logging.INFO, logger="marketdata.symbols"):
        assert [symbols.resolve("DOGEUSDT", source="binance") for _ in range(3)] == ["DOGEUSDT"] * 3
        assert symbols.resolve("XAUUSD", source="histdata") == "XAUUSD"
        assert symbols.resolve("BTCUSDT", source="binance") == "BTC-USD"  # known aliases still apply

    assert symbols.unknown == {} and symbols.report() == ""
    assert "DOGEUSDT" in symbols.instruments
    assert warnings(caplog) == []
    assert len([r for r in caplog.records if "new symbol DOGEUSDT from binance" in r.getMessage()]) == 1

    assert symbols.take_new() == {"DOGEUSDT": "binance", "XAUUSD": "histdata"}
    assert symbols.take_new() == {}  # taken: cleared
    assert symbols.resolve("DOGEUSDT", source="binance") == "DOGEUSDT"
    assert symbols.take_new() == {}  # already created: not queued again
