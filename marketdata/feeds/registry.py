"""Which modules make which feeds: recorded-file formats by `--format` name, and live feeds by `Feed.kind`.

Adding a source means adding its module to `marketdata/feeds/` and one line
here (docs/feeds.md has the whole checklist).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from marketdata.feeds.files import FeedError, FileSource, Format, Problems, clock_choose, first_line
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)


def formats() -> dict[str, type[Format]]:
    """Every recorded format by name, in the order auto-detection tries them."""
    from marketdata.feeds import binance_csv, binance_ws, coinbase, cryptofeed_raw, generic_csv, histdata, lean, lobster, native, tardis

    classes: list[type[Format]] = [
        native.NativeJsonl,
        binance_ws.BinanceCapture,
        cryptofeed_raw.CryptofeedCapture,  # before coinbase-ws: its envelopes hold Coinbase messages
        coinbase.CoinbaseCapture,
        tardis.TardisCsv,
        binance_csv.BinanceAggTrades,
        binance_csv.BinanceTrades,
        histdata.HistDataTicks,
        lean.LeanEquityTicks,
        lobster.LobsterMessages,
        generic_csv.GenericCsv,
    ]
    return {cls.name: cls for cls in classes}


def format_detect(path: Path) -> type[Format]:
    line = first_line(path)
    for cls in formats().values():
        try:
            if cls.sniff(path, line):
                return cls
        except Exception as exc:  # a sniffer's bug: that format does not claim the file
            log.warning("%s: detecting --format %s failed (%s: %s); trying the others", path, cls.name, type(exc).__name__, exc)
    raise FeedError(f"{path}: cannot tell the format from its first line {line[:80]!r}; pass --format ({', '.join(formats())})")


def file_sources(
    *, paths: Sequence[Path], format_name: str | None, symbols: SymbolMap, options: Mapping[str, str], problems: Problems
) -> list[FileSource]:
    """One source per file, each in its given or detected format. Raises FeedError for a file it cannot use."""
    known = formats()
    if format_name is not None and format_name not in known:
        raise FeedError(f"unknown format {format_name!r}; choose one of {', '.join(known)}")
    sources = []
    for path in paths:
        if not path.is_file():
            raise FeedError(f"{path}: no such file")
        cls = known[format_name] if format_name is not None else format_detect(path)
        clock_choose(cls, path, options)
        sources.append(FileSource(path=path, format=cls(path=path, symbols=symbols, options=options), problems=problems))
    return sources
