"""Trading 212: the history export (History → Export CSV, or the API's `POST /api/v0/equity/history/exports`).

Public sources: the API's export endpoint (what the file may include: orders,
dividends, interest, transactions) https://docs.trading212.com/api/historical-events/requestreport,
and headers users posted, e.g. "Action,Time,ISIN,Ticker,Name,No. of shares,Price / share,Currency (Price / share),
Exchange rate,Result (EUR),Total (EUR),Withholding tax,Currency (Withholding tax),Charge amount (EUR),
Transaction fee (EUR),Finra fee (EUR),Notes,ID,Currency conversion fee (EUR)"
(https://github.com/tresorone/tresor-import/issues/6025).

- Columns vary with what the period held; they are read by name. The
  account's currency is the one in "Total (EUR)" (or the "Currency (Total)"
  cell of newer files).
- Time: `YYYY-MM-DD HH:MM:SS` in UTC (US market buys stamped 13:30:04 in
  summer are the 9:30 New York open).
- Exchange rate = price-currency units per account-currency unit
  ("Not available" on some dividends: then derived from Total).
- Actions: Market/Limit/Stop/Stop limit buy and sell → buy/sell (fees in the
  account's currency are converted into the trade's at the row's rate);
  Deposit, Withdrawal (Total, account currency); Dividend (...) → dividend of
  shares × gross per share, withholding tax as its fee; Interest on cash,
  Lending interest → interest. Skipped on purpose: Currency conversion (cash
  moved between the account's currencies). Any other Action is an error.
- Symbols: Ticker, then ISIN, through the aliases for source "trading212".
"""

from __future__ import annotations

import re
from decimal import Decimal

from .base import Context, LedgerRow, Mapped, Row, RowError, RowPreset, Skip, inverse, note, number, rounded, utc_time

_TRADE = re.compile(r"(market|limit|stop|stop limit) (buy|sell)", re.IGNORECASE)
_SUFFIX = re.compile(r"^(?P<name>.+?) \((?P<ccy>[A-Z]{3})\)$")
FEE_COLUMNS = (
    "Transaction fee",
    "Finra fee",
    "Stamp duty reserve tax",
    "Stamp duty",
    "Currency conversion fee",
    "French transaction tax",
    "PTM levy",
)
INTEREST = ("interest on cash", "lending interest")
SKIPPED = {"currency conversion": "currency conversion inside the account: the ledger keeps cash per currency"}


class Trading212(RowPreset):
    name = "trading212"
    label = "Trading 212"
    source = "trading212"
    docs = ("https://docs.trading212.com/api/historical-events/requestreport", "https://github.com/tresorone/tresor-import/issues/6025")

    def detect(self, header: list[str]) -> bool:
        names = set(header)
        return {"Action", "Time", "No. of shares", "Price / share"} <= names and any(n.startswith("Total") for n in header)

    def map_row(self, row: Row, ctx: Context) -> Mapped:
        action = row.required("Action")
        executed_at = utc_time(row.required("Time"), "Time", ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f"))
        total_column, account = _total(row)
        lowered = action.lower()
        text = note("Trading 212", action, row.get("ID"))
        if lowered in SKIPPED:
            return Skip(SKIPPED[lowered])
        if lowered in ("deposit", "withdrawal") or lowered in INTEREST:
            amount = abs(number(row.required(total_column), total_column))
            kind = "interest" if lowered in INTEREST else lowered
            return [LedgerRow(kind=kind, executed_at=executed_at, quantity=amount, currency=account, note=text)]
        trade = _TRADE.fullmatch(action)
        if trade is None and not lowered.startswith("dividend"):
            raise RowError(
                "Action", f"{action!r} is not an action this preset maps (buys, sells, deposits, withdrawals, dividends, interest)"
            )
        shares = number(row.required("No. of shares"), "No. of shares")
        price = number(row.required("Price / share"), "Price / share")
        currency = row.required("Currency (Price / share)").upper()
        rate = self._rate(row, currency, account, shares * price, total_column, is_sell=bool(trade and trade.group(2).lower() == "sell"))
        symbol = ctx.symbol(row.get("Ticker"), row.get("ISIN"), source=self.source)
        fx = ctx.fx_for(currency, inverse(rate) if account == ctx.base_currency and currency != account else None)
        if trade is None:  # a dividend: the tax withheld is its fee
            kind, fee = "dividend", _in_currency(_withholding(row), currency, account, rate, "Withholding tax")
        else:
            kind = trade.group(2).lower()
            fee = sum((_in_currency([f], currency, account, rate, column) for column, f in _fees(row, account)), Decimal(0))
        return [
            LedgerRow(
                kind=kind,
                executed_at=executed_at,
                quantity=shares,
                symbol=symbol,
                price=price,
                fee=fee or None,
                currency=currency,
                fx_rate=fx,
                note=text,
            )
        ]

    def _rate(self, row: Row, currency: str, account: str, gross: Decimal, total_column: str, *, is_sell: bool) -> Decimal | None:
        """Price-currency units per account-currency unit: the Exchange rate column, or derived from Total."""
        if currency == account:
            return Decimal(1)
        text = row.get("Exchange rate")
        if text and text.lower() != "not available":
            return number(text, "Exchange rate")
        total = row.get(total_column)
        if not total:
            raise RowError("Exchange rate", f"required: the price is in {currency}, the account in {account}")
        net = abs(number(total, total_column))
        if row.required("Action").lower().startswith("dividend"):
            tax = _withholding(row)
            gross -= sum((amount for amount, ccy in tax if ccy == currency), Decimal(0))
        else:
            fees = sum((amount for _, (amount, ccy) in _fees(row, account) if ccy == account), Decimal(0))
            net = net + fees if is_sell else net - fees
        if net == 0:
            raise RowError(total_column, "0: no rate can be derived from it")
        return rounded(gross / net)


def _total(row: Row) -> tuple[str, str]:
    """(the Total column's name, the account's currency)."""
    for name in row.header:
        match = _SUFFIX.match(name)
        if match and match["name"] == "Total":
            return name, match["ccy"]
    if row.has("Total"):
        return "Total", row.required("Currency (Total)").upper()
    raise RowError("Total", "no Total column: export again with totals")


def _fees(row: Row, account: str) -> list[tuple[str, tuple[Decimal, str]]]:
    out = []
    for name in row.header:
        match = _SUFFIX.match(name)
        base, ccy = (match["name"], match["ccy"]) if match else (name, row.get(f"Currency ({name})").upper() or account)
        if base in FEE_COLUMNS and row.get(name):
            out.append((name, (abs(number(row.get(name), name)), ccy)))
    return out


def _withholding(row: Row) -> list[tuple[Decimal, str]]:
    text = row.get("Withholding tax")
    if not text:
        return []
    return [(abs(number(text, "Withholding tax")), row.get("Currency (Withholding tax)").upper())]


def _in_currency(amounts: list[tuple[Decimal, str]], currency: str, account: str, rate: Decimal | None, column: str) -> Decimal:
    total = Decimal(0)
    for amount, ccy in amounts:
        if ccy in ("", currency):
            total += amount
        elif ccy == account and rate is not None:
            total += rounded(amount * rate)
        else:
            raise RowError(column, f"{amount} {ccy} on a row in {currency}: no rate to convert it")
    return total
