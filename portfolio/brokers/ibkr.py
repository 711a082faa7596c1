"""Interactive Brokers: a Flex Query of the Trades section, saved as CSV.

Built from IBKR's Reporting Reference, "Trades" (Flex Query fields):
https://www.ibkrguides.com/reportingreference/reportguide/tradesfq.htm
and "Trade Confirmation Configuration" for the Flex column names
(CurrencyPrimary, FXRateToBase, ...):
https://www.ibkrguides.com/reportingreference/reportguide/trade%20confirmation%20configuration.htm

- One row per execution. Columns by their Flex names: Buy/Sell, Quantity
  (negative for sells), TradePrice, IBCommission (negative: a cost) in
  IBCommissionCurrency, CurrencyPrimary (the instrument's currency; plain
  "Currency" in older queries), FXRateToBase ("the conversion rate from asset
  currency to base currency"), Symbol, ISIN, AssetClass, TradeID.
- Time: DateTime (`20250115;093015`, `2025-01-15;09:30:15`, or with a space
  or comma), else TradeDate (+ TradeTime). Flex times carry no offset; they are
  read in US Eastern time (America/New_York), IBKR's statement time, unless the
  `timezone` option says otherwise. A date alone is taken at noon.
- FXRateToBase becomes our fx_rate when the trade is in another currency
  than the portfolio's: it is right when the portfolio's base currency is the
  IBKR account's base currency.
- Skipped on purpose: AssetClass CASH (a currency conversion: the ledger
  keeps cash per currency and has no conversion entry) and derivatives (OPT,
  FUT, FOP, WAR, ...: the ledger holds shares, not contracts); repeated header
  rows (one per account or section).
- Errors: "BUY (Ca.)"/"SELL (Ca.)" (a cancelled execution: remove it and the
  original from the file), any other Buy/Sell value, bad numbers and times.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from .base import Context, LedgerRow, Mapped, Row, RowError, RowPreset, Skip, local_time, note, number, optional

SHARES = frozenset({"STK", "ETF", "FUND", "BOND", ""})
TIME_FORMATS = (
    "%Y%m%d;%H%M%S",
    "%Y-%m-%d;%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d, %H:%M:%S",
    "%Y%m%d %H%M%S",
    "%Y-%m-%d;%H%M%S",
    "%Y%m%d",
    "%Y-%m-%d",
)


class IbkrFlexTrades(RowPreset):
    name = "ibkr"
    label = "Interactive Brokers Flex Query (trades)"
    source = "ibkr"
    docs = (
        "https://www.ibkrguides.com/reportingreference/reportguide/tradesfq.htm",
        "https://www.ibkrguides.com/reportingreference/reportguide/trade%20confirmation%20configuration.htm",
    )

    def detect(self, header: list[str]) -> bool:
        names = set(header)
        return {"Buy/Sell", "TradePrice", "Symbol", "Quantity"} <= names and bool(names & {"DateTime", "TradeDate"})

    def map_row(self, row: Row, ctx: Context) -> Mapped:
        asset_class = row.get("AssetClass").upper()
        if asset_class == "CASH":
            return Skip("currency conversion (AssetClass CASH): the ledger keeps cash per currency")
        if asset_class not in SHARES:
            return Skip(f"AssetClass {asset_class}: only shares, ETFs and funds are imported")
        side = row.required("Buy/Sell").upper()
        if "(CA.)" in side:
            raise RowError("Buy/Sell", f"{side!r} is a cancelled execution: remove it and the execution it cancels from the file")
        if side not in ("BUY", "SELL"):
            raise RowError("Buy/Sell", f"{side!r} is neither BUY nor SELL")
        executed_at = self._time(row, ctx)
        quantity = abs(number(row.required("Quantity"), "Quantity"))
        if quantity == 0:
            raise RowError("Quantity", "0 shares")
        price = number(row.required("TradePrice"), "TradePrice")
        currency_column = "CurrencyPrimary" if row.has("CurrencyPrimary") else "Currency"
        currency = row.required(currency_column).upper()
        fx = ctx.fx_for(currency, optional(row.get("FXRateToBase"), "FXRateToBase"))
        commission = optional(row.get("IBCommission"), "IBCommission") or Decimal(0)
        if commission > 0:
            raise RowError("IBCommission", f"{commission} is a credit, not a commission: record it by hand as interest")
        fee_currency = row.get("IBCommissionCurrency").upper() or currency
        symbol = ctx.symbol(row.get("Symbol"), row.get("ISIN"), source=self.source)
        text = note("IBKR", row.get("TradeID") and f"trade {row.get('TradeID')}")
        trade = LedgerRow(
            kind="buy" if side == "BUY" else "sell",
            executed_at=executed_at,
            quantity=quantity,
            symbol=symbol,
            price=price,
            fee=-commission if commission and fee_currency == currency else None,
            currency=currency,
            fx_rate=fx,
            note=text,
        )
        if not commission or fee_currency == currency:
            return [trade]
        # A commission in another currency than the trade's is its own fee entry, in that currency.
        fee = LedgerRow(kind="fee", executed_at=executed_at, quantity=-commission, currency=fee_currency, note=note(text, "commission"))
        return [trade, fee]

    def _time(self, row: Row, ctx: Context) -> datetime:
        zone = ctx.timezone("America/New_York")
        if row.get("DateTime"):
            return local_time(row.get("DateTime"), "DateTime", TIME_FORMATS, zone)
        when = row.required("TradeDate")
        if row.get("TradeTime"):
            when = f"{when};{row.get('TradeTime')}"
        return local_time(when, "TradeDate", TIME_FORMATS, zone)
