"""Presets for broker and exchange exports: each turns a broker's own CSV into our CSV ledger rows (docs/csv-format.md,
"Broker exports"), which `portfolio.csvio.csv_import` then checks and imports unchanged.

    preset = detect(first_lines)                     # or PRESETS["degiro"], or GenericCsv(ColumnMapping.from_dict(saved))
    file = BrokerFile(lines=stream, preset=preset, context=context_for(portfolio=portfolio))
    result = broker_import(portfolio=portfolio, file=file, dry_run=True)   # LedgerProblems by the broker file's lines
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable

from marketdata.models import Instrument, SymbolAlias
from portfolio.models import Portfolio

from .base import Context, LedgerRow, RowError, RowPreset, Skip
from .binance import BinanceHistory, BinanceTrades
from .coinbase import CoinbaseHistory
from .convert import HEADER_SEARCH_LINES, BrokerFile, BrokerImport, UnknownFormat, broker_import
from .degiro import DegiroTransactions
from .generic import ColumnMapping, GenericCsv, MappingError
from .ibkr import IbkrFlexTrades
from .trading212 import Trading212

PRESETS: dict[str, RowPreset] = {
    p.name: p for p in (IbkrFlexTrades(), DegiroTransactions(), Trading212(), CoinbaseHistory(), BinanceHistory(), BinanceTrades())
}

__all__ = [
    "PRESETS",
    "BrokerFile",
    "BrokerImport",
    "ColumnMapping",
    "Context",
    "GenericCsv",
    "LedgerRow",
    "MappingError",
    "RowError",
    "RowPreset",
    "Skip",
    "UnknownFormat",
    "broker_import",
    "context_for",
    "detect",
    "detect_all",
]


def detect_all(lines: Iterable[str]) -> list[RowPreset]:
    """Every preset that recognises a header among the file's first lines (a sound file matches exactly one)."""
    found: list[RowPreset] = []
    try:
        records = list(itertools.islice(csv.reader(lines), HEADER_SEARCH_LINES))
    except (csv.Error, UnicodeDecodeError):
        return found
    for cells in records:
        names = [c.strip() for c in cells]
        if names:
            names[0] = names[0].removeprefix("\ufeff")
        found.extend(p for p in PRESETS.values() if p.detect(names) and p not in found)
    return found


def detect(lines: Iterable[str]) -> RowPreset:
    """The one preset for this file; UnknownFormat when none (or, which no sound file does, several) match."""
    found = detect_all(lines)
    if len(found) != 1:
        names = ", ".join(p.label for p in PRESETS.values())
        raise UnknownFormat(
            f"not a format Livefolio knows ({names}): map its columns yourself"
            if not found
            else f"the header fits several presets ({', '.join(p.label for p in found)}): choose one"
        )
    return found[0]


def context_for(*, portfolio: Portfolio, options: dict[str, object] | None = None) -> Context:
    """What the presets need to know, loaded once per import: the base currency, the instruments and their aliases."""
    aliases = {
        (source, alias): symbol for alias, source, symbol in SymbolAlias.objects.values_list("alias", "source", "instrument__symbol")
    }
    return Context(
        base_currency=portfolio.base_currency,
        instruments=frozenset(Instrument.objects.values_list("symbol", flat=True)),
        aliases=aliases,
        options=options or {},
    )
