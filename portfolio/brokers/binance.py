"""Binance: the spot trade history and the transaction history (Wallet → Transaction History → Export).

Public sources: Binance's FAQ "How to generate transaction history" (export
steps; at most 15 exports a month; balances refresh at 00:00 UTC)
https://www.binance.com/en/support/faq/990afa0a0a9341f78e7a9298a9575163 and headers users
posted: the transaction history "User_ID,UTC_Time,Account,Operation,Coin,
Change,Remark" (https://github.com/provinzio/CoinTaxman/issues/85; files from
2025 name the columns "User ID,Time" and write two-digit years,
https://github.com/pbialon/pit-38/pull/81) and the spot trade history
"Date(UTC),Pair,Side,Price,Executed,Amount,Fee" with the asset after each
amount ("43.7000000000VET", "0.0000114300BNB";
https://github.com/cointracer/cointracer-desktop/issues/4).

Spot trade history (`binance_trades`): one row per fill, time in UTC.
- BUY/SELL of the pair at Price; the instrument is the pair's alias for
  source "binance" (BTCUSDT → BTC-USD, as the market feeds use), else
  BASE-QUOTE. The price is in the quote asset; the row takes the instrument's
  currency, so a stablecoin quote (USDT, USDC, ...) counts at par with USD.
- Fee in the quote asset → the fee; in the base asset → fewer shares bought
  (or more sold) and a fee of that many shares at the price, so holdings and
  cash match Binance; in a third asset (BNB) → a transfer_out of that asset.

Transaction history (`binance`): one row per balance change, UTC_Time in UTC.
It has no prices, so it cannot value trades or crypto moving in:
- Deposit / Withdraw of a fiat currency → deposit / withdrawal; Withdraw of
  a crypto asset → transfer_out of it.
- Interest and rewards paid in a fiat currency → interest.
- Skipped on purpose, with the reason: the legs of trades (Buy, Sell, Fee,
  Transaction Buy/Spend/Fee/Revenue/Sold, Binance Convert, Small Assets
  Exchange BNB: import the spot trade history for those); transfers between
  your own Binance wallets (Transfer Between ..., Earn subscriptions and
  redemptions); crypto deposits and crypto rewards (no price in the export:
  record them by hand with their cost).
- Any other Operation is an error.
"""

from __future__ import annotations

import re
from decimal import Decimal

from .base import Context, LedgerRow, Mapped, Row, RowError, RowPreset, Skip, local_time, note, number, utc_time

# ISO 4217 codes Binance lists for fiat deposits and withdrawals.
FIAT = frozenset(
    "USD EUR GBP AUD CAD CHF JPY BRL TRY RUB UAH NGN PLN CZK HUF RON SEK NOK DKK ZAR INR IDR VND ARS MXN KZT AED NZD HKD SGD".split()
)
STABLE = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI")
TRADE_LEGS = (
    "buy",
    "sell",
    "fee",
    "transaction related",
    "transaction buy",
    "transaction spend",
    "transaction fee",
    "transaction revenue",
    "transaction sold",
    "binance convert",
    "small assets exchange bnb",
    "large otc trading",
)
INTERNAL = (
    "transfer between",
    "simple earn flexible subscription",
    "simple earn flexible redemption",
    "savings purchase",
    "savings principal redemption",
)
INCOME = ("interest", "reward", "distribution", "airdrop", "cashback")
_AMOUNT = re.compile(r"^(?P<qty>[0-9.,]+)(?P<asset>[A-Z0-9]+)$")


class BinanceHistory(RowPreset):
    name = "binance"
    label = "Binance transaction history"
    source = "binance"
    docs = (
        "https://www.binance.com/en/support/faq/990afa0a0a9341f78e7a9298a9575163",
        "https://github.com/provinzio/CoinTaxman/issues/85",
        "https://github.com/pbialon/pit-38/pull/81",
    )

    def detect(self, header: list[str]) -> bool:
        return {"Account", "Operation", "Coin", "Change"} <= set(header) and bool({"UTC_Time", "Time"} & set(header))

    def map_row(self, row: Row, ctx: Context) -> Mapped:
        operation = row.required("Operation")
        lowered = operation.lower()
        if row.has("UTC_Time"):
            executed_at = utc_time(row.required("UTC_Time"), "UTC_Time")
        else:
            executed_at = local_time(row.required("Time"), "Time", ("%y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"), ctx.timezone("UTC"))
        coin = row.required("Coin").upper()
        change = number(row.required("Change"), "Change")
        text = note("Binance", operation, row.get("Remark"))
        if lowered in TRADE_LEGS:
            return Skip("a leg of a trade: import Binance's spot trade history for trades")
        if lowered.startswith(INTERNAL):
            return Skip("a move between your own Binance wallets")
        fiat = coin in FIAT
        if lowered in ("deposit", "fiat deposit"):
            if not fiat:
                return Skip(f"{coin} moved in: the export has no cost for it; record it by hand as a transfer in with its cost")
            return [LedgerRow(kind="deposit", executed_at=executed_at, quantity=abs(change), currency=coin, note=text)]
        if lowered in ("withdraw", "withdrawal", "fiat withdraw", "fiat withdrawal"):
            if fiat:
                return [LedgerRow(kind="withdrawal", executed_at=executed_at, quantity=abs(change), currency=coin, note=text)]
            symbol = ctx.symbol(*_instrument_names(coin, "USDT"), source=self.source)
            return [LedgerRow(kind="transfer_out", executed_at=executed_at, quantity=abs(change), symbol=symbol, note=text)]
        if any(word in lowered for word in INCOME):
            if not fiat:
                return Skip(f"income paid in {coin}: the export has no price for it; record it by hand")
            return [LedgerRow(kind="interest", executed_at=executed_at, quantity=abs(change), currency=coin, note=text)]
        raise RowError("Operation", f"{operation!r} is not an operation this preset maps")


class BinanceTrades(RowPreset):
    name = "binance_trades"
    label = "Binance spot trade history"
    source = "binance"
    docs = (
        "https://www.binance.com/en/support/faq/990afa0a0a9341f78e7a9298a9575163",
        "https://github.com/cointracer/cointracer-desktop/issues/4",
    )

    def detect(self, header: list[str]) -> bool:
        return {"Date(UTC)", "Pair", "Side", "Price", "Executed", "Amount", "Fee"} <= set(header)

    def map_row(self, row: Row, ctx: Context) -> Mapped:
        executed_at = utc_time(row.required("Date(UTC)"), "Date(UTC)")
        side = row.required("Side").upper()
        if side not in ("BUY", "SELL"):
            raise RowError("Side", f"{side!r} is neither BUY nor SELL")
        pair = row.required("Pair").upper()
        price = number(row.required("Price"), "Price")
        executed, base = _amount(row.required("Executed"), "Executed")
        _, quote = _amount(row.required("Amount"), "Amount")
        fee_qty, fee_asset = _amount(row.get("Fee"), "Fee") if row.get("Fee") else (Decimal(0), quote)
        if not pair.startswith(base) or pair[len(base) :] != quote:
            raise RowError("Pair", f"{pair} is not {base} against {quote} as Executed and Amount say")
        symbol = ctx.symbol(pair, *_instrument_names(base, quote), source=self.source)
        text = note("Binance", side, pair, f"at {row.get('Price')} {quote}")
        quantity, fee, extra = executed, Decimal(0), []
        if fee_asset == quote:
            fee = fee_qty
        elif fee_asset == base:  # paid out of the shares: fewer bought, or more sold
            quantity = executed - fee_qty if side == "BUY" else executed + fee_qty
            fee = fee_qty * price
        elif fee_qty:
            fee_symbol = ctx.symbol(f"{fee_asset}{quote}", *_instrument_names(fee_asset, quote), source=self.source)
            extra.append(
                LedgerRow(kind="transfer_out", executed_at=executed_at, quantity=fee_qty, symbol=fee_symbol, note=note(text, "fee"))
            )
        if quantity <= 0:
            raise RowError("Fee", f"the fee of {fee_qty} {fee_asset} takes all {executed} bought")
        trade = LedgerRow(
            kind="buy" if side == "BUY" else "sell",
            executed_at=executed_at,
            quantity=quantity,
            symbol=symbol,
            price=price,
            fee=fee or None,
            note=text,
        )
        return [trade, *extra]


def _instrument_names(base: str, quote: str) -> list[str]:
    """Livefolio's way to write the pair (BTC-USDT), and BTC-USD when the quote is a USD stablecoin."""
    names = [f"{base}-{quote}"]
    if quote in STABLE:
        names.append(f"{base}-USD")
    return names


def _amount(text: str, column: str) -> tuple[Decimal, str]:
    match = _AMOUNT.match(text.strip().replace(",", ""))
    if match is None:
        raise RowError(column, f"{text!r} is not an amount followed by its asset, such as 0.5BTC")
    return number(match["qty"], column), match["asset"]
