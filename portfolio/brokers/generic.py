"""Any CSV, through a user's column mapping: {our column: their column} plus how they write times and numbers.

The mapping is a small JSON-able dict, so the wizard can remember it per user:

    {"version": 1,
     "columns": {"executed_at": "Date", "kind": "Type", "symbol": "Ticker", "quantity": "Shares", "price": "Price"},
     "date_format": "%d/%m/%Y %H:%M",   # strptime; "" = ISO 8601 with an offset or Z
     "timezone": "Europe/London",       # for times without an offset
     "decimal": ",", "thousands": ".",  # how numbers are written
     "kinds": {"Kauf": "buy", "Verkauf": "sell"},  # their values → our kinds (case-insensitive); others as written
     "delimiter": ";"}

`executed_at`, `kind` and `quantity` must be mapped; a quantity's sign is
dropped (the kind says the direction). Symbols resolve through the aliases
for source "csv".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from portfolio.models import Kind

from .base import Context, LedgerRow, Mapped, Row, RowError, RowPreset, local_time, note, number, utc_time

VERSION = 1
OUR_COLUMNS = ("executed_at", "kind", "symbol", "quantity", "price", "fee", "currency", "fx_rate", "note")
REQUIRED = ("executed_at", "kind", "quantity")
_KINDS = tuple(Kind.values)


class MappingError(ValueError):
    """A column mapping that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class ColumnMapping:
    columns: Mapping[str, str]
    date_format: str = ""
    timezone: str = "UTC"
    decimal: str = "."
    thousands: str = ""
    kinds: Mapping[str, str] = field(default_factory=dict)
    delimiter: str = ","

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "columns": dict(self.columns),
            "date_format": self.date_format,
            "timezone": self.timezone,
            "decimal": self.decimal,
            "thousands": self.thousands,
            "kinds": dict(self.kinds),
            "delimiter": self.delimiter,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnMapping:
        """Check a stored or submitted mapping; raises MappingError listing every problem."""
        problems = []
        if data.get("version", VERSION) != VERSION:
            problems.append(f"version {data.get('version')!r}: this Livefolio reads version {VERSION}")
        columns = data.get("columns")
        if not isinstance(columns, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items()):
            problems.append("columns must map our column names to the file's column names")
            columns = {}
        columns = {k: v.strip() for k, v in columns.items() if v.strip()}
        if unknown := sorted(set(columns) - set(OUR_COLUMNS)):
            problems.append(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; ours are {', '.join(OUR_COLUMNS)}")
        if missing := [c for c in REQUIRED if c not in columns]:
            problems.append(f"map {', '.join(missing)}: {'they are' if len(missing) > 1 else 'it is'} required")
        timezone = str(data.get("timezone") or "UTC")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"unknown time zone {timezone!r}")
        decimal, thousands = str(data.get("decimal") or "."), str(data.get("thousands") or "")
        if decimal not in (".", ","):
            problems.append("decimal must be '.' or ','")
        if thousands not in ("", ".", ",", " ", "'") or thousands == decimal:
            problems.append("thousands must be empty, '.', ',', ' ' or \"'\", and not the decimal point")
        kinds = data.get("kinds") or {}
        if not isinstance(kinds, Mapping):
            problems.append("kinds must map the file's values to our kinds")
            kinds = {}
        if bad := sorted(v for v in kinds.values() if v not in _KINDS):
            problems.append(f"kinds: {', '.join(map(repr, bad))} not one of {', '.join(_KINDS)}")
        delimiter = str(data.get("delimiter") or ",")
        if len(delimiter) != 1:
            problems.append("delimiter must be one character")
        date_format = str(data.get("date_format") or "")
        if date_format and "%" not in date_format:
            problems.append(f"date_format {date_format!r} has no % codes (e.g. %d/%m/%Y %H:%M)")
        if problems:
            raise MappingError("; ".join(problems))
        return cls(
            columns=columns,
            date_format=date_format,
            timezone=timezone,
            decimal=decimal,
            thousands=thousands,
            kinds={str(k).lower(): str(v) for k, v in kinds.items()},
            delimiter=delimiter,
        )


class GenericCsv(RowPreset):
    name = "generic"
    label = "Your column mapping"
    source = "csv"

    def __init__(self, mapping: ColumnMapping) -> None:
        self.mapping = mapping

    def detect(self, header: list[str]) -> bool:
        return set(self.mapping.columns.values()) <= set(header)

    def map_row(self, row: Row, ctx: Context) -> Mapped:
        m = self.mapping
        col = m.columns

        def cell(ours: str) -> str:
            return row.get(col[ours]) if ours in col else ""

        def amount(ours: str) -> Decimal | None:
            text = cell(ours)
            return number(text, col[ours], decimal=m.decimal, thousands=m.thousands) if text else None

        when = row.required(col["executed_at"])
        executed_at: datetime
        if m.date_format:
            executed_at = local_time(when, col["executed_at"], (m.date_format,), ZoneInfo(m.timezone))
        else:
            executed_at = utc_time(when, col["executed_at"])
        raw_kind = row.required(col["kind"])
        kind = m.kinds.get(raw_kind.lower(), raw_kind.lower())
        if kind not in _KINDS:
            raise RowError(col["kind"], f"{raw_kind!r} is not a kind: map it to one of {', '.join(_KINDS)}")
        quantity = number(row.required(col["quantity"]), col["quantity"], decimal=m.decimal, thousands=m.thousands)
        price, fee, fx = amount("price"), amount("fee"), amount("fx_rate")
        return [
            LedgerRow(
                kind=kind,
                executed_at=executed_at,
                quantity=abs(quantity),
                symbol=ctx.symbol(cell("symbol"), source=self.source) if cell("symbol") else "",
                price=abs(price) if price is not None else None,
                fee=abs(fee) if fee is not None else None,
                currency=cell("currency").upper(),
                fx_rate=fx,
                note=note(cell("note")),
            )
        ]
