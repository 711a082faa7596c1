"""The event classes: frozen dataclasses whose `__init__` is `quick_init`'s."""

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from marketdata.events import EPOCH, BookDelta, PriceUpdate, Trade, from_epoch_us, quick_init

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_quick_init_builds_the_same_frozen_object_with_defaults_and_keywords() -> None:
    trade = Trade("BTC-USD", T, D("1.5"), D(2), "binance")
    assert (trade.side, trade.trade_id, trade.backfill) == (None, None, False)
    assert trade == Trade(symbol="BTC-USD", ts=T, price=D("1.5"), size=D(2), source="binance", side=None)
    assert hash(trade) == hash(Trade("BTC-USD", T, D("1.5"), D(2), "binance"))
    assert dataclasses.replace(trade, trade_id=7).trade_id == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        trade.price = D(3)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Trade("BTC-USD", T, D(1))  # type: ignore[call-arg]
    delta = BookDelta("X", T, (), (), "s", last_id=4)
    assert (delta.first_id, delta.last_id, delta.source_id) == (None, 4, None)
    assert PriceUpdate("X", 1, "e", D(1), None, None, T, "s", 1, replay=True).replay


def test_quick_init_refuses_a_default_factory() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Holder:
        items: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="default_factory"):
        quick_init(Holder)


@pytest.mark.parametrize("us", [0, 1, -1, 1_767_225_600_039_409, -86_400_000_001, 253_402_300_799_999_999])
def test_from_epoch_us_is_exact(us: int) -> None:
    assert from_epoch_us(us) == EPOCH + timedelta(microseconds=us)
