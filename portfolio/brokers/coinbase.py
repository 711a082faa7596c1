"""Coinbase: the transaction history report (Statements → Transaction history → CSV).

Public sources: headers of the report as users and tools describe it
("Timestamp,Transaction Type,Asset,Quantity Transacted,Spot Price Currency,
Spot Price at Transaction,Subtotal,Total (inclusive of fees and/or spread),
Fees and/or Spread,Notes", after a few lines naming the user; older reports
prefix the currency instead: "EUR Spot Price at Transaction,EUR Subtotal,...";
the newest add an ID column and say "Price Currency"/"Price at Transaction"),
https://github.com/BittyTax/BittyTax/pull/48, https://github.com/BittyTax/BittyTax/pull/37,
and the report's own note "Sells, Converts, and Rewards Income, and Coinbase
Earn transactions are taxable events"
(https://github.com/tresorone/tresor-import/issues/1694).

- Time: ISO 8601 with Z (`2021-02-08T18:22:22Z`) or `2024-06-15 12:00:00 UTC`.
- Amounts may carry a currency sign and thousands separators (`$1,234.56`);
  both are read. The instrument is `ASSET-CURRENCY` (BTC-USD), or an alias of
  the asset for source "coinbase".
- Buy, Advanced Trade Buy → buy at Subtotal / Quantity (what was paid before
  fees, so cash moves by Total), fee = Fees; Sell, Advanced Trade Sell → sell
  likewise. Convert ("Converted 0.5 BTC to 8.1 ETH" in Notes) → a sell of the
  first asset at spot and a buy of the second for the same value less the fee,
  so cash does not move. Rewards Income, Staking Income, Coinbase Earn,
  Learning Reward, Inflation Reward → a dividend of the value at spot and a
  buy at spot (the asset arrives, cash does not move, the income counts as
  dividends). Receive → transfer_in at spot (the cost carried over is not in
  the report). Send → transfer_out. Deposit, Withdrawal of a fiat asset →
  deposit, withdrawal. Skipped on purpose: Exchange/Pro Deposit and
  Withdrawal (moves between Coinbase and its exchange: no change in what you
  own). Any other type is an error.
"""

from __future__ import annotations

import re
from decimal import Decimal

from .base import Context, LedgerRow, Mapped, Row, RowError, RowPreset, Skip, note, number, rounded, utc_time

BUY = ("buy", "advanced trade buy")
SELL = ("sell", "advanced trade sell")
REWARDS = ("rewards income", "staking income", "coinbase earn", "learning reward", "inflation reward", "reward income")
INTERNAL = ("exchange deposit", "exchange withdrawal", "pro deposit", "pro withdrawal")
_CONVERTED = re.compile(r"Converted ([\d.,]+) (\S+) to ([\d.,]+) (\S+)")
_PREFIXED = re.compile(r"^(?P<ccy>[A-Z]{3}) Spot Price at Transaction$")
_SIGNS = "$€£¥"


class CoinbaseHistory(RowPreset):
    name = "coinbase"
    label = "Coinbase transaction history"
    source = "coinbase"
    docs = (
        "https://github.com/BittyTax/BittyTax/pull/48",
        "https://github.com/BittyTax/BittyTax/pull/37",
        "https://github.com/tresorone/tresor-import/issues/1694",
    )

    def detect(self, header: list[str]) -> bool:
        names = set(header)
        return {"Timestamp", "Transaction Type", "Asset", "Quantity Transacted"} <= names

    def map_row(self, row: Row, ctx: Context) -> Mapped:
        kind = row.required("Transaction Type")
        lowered = kind.lower()
        executed_at = utc_time(row.required("Timestamp"), "Timestamp")
        asset = row.required("Asset").upper()
        quantity = abs(_amount(row.required("Quantity Transacted"), "Quantity Transacted"))
        currency, spot_column, subtotal_column, fee_column = _columns(row)
        text = note("Coinbase", kind, row.get("ID"))
        if lowered in INTERNAL:
            return Skip(f"{kind}: a move between Coinbase and its exchange, not in or out of what you own")
        if lowered in ("deposit", "withdrawal"):
            return [LedgerRow(kind=lowered, executed_at=executed_at, quantity=quantity, currency=asset, note=text)]
        if quantity == 0:
            raise RowError("Quantity Transacted", "0")
        symbol = ctx.symbol(f"{asset}-{currency}", asset, source=self.source)
        spot = abs(_amount(row.required(spot_column), spot_column))
        fee = abs(_amount(row.get(fee_column), fee_column)) if row.get(fee_column) else Decimal(0)
        subtotal = abs(_amount(row.get(subtotal_column), subtotal_column)) if row.get(subtotal_column) else quantity * spot

        def entry(kind: str, quantity: Decimal, symbol: str, price: Decimal | None = None, fee: Decimal | None = None) -> LedgerRow:
            return LedgerRow(
                kind=kind,
                executed_at=executed_at,
                quantity=quantity,
                symbol=symbol,
                price=price,
                fee=fee or None,
                currency=currency,
                note=text,
            )

        if lowered in BUY or lowered in SELL:
            side = "buy" if lowered in BUY else "sell"
            return [entry(side, quantity, symbol, rounded(subtotal / quantity), fee)]
        if lowered in REWARDS:
            value = rounded(quantity * spot)
            return [
                entry("dividend", value, symbol),
                entry("buy", quantity, symbol, spot),
            ]
        if lowered == "receive":
            return [entry("transfer_in", quantity, symbol, spot)]
        if lowered == "send":
            return [entry("transfer_out", quantity, symbol)]
        if lowered == "convert":
            match = _CONVERTED.search(row.get("Notes"))
            if match is None:
                raise RowError("Notes", "a Convert needs 'Converted <quantity> <asset> to <quantity> <asset>' in Notes")
            to_quantity = abs(_amount(match[3], "Notes"))
            if to_quantity == 0:
                raise RowError("Notes", "converted to 0")
            to_symbol = ctx.symbol(f"{match[4].upper()}-{currency}", match[4].upper(), source=self.source)
            value = quantity * spot
            return [
                entry("sell", quantity, symbol, spot, fee),
                entry("buy", to_quantity, to_symbol, rounded((value - fee) / to_quantity)),
            ]
        raise RowError("Transaction Type", f"{kind!r} is not a type this preset maps")


def _columns(row: Row) -> tuple[str, str, str, str]:
    """(price currency, spot column, subtotal column, fees column) for whichever generation of the report this is."""
    if row.has("Spot Price Currency"):
        return row.required("Spot Price Currency").upper(), "Spot Price at Transaction", "Subtotal", _fees_column(row)
    if row.has("Price Currency"):
        return row.required("Price Currency").upper(), "Price at Transaction", "Subtotal", _fees_column(row)
    for name in row.header:
        if match := _PREFIXED.match(name):
            ccy = match["ccy"]
            return ccy, name, f"{ccy} Subtotal", f"{ccy} Fees" if row.has(f"{ccy} Fees") else f"{ccy} Fees and/or Spread"
    raise RowError("Spot Price Currency", "no price currency column")


def _fees_column(row: Row) -> str:
    return "Fees and/or Spread" if row.has("Fees and/or Spread") else "Fees"


def _amount(text: str, column: str) -> Decimal:
    t = text.strip()
    negative = t.startswith("-")
    t = t.lstrip("-").strip()
    if t[:1] in _SIGNS:  # "$1,234.56": a formatted amount, with thousands separators
        value = number(t[1:], column, thousands=",")
    else:
        value = number(t, column)
    return -value if negative else value
