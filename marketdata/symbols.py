"""Symbols as sources spell them (BTCUSDT, BTC-USD, EURUSD) → Livefolio instrument symbols.

Pure: the worker and the replay commands build one `SymbolMap` from the
instruments and the aliases in the database (`selectors.symbol_map_load`) and
every parser resolves through it. A symbol with no instrument and no alias is
reported once and counted; with `create` it maps to itself and is queued for
`services.instruments_create`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)


class SymbolMap:
    def __init__(
        self,
        *,
        instruments: Iterable[str],
        aliases: Mapping[tuple[str, str], str] | None = None,
        create: bool = False,
        wanted: Iterable[str] | None = None,
    ) -> None:
        """`aliases`: (source, alias) → instrument symbol; source "" applies to every source.
        `wanted`: only these instrument symbols pass; others are dropped and counted in `filtered`."""
        self.instruments = set(instruments)
        self.aliases = dict(aliases or {})
        self.create = create
        self.wanted = None if wanted is None else set(wanted)
        self.unknown: Counter[str] = Counter()  # source symbol → events skipped
        self.filtered = 0
        self.new: dict[str, str] = {}  # symbol → source, created on first sight, not yet stored
        self._cache: dict[tuple[str, str], tuple[str | None, bool]] = {}

    def resolve(self, raw: str, *, source: str) -> str | None:
        """The instrument symbol for `raw` as `source` spells it, or None to skip the event."""
        try:
            symbol, unknown = self._cache[(source, raw)]
        except KeyError:
            symbol, unknown = self._cache[(source, raw)] = self._lookup(raw, source)
        if symbol is None:
            if unknown:
                self.unknown[raw] += 1
            else:
                self.filtered += 1
        return symbol

    def _lookup(self, raw: str, source: str) -> tuple[str | None, bool]:
        """(instrument symbol or None, whether None means unknown rather than filtered out)."""
        symbol = self.aliases.get((source, raw)) or self.aliases.get(("", raw)) or (raw if raw in self.instruments else None)
        if symbol is None and self.create:
            symbol = raw
            self.new[raw] = source
            self.instruments.add(raw)
            log.info("new symbol %s from %s: creating an instrument for it", raw, source)
        elif symbol is None:
            log.warning(
                "unknown symbol %s from %s: add an instrument or an alias in the admin, or pass --create-instruments; "
                "its events are skipped and counted",
                raw,
                source,
            )
            return None, True
        if self.wanted is not None and symbol not in self.wanted:
            return None, False
        return symbol, False

    def take_new(self) -> dict[str, str]:
        """Symbols created since the last call (symbol → source), for the caller to store."""
        new, self.new = self.new, {}
        return new

    def report(self) -> str:
        """`BTCUSDT ×4,980, ETHUSDT ×12` for the summary line; empty when nothing was unknown."""
        return ", ".join(f"{raw} ×{count:,}" for raw, count in self.unknown.most_common())
