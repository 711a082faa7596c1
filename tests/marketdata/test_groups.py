import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketdata import groups

VALID_GROUP = re.compile(r"^[A-Za-z0-9._-]{1,99}$")
symbols = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=255), min_size=1, max_size=30)


@given(symbols)
def test_any_symbol_makes_a_valid_reversible_group_name(symbol: str) -> None:
    name = groups.symbol_group(symbol)
    assert VALID_GROUP.match(name), name
    assert groups.symbol_from_group(name) == symbol


@given(symbols, symbols)
def test_different_symbols_never_share_a_group(a: str, b: str) -> None:
    if a != b:
        assert groups.symbol_group(a) != groups.symbol_group(b)


@pytest.mark.parametrize(
    ("symbol", "group"), [("AAPL", "md.AAPL"), ("EUR/USD", "md.EUR_2FUSD"), ("^GSPC", "md._5EGSPC"), ("BTC-USD", "md.BTC-USD")]
)
def test_common_symbols_read_naturally(symbol: str, group: str) -> None:
    assert groups.symbol_group(symbol) == group


def test_empty_symbol_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        groups.symbol_group("")


def test_user_groups_are_per_user() -> None:
    assert groups.user_group(7) == "user.7"
    assert groups.user_group(7) != groups.user_group(8)


@given(symbols, symbols)
def test_each_symbol_has_its_own_live_channel_apart_from_the_price_groups(a: str, b: str) -> None:
    # Market-channel messages travel on Redis pub/sub (marketdata.delivery.fanout), never in a price group.
    name = groups.live_channel("livefolio", a)
    assert name != groups.symbol_group(a) and name.startswith("livefolio:live:")
    if a != b:
        assert groups.live_channel("livefolio", a) != groups.live_channel("livefolio", b)
    assert groups.live_channel("livefolio", a) != groups.live_channel("other", a)  # installations sharing a Redis stay apart


def test_live_channels_read_naturally() -> None:
    assert (groups.live_channel("livefolio", "BTC-USD"), groups.live_channel("lf", "EUR/USD")) == (
        "livefolio:live:BTC-USD",
        "lf:live:EUR/USD",
    )
    with pytest.raises(ValueError, match="empty"):
        groups.live_channel("livefolio", "")
