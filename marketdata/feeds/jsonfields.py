"""Reading exchange JSON messages field by field, each problem a `BadLine` naming the field and where it was.

Shared by the WebSocket formats (`binance_ws`, `coinbase`), whose captures and live
connections both go through these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from marketdata.feeds.files import BadLine


def decode(text: str) -> dict[str, Any]:
    """A JSON object with exact decimals (a float would round 0.1 to 0.1000000000000000055...)."""
    try:
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
        # bool is an int: refuse it explicitly; numbers arrive as Decimal (parse_float) or int
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise InvalidOperation
        number = Decimal(value)
    except InvalidOperation:
        raise BadLine("bad number", f"{key} {value!r} in {where} is not a decimal") from None
    if not number.is_finite():
        raise BadLine("bad number", f"{key} {value!r} in {where} is not a finite number")
    return number
