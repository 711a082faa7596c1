import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketdata import groups

symbols = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=255), min_size=1, max_size=30)


def test_user_groups_are_per_user() -> None:
    assert groups.user_group(7) == "user.7"
    assert groups.user_group(7) != groups.user_group(8)


@given(symbols, symbols)
def test_each_symbol_has_its_own_live_channel(a: str, b: str) -> None:
    assert groups.live_channel("livefolio", a).startswith("livefolio:live:")
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


def test_a_sandbox_stream_has_its_own_key_and_redis_channel_apart_from_the_live_one() -> None:
    assert groups.market_key("BTC-USD") == "BTC-USD"
    assert groups.market_key("BTC-USD", "day1") == "BTC-USD?session=day1"
    assert groups.live_channel("lf", groups.market_key("BTC-USD", "day1")) != groups.live_channel("lf", "BTC-USD")
    assert groups.market_key("BTC-USD", "day1") != groups.market_key("BTC-USD", "day2")
    with pytest.raises(ValueError, match="empty"):
        groups.market_key("", "day1")
