"""Alerts evaluated from memory: an index per symbol with thresholds kept sorted, pure and synchronous.

The feed worker (`portfolio.alert_watch`) loads every active alert as a `Rule`,
builds an `AlertIndex`, and hands it each symbol's conflated price of each
window (`observe`). What a value costs: a dict lookup for the symbol, then per
series (the price; a move over W minutes) four `bisect`s over the sorted
thresholds — O(log n) — plus the work for the alerts that fire or re-arm.
No database, no allocation for a symbol without alerts.

Firing once, with hysteresis: an armed alert fires when the value reaches its
threshold (above: value >= threshold; below: value <= threshold) and is then
disarmed; it re-arms once the value is back past the threshold by its
hysteresis (above: value < threshold - hysteresis; below: value > threshold +
hysteresis). Each series keeps four sorted lists: armed "above" thresholds,
disarmed "above" re-arm levels, and the same for "below"; a value fires a
prefix or suffix of an armed list and re-arms a prefix or suffix of a disarmed
one, so nothing is compared that cannot change.

Portfolio alerts are "above" / "below" rules on a portfolio's series
(`portfolio_key`): its total value, or its day change in % (signed like a
move), which the worker feeds in once per window in which a price it holds
moved.

A move of W minutes is (price - base) / base × 100 in %, where base is the last
price of the minute W minutes before the current one (event time: a replay
gives the same moves). A positive threshold is an "above" rule on that series
(rises by X %), a negative one a "below" rule (falls by X %). Until a symbol has
a price W minutes old its move is not evaluated.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from marketdata.events import PriceUpdate

PRICE_ABOVE = "price_above"
PRICE_BELOW = "price_below"
MOVE_PCT = "move_pct"
# On a portfolio: its `portfolio_key` series, fed per window by `portfolio.alert_watch` (value, day change in %).
PORTFOLIO_VALUE_ABOVE = "portfolio_value_above"
PORTFOLIO_VALUE_BELOW = "portfolio_value_below"
DAY_CHANGE_PCT = "day_change_pct"
KINDS = (PRICE_ABOVE, PRICE_BELOW, MOVE_PCT, PORTFOLIO_VALUE_ABOVE, PORTFOLIO_VALUE_BELOW, DAY_CHANGE_PCT)
_ABOVE = frozenset({PRICE_ABOVE, PORTFOLIO_VALUE_ABOVE})
_SIGNED = frozenset({MOVE_PCT, DAY_CHANGE_PCT})  # a positive threshold is "above", a negative one "below"
HUNDRED = Decimal(100)
PCT_PLACES = Decimal("0.0001")
ONE_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Rule:
    """One active alert as the index holds it."""

    id: int
    symbol: str
    kind: str
    threshold: Decimal
    hysteresis: Decimal = Decimal(0)
    window_minutes: int = 0
    armed: bool = True

    @property
    def above(self) -> bool:
        return self.kind in _ABOVE or (self.kind in _SIGNED and self.threshold > 0)


def portfolio_key(portfolio_id: int, what: str) -> str:
    """The index's series of one portfolio's `value` or `day` (day change in %): like a symbol, never one."""
    return f"@portfolio:{int(portfolio_id)}:{what}"


def portfolio_series(kind: str) -> str:
    return "day" if kind == DAY_CHANGE_PCT else "value"


@dataclass(frozen=True, slots=True)
class Crossing:
    """What a value did to one alert: fired it (`fired`), or re-armed it."""

    alert_id: int
    fired: bool
    symbol: str
    value: Decimal  # the price, or the move in %
    price: Decimal
    ts: datetime


class Sorted:
    """Thresholds ascending with their alert ids beside them (parallel lists: `bisect` on plain Decimals)."""

    __slots__ = ("ids", "levels")

    def __init__(self) -> None:
        self.levels: list[Decimal] = []
        self.ids: list[int] = []

    def add(self, level: Decimal, alert_id: int) -> None:
        i = bisect_right(self.levels, level)
        self.levels.insert(i, level)
        self.ids.insert(i, alert_id)

    def take_to(self, i: int) -> list[int]:
        """Remove and return the ids of levels[:i]."""
        ids = self.ids[:i]
        del self.levels[:i], self.ids[:i]
        return ids

    def take_from(self, i: int) -> list[int]:
        """Remove and return the ids of levels[i:]."""
        ids = self.ids[i:]
        del self.levels[i:], self.ids[i:]
        return ids

    def __len__(self) -> int:
        return len(self.levels)


@dataclass(slots=True)
class Series:
    """The alerts on one value of one symbol (its price, or its move over one window), as four sorted lists."""

    above_armed: Sorted = field(default_factory=Sorted)  # threshold: fire when value >= it
    above_disarmed: Sorted = field(default_factory=Sorted)  # threshold - hysteresis: re-arm when value < it
    below_armed: Sorted = field(default_factory=Sorted)  # threshold: fire when value <= it
    below_disarmed: Sorted = field(default_factory=Sorted)  # threshold + hysteresis: re-arm when value > it

    def add(self, rule: Rule) -> None:
        if rule.above:
            if rule.armed:
                self.above_armed.add(rule.threshold, rule.id)
            else:
                self.above_disarmed.add(rule.threshold - rule.hysteresis, rule.id)
        elif rule.armed:
            self.below_armed.add(rule.threshold, rule.id)
        else:
            self.below_disarmed.add(rule.threshold + rule.hysteresis, rule.id)

    def evaluate(self, value: Decimal, rules: dict[int, Rule]) -> tuple[list[int], list[int]]:
        """(fired ids, re-armed ids) for one value; each moves to the other list of its side."""
        fired: list[int] = []
        rearmed: list[int] = []
        # Re-arm first: a value cannot both re-arm and fire one alert (it is either below or above its levels).
        lists = self.above_disarmed
        if lists.levels and lists.levels[-1] > value:
            for alert_id in lists.take_from(bisect_right(lists.levels, value)):
                rule = rules[alert_id]
                self.above_armed.add(rule.threshold, alert_id)
                rearmed.append(alert_id)
        lists = self.below_disarmed
        if lists.levels and lists.levels[0] < value:
            for alert_id in lists.take_to(bisect_left(lists.levels, value)):
                rule = rules[alert_id]
                self.below_armed.add(rule.threshold, alert_id)
                rearmed.append(alert_id)
        lists = self.above_armed
        if lists.levels and lists.levels[0] <= value:
            for alert_id in lists.take_to(bisect_right(lists.levels, value)):
                rule = rules[alert_id]
                self.above_disarmed.add(rule.threshold - rule.hysteresis, alert_id)
                fired.append(alert_id)
        lists = self.below_armed
        if lists.levels and lists.levels[-1] >= value:
            for alert_id in lists.take_from(bisect_left(lists.levels, value)):
                rule = rules[alert_id]
                self.below_disarmed.add(rule.threshold + rule.hysteresis, alert_id)
                fired.append(alert_id)
        return fired, rearmed


@dataclass(slots=True)
class MinuteCloses:
    """A symbol's last price per minute (event time), for moves over at most `keep` minutes.

    Per price only a comparison with the open minute's end (datetime arithmetic is kept to the first price of
    each minute); the move bases of the minute are worked out then, once, as a factor per window."""

    keep: int
    windows: tuple[int, ...] = ()
    minutes: list[datetime] = field(default_factory=list)
    prices: list[Decimal] = field(default_factory=list)
    end: datetime | None = None  # of the open minute (the last in `minutes`)
    bases: list[tuple[int, Decimal, Decimal] | None] = field(default_factory=list)  # per window: (window, base, 100 / base)

    def observe(self, ts: datetime, price: Decimal) -> None:
        end = self.end
        if end is not None and ts < end:
            if ts >= self.minutes[-1]:
                self.prices[-1] = price
            return  # (an older price than the open minute's: kept out of the closes)
        minute = ts.replace(second=0, microsecond=0)
        self.minutes.append(minute)
        self.prices.append(price)
        self.end = minute + ONE_MINUTE
        if len(self.minutes) > 2 * (self.keep + 1):  # trimmed in halves: amortised O(1)
            del self.minutes[: self.keep + 1], self.prices[: self.keep + 1]
        self.bases = []
        for window in self.windows:
            base = self.before(minute - timedelta(minutes=window))
            self.bases.append(None if not base else (window, base, HUNDRED / base))

    def before(self, minute: datetime) -> Decimal | None:
        """The last price of `minute` or the latest minute before it that has one."""
        i = bisect_right(self.minutes, minute)
        return self.prices[i - 1] if i else None


@dataclass(slots=True)
class SymbolAlerts:
    price: Series | None = None
    moves: dict[int, Series] = field(default_factory=dict)  # window minutes → its series
    closes: MinuteCloses | None = None


class AlertIndex:
    """Every active alert, by symbol; `observe` a symbol's price, get the crossings back."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: dict[int, Rule] = {}
        self.symbols: dict[str, SymbolAlerts] = {}
        for rule in rules:
            self.add(rule)

    def __len__(self) -> int:
        return len(self.rules)

    def add(self, rule: Rule) -> None:
        if rule.kind not in KINDS:
            raise ValueError(f"alert {rule.id}: unknown kind {rule.kind!r}")
        if rule.kind == MOVE_PCT and (rule.window_minutes < 1 or rule.threshold == 0):
            raise ValueError(f"alert {rule.id}: a move needs a window of at least a minute and a threshold other than 0")
        self.rules[rule.id] = rule
        entry = self.symbols.get(rule.symbol)
        if entry is None:
            entry = self.symbols[rule.symbol] = SymbolAlerts()
        if rule.kind == MOVE_PCT:
            series = entry.moves.get(rule.window_minutes)
            if series is None:
                series = entry.moves[rule.window_minutes] = Series()
            if entry.closes is None:
                entry.closes = MinuteCloses(0)
            entry.closes.keep = max(entry.moves)
            entry.closes.windows = tuple(sorted(entry.moves))
            entry.closes.end = None  # the bases of the new window are worked out with the next price
        else:
            if entry.price is None:
                entry.price = Series()
            series = entry.price
        series.add(rule)

    def observe(self, symbol: str, price: Decimal, ts: datetime) -> list[Crossing]:
        """One price of one symbol (aware UTC `ts`): the alerts it fired or re-armed."""
        entry = self.symbols.get(symbol)
        if entry is None:
            return []
        out: list[Crossing] = []
        rules = self.rules
        if entry.price is not None:
            fired, rearmed = entry.price.evaluate(price, rules)
            if fired or rearmed:
                out.extend(Crossing(i, True, symbol, price, price, ts) for i in fired)
                out.extend(Crossing(i, False, symbol, price, price, ts) for i in rearmed)
        closes = entry.closes
        if closes is not None:
            closes.observe(ts, price)
            moves = entry.moves
            for known in closes.bases:
                if known is None:
                    continue  # no price that old yet
                window, base, factor = known
                move = (price - base) * factor
                fired, rearmed = moves[window].evaluate(move, rules)
                if fired or rearmed:
                    move = move.quantize(PCT_PLACES)
                    out.extend(Crossing(i, True, symbol, move, price, ts) for i in fired)
                    out.extend(Crossing(i, False, symbol, move, price, ts) for i in rearmed)
        return out

    def observe_updates(self, updates: Iterable[PriceUpdate]) -> list[Crossing]:
        """A window's conflated prices (`marketdata.worker.hub.Hub.drain`)."""
        out: list[Crossing] = []
        symbols = self.symbols
        for update in updates:
            if update.symbol in symbols:
                out.extend(self.observe(update.symbol, update.price, update.ts))
        return out
