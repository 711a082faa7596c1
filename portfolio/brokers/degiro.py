"""DEGIRO: the "Transactions" export (Inbox → Transactions → Export → CSV), in any of its languages.

Public sources: DEGIRO's export steps and its quirks as described in the
format request https://github.com/leppa/convert-to-wealthfolio/issues/10, and
real headers users posted (English "Date,Time,Product,ISIN,Reference
exchange,Venue,Quantity,Price,,Local value,,Value,,Exchange rate,Transaction
and/or third party costs,,Total,,Order ID"; German "Datum,Uhrzeit,Produkt,
ISIN,Börse,Venue,Anzahl,Kurs,,Wert in Lokalwährung,,Wert,,Wechselkurs,
Gebühr,,Gesamt,,Order-ID"), e.g. https://github.com/tresorone/tresor-import/issues/3666.

- The header is translated, the layout is not: a preset that reads by
  position handles every language. An unnamed column after an amount holds
  that amount's currency (Price, Local value, Value, costs, Total).
- Columns: Date (DD-MM-YYYY) and Time (HH:MM) in the account's local time,
  read as Europe/Amsterdam (DEGIRO's home; the `timezone` option overrides);
  Product; ISIN (there is no ticker: it maps through an alias for source
  "degiro" or any source, else stays the ISIN so the import reports it);
  Quantity (negative for a sell); Price in the trading currency; Value in the
  account's currency; Exchange rate = trading-currency units per
  account-currency unit (empty when they are the same); transaction costs
  (negative, in the account currency); Total; Order ID.
- Numbers: '.' or ',' as the decimal point, whichever the account's language
  writes (the last of the two in a cell is the point).
- Costs are converted into the trade's currency at the row's exchange rate
  (0.51 EUR at 1.1582 USD/EUR = 0.590682 USD), so in the base currency they are
  exactly what DEGIRO charged. fx_rate = 1 / Exchange rate when the account's
  currency is the portfolio's base currency.
- Errors: a zero or unreadable quantity, no ISIN, a foreign trade with no rate.
"""

from __future__ import annotations

from decimal import Decimal

from .base import Context, LedgerRow, Mapped, Row, RowError, RowPreset, auto_number, inverse, local_time, note, rounded

DATE, TIME, PRODUCT, ISIN, EXCHANGE, VENUE, QUANTITY, PRICE, PRICE_CCY, LOCAL, LOCAL_CCY, VALUE, VALUE_CCY, RATE = range(14)


class DegiroTransactions(RowPreset):
    name = "degiro"
    label = "DEGIRO transactions"
    source = "degiro"
    docs = ("https://github.com/leppa/convert-to-wealthfolio/issues/10", "https://github.com/tresorone/tresor-import/issues/3666")

    def detect(self, header: list[str]) -> bool:
        if len(header) < 19 or header[ISIN].upper() != "ISIN":
            return False
        unnamed = (PRICE_CCY, LOCAL_CCY, VALUE_CCY)
        named = (DATE, TIME, PRODUCT, EXCHANGE, VENUE, QUANTITY, PRICE, LOCAL, VALUE, RATE)
        return all(header[i] == "" for i in unnamed) and all(header[i] for i in named) and header[-1] != ""

    def map_row(self, row: Row, ctx: Context) -> Mapped:
        h = row.header
        when = f"{row.at(DATE)} {row.at(TIME)}"
        executed_at = local_time(when, h[DATE], ("%d-%m-%Y %H:%M", "%d-%m-%Y %H:%M:%S"), ctx.timezone("Europe/Amsterdam"))
        isin = row.at(ISIN)
        if not isin:
            raise RowError(h[ISIN], "required")
        quantity = auto_number(_need(row, QUANTITY), h[QUANTITY])
        if quantity == 0:
            raise RowError(h[QUANTITY], "0 shares")
        price = abs(auto_number(_need(row, PRICE), h[PRICE]))
        currency = _need(row, PRICE_CCY, h[PRICE]).upper()
        account_currency = (row.at(VALUE_CCY) or currency).upper()
        rate = auto_number(row.at(RATE), h[RATE]) if row.at(RATE) else None
        if rate is None and currency != account_currency:
            local, value = row.at(LOCAL), row.at(VALUE)
            if not (local and value) or auto_number(value, h[VALUE]) == 0:
                raise RowError(h[RATE], f"required: the trade is in {currency}, the account in {account_currency}")
            rate = rounded(abs(auto_number(local, h[LOCAL]) / auto_number(value, h[VALUE])))
        fee = Decimal(0)
        for index, currency_index in _costs(h):
            text = row.at(index)
            if not text:
                continue
            cost = abs(auto_number(text, h[index]))
            cost_currency = ((row.at(currency_index) if currency_index is not None else "") or account_currency).upper()
            if cost_currency == currency:
                fee += cost
            elif cost_currency == account_currency and rate is not None:
                fee += rounded(cost * rate)
            else:
                raise RowError(h[index], f"costs in {cost_currency} on a trade in {currency}: no rate to convert them")
        fx = inverse(rate) if account_currency == ctx.base_currency and currency != account_currency else None
        return [
            LedgerRow(
                kind="buy" if quantity > 0 else "sell",
                executed_at=executed_at,
                quantity=abs(quantity),
                symbol=ctx.symbol(isin, source=self.source),
                price=price,
                fee=fee or None,
                currency=currency,
                fx_rate=ctx.fx_for(currency, fx),
                note=note("DEGIRO", row.at(PRODUCT), row.at(len(h) - 1) and f"order {row.at(len(h) - 1)}"),
            )
        ]


def _need(row: Row, index: int, column: str | None = None) -> str:
    value = row.at(index)
    if not value:
        raise RowError(column or row.header[index], "required")
    return value


def _costs(header: list[str]) -> list[tuple[int, int | None]]:
    """The cost columns between Exchange rate and Total, each with the index of its currency column (None: none given).
    The last two named columns are Total (with its currency) and Order ID."""
    named = [i for i in range(RATE + 1, len(header)) if header[i]]
    out = []
    for i in named[:-2]:
        out.append((i, i + 1 if i + 1 < len(header) and header[i + 1] == "" else None))
    return out
