"""What every broker preset is made of, and the helpers they share.

A preset turns one row of a broker's own export into ledger rows (`LedgerRow`,
the columns of docs/csv-format.md), or says why the row is skipped on purpose
(`Skip`), or raises `RowError` naming the broker's column and what is wrong.
Presets are pure: symbols are resolved through the `Context` they are given,
built once per import from the instruments and their aliases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The ledger keeps 10 decimal places (csvio rejects more): computed values (1 / rate, subtotal / quantity) are rounded to them.
PLACES = Decimal(1).scaleb(-10)
NOTE_LENGTH = 200


@dataclass(frozen=True)
class LedgerRow:
    """One row of our CSV ledger; None and "" leave the cell empty, so csvio's default applies."""

    kind: str
    executed_at: datetime
    quantity: Decimal
    symbol: str = ""
    price: Decimal | None = None
    fee: Decimal | None = None
    currency: str = ""
    fx_rate: Decimal | None = None
    note: str = ""


@dataclass(frozen=True)
class Skip:
    """A row left out on purpose; `reason` is shown with its line in the preview."""

    reason: str


class RowError(ValueError):
    """A row the preset cannot map: `column` is the broker's column name ("" for the row as a whole)."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column, self.message = column, message


Mapped = list[LedgerRow] | Skip


@dataclass
class Context:
    """What a preset may know beyond the row: the portfolio's base currency, the instruments and their aliases, options."""

    base_currency: str
    instruments: frozenset[str] = frozenset()
    aliases: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (source or "", alias) -> symbol
    options: Mapping[str, object] = field(default_factory=dict)

    def symbol(self, *candidates: str, source: str) -> str:
        """The first candidate that is an instrument or an alias (for `source`, then for any source); otherwise the first
        non-empty candidate as written, so the import reports it as an unknown instrument."""
        wanted = [c.strip() for c in candidates if c and c.strip()]
        for raw in wanted:
            found = self.aliases.get((source, raw)) or self.aliases.get(("", raw)) or (raw if raw in self.instruments else None)
            if found:
                return found
        return wanted[0] if wanted else ""

    def timezone(self, default: str) -> ZoneInfo:
        name = str(self.options.get("timezone") or default)
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise RowError("", f"unknown time zone {name!r}") from None

    def fx_for(self, currency: str, rate: Decimal | None) -> Decimal | None:
        """`rate` (base units per unit of `currency`) when the row is in a foreign currency; None in the base currency."""
        return None if not currency or currency == self.base_currency else rate


class RowPreset:
    """A preset whose rows map one at a time. Subclasses set the names and implement `detect` and `map_row`."""

    name = ""  # the key: "ibkr", "degiro", ...
    label = ""  # "Interactive Brokers Flex Query (trades)"
    source = ""  # the SymbolAlias source its symbols are looked up under
    docs: tuple[str, ...] = ()  # the public pages the mapping was built from

    def detect(self, header: list[str]) -> bool:
        raise NotImplementedError

    def map_row(self, row: Row, ctx: Context) -> Mapped:
        raise NotImplementedError


class Row:
    """One data row of the broker's file, by the broker's column names (and by position, for unnamed columns)."""

    def __init__(self, header: list[str], cells: list[str]) -> None:
        self.header, self.cells = header, [c.strip() for c in cells]
        self.by_name: dict[str, str] = {}
        for name, value in zip(header, self.cells, strict=False):
            if name and name not in self.by_name:
                self.by_name[name] = value

    def get(self, column: str, default: str = "") -> str:
        return self.by_name.get(column, default)

    def at(self, index: int) -> str:
        return self.cells[index] if index < len(self.cells) else ""

    def has(self, column: str) -> bool:
        return column in self.by_name

    def required(self, column: str) -> str:
        value = self.get(column)
        if not value:
            raise RowError(column, "required")
        return value


# --- Numbers -------------------------------------------------------------------

_PLAIN = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def number(text: str, column: str, *, decimal: str = ".", thousands: str = "") -> Decimal:
    """A decimal written with `decimal` as the point and, optionally, `thousands` between groups; RowError otherwise."""
    cleaned = text.strip().replace("\u00a0", "").replace(" ", "")
    if thousands:
        cleaned = cleaned.replace(thousands, "")
    if decimal != ".":
        if "." in cleaned:
            raise RowError(column, f"{text!r} is not a number with {decimal!r} as the decimal point")
        cleaned = cleaned.replace(decimal, ".")
    if not _PLAIN.fullmatch(cleaned):
        raise RowError(column, f"{text!r} is not a number")
    try:
        return Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern admits only what Decimal reads
        raise RowError(column, f"{text!r} is not a number") from None


def auto_number(text: str, column: str) -> Decimal:
    """A decimal with either '.' or ',' as the point (DEGIRO writes what the account's language uses): the last of the
    two is the point, the other a thousands separator."""
    t = text.strip()
    if "," in t and ("." not in t or t.rindex(",") > t.rindex(".")):
        return number(t, column, decimal=",", thousands=".")
    return number(t, column, thousands=",")


def optional(text: str, column: str, parse: Callable[[str, str], Decimal] = number) -> Decimal | None:
    return parse(text, column) if text.strip() else None


def rounded(value: Decimal) -> Decimal:
    return value.quantize(PLACES, rounding=ROUND_HALF_EVEN)


def inverse(rate: Decimal | None) -> Decimal | None:
    """1 / rate, to the ledger's precision (a "USD per EUR" rate → "EUR per USD")."""
    return None if rate is None or rate == 0 else rounded(1 / rate)


# --- Times ---------------------------------------------------------------------


def local_time(text: str, column: str, formats: Iterable[str], zone: ZoneInfo) -> datetime:
    """A naive time in one of `formats`, read in `zone`, as UTC. A date alone is taken at noon, so its day survives any
    offset."""
    for fmt in formats:
        try:
            value = datetime.strptime(text.strip(), fmt)  # noqa: DTZ007 - the zone is attached on the next line
        except ValueError:
            continue
        if "%H" not in fmt:
            value = datetime.combine(value.date(), time(12))
        return value.replace(tzinfo=zone).astimezone(UTC)
    raise RowError(column, f"{text!r} is not a time in the form {' or '.join(_shown_format(f) for f in formats)}")


def utc_time(text: str, column: str, formats: Iterable[str] = ()) -> datetime:
    """An ISO 8601 time with an offset or Z, or a naive time in one of `formats` that the export documents as UTC."""
    t = text.strip()
    if t.endswith(" UTC"):
        t = t[:-4]
    try:
        value = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        return local_time(t, column, formats or ("%Y-%m-%d %H:%M:%S",), ZoneInfo("UTC"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _shown_format(fmt: str) -> str:
    for code, shown in (
        ("%Y", "YYYY"),
        ("%y", "YY"),
        ("%m", "MM"),
        ("%d", "DD"),
        ("%H", "HH"),
        ("%M", "MM"),
        ("%S", "SS"),
        ("%f", "ffffff"),
    ):
        fmt = fmt.replace(code, shown)
    return fmt


def note(*parts: str) -> str:
    text = " ".join(p.replace("\r", " ").replace("\n", " ").strip() for p in parts if p and p.strip())
    return text if len(text) <= NOTE_LENGTH else text[: NOTE_LENGTH - 3] + "..."
