"""Reading exchange JSON messages field by field, each problem a `BadLine` naming the field and where it was.

Shared by the WebSocket formats (`binance_ws`, `coinbase`, `cryptofeed`), whose captures and live
connections both go through these, and the recorders' receive times they all carry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from marketdata.events import from_epoch_us
from marketdata.feeds.files import BadLine

# Epoch counts told apart by the size of their whole part: each unit's range runs from 1973 to 5138,
# so none overlaps another. (upper bound of the whole part, power of ten to microseconds)
EPOCH_FROM = 10**8
EPOCH_UNITS = ((10**11, 6), (10**14, 3), (10**17, 0), (10**20, -3))  # s, ms, µs, ns


def decode(text: str | bytes) -> dict[str, Any]:
    """A JSON object, numbers exact: orjson, and Python's json (decimals for numbers) for what orjson refuses.

    orjson reads a JSON number with a fraction as a float; `decimal` gives it back as the shortest
    decimal that float round-trips to, which is the text any float-based recorder wrote."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # integers past 64 bits, NaN: valid to Python's json; truly broken JSON fails again here
            value = json.loads(text, parse_float=Decimal)
        except ValueError as exc:  # JSONDecodeError, and a lone surrogate or the like
            raise BadLine("bad json", str(exc)) from None
    if not isinstance(value, dict):
        raise BadLine("bad json", f"expected a JSON object, got {type(value).__name__}")
    return value


def field(data: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise BadLine("missing field", f"no {key!r} in {where}") from None


def decimal(data: Mapping[str, Any], key: str, where: str) -> Decimal:
    value = field(data, key, where)
    try:
        # bool is an int: refuse it explicitly; numbers arrive as int, float (orjson) or Decimal (json)
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise InvalidOperation
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise BadLine("bad number", f"{key} {value!r} in {where} is not a decimal") from None
    if not number.is_finite():
        raise BadLine("bad number", f"{key} {value!r} in {where} is not a finite number")
    return number


def epoch_us(text: str) -> int:
    """Microseconds of an epoch count in seconds, ms, µs or ns, told by the size of its whole part
    (`1714557600`, `1714557600.123456`, `1714557600123`, `1714557600123456789`); exact, below a µs cut off."""
    whole, dot, fraction = text.partition(".")
    if not (whole.isascii() and whole.isdigit()) or (dot and not (fraction.isascii() and fraction.isdigit())):
        raise BadLine("bad time", f"{text!r} is not an epoch count")
    value = int(whole)
    if value >= EPOCH_FROM:
        for bound, power in EPOCH_UNITS:
            if value < bound:
                if not fraction:
                    return value * 10**power if power >= 0 else value // 10**-power
                scale = power - len(fraction)
                digits = int(whole + fraction)
                return digits * 10**scale if scale >= 0 else digits // 10**-scale
    raise BadLine("bad time", f"{text!r} is not an epoch time from 1973 to 5138 in s, ms, µs or ns")


def receive_time(value: object, where: str) -> datetime:
    """A recorder's receive time: an epoch count (number or digits, any unit, see `epoch_us`) or
    ISO 8601 with a UTC offset."""
    if isinstance(value, str):
        if value[:1].isdigit() and "-" in value[:8]:
            try:
                ts = datetime.fromisoformat(value)
            except ValueError:
                raise BadLine("bad time", f"{where} {value!r} is not ISO 8601") from None
            # A time without an offset could be anyone's local time: guessing UTC would shift data by hours.
            if ts.utcoffset() is None:
                raise BadLine("bad time", f"{where} {value!r} has no UTC offset")
            return ts.astimezone(UTC)
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float):
        # The shortest repr is the text the recorder wrote; without an exponent it is already fixed point.
        text = repr(value)
        if "e" in text or "n" in text:  # 1e+18, inf, nan
            text = format(Decimal(text), "f")
    elif isinstance(value, Decimal):
        text = format(value, "f")
    else:
        raise BadLine("bad time", f"{where} {value!r} is not a time")
    try:
        return from_epoch_us(epoch_us(text))
    except BadLine as problem:
        raise BadLine("bad time", f"{where} {problem.detail}") from None
