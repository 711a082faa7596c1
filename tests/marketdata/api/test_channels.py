"""Channel names of the market API, the replay sessions' included (`?session=NAME`)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketdata import groups
from marketdata.api.channels import ChannelError, channel_parse, market_channels, session_check

sessions = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")


def test_a_session_channel_names_its_session_after_the_rest_of_the_name() -> None:
    assert channel_parse("ticker:BTC-USD?session=day1").session == "day1"
    book = channel_parse("book:EUR/USD@depth=10?session=2026-01-01_fx")
    assert (book.kind, book.symbol, book.depth, book.session) == ("book", "EUR/USD", 10, "2026-01-01_fx")
    assert channel_parse("candles:BTC-USD@1m?session=day1").name == "candles:BTC-USD@1m?session=day1"
    assert channel_parse("book:BTC-USD@depth=010?session=day1").name == "book:BTC-USD@depth=10?session=day1"  # normalised
    assert channel_parse("ticker:BTC-USD").session == ""


@given(sessions)
def test_every_market_channel_of_a_session_spells_back_to_itself_and_differs_from_the_live_one(session: str) -> None:
    for channel in market_channels("BTC-USD", session):
        assert channel_parse(channel.name) == channel
        assert channel.name != channel_parse(channel.name.partition("?")[0]).name
        assert channel.market_key == groups.market_key("BTC-USD", session)


@pytest.mark.parametrize(
    "name",
    [
        "ticker:BTC-USD?session=",
        "ticker:BTC-USD?session=Day1",  # lowercase only
        "ticker:BTC-USD?session=-day",
        "ticker:BTC-USD?session=" + "a" * 33,
        "ticker:BTC-USD?sess=day1",
        "ticker:BTC-USD?session=day1&x=1",
        "candles:BTC-USD?session=day1@1m",  # the session comes last
        "portfolio?session=day1",
        "ticker:?session=day1",
    ],
)
def test_a_bad_session_is_refused_as_an_unknown_channel(name: str) -> None:
    with pytest.raises(ChannelError) as refused:
        channel_parse(name)
    assert refused.value.code == "unknown_channel"


def test_session_check_passes_a_name_and_says_what_is_wrong_with_a_bad_one() -> None:
    assert session_check("day1") == "day1"
    with pytest.raises(ValueError, match="not a session name"):
        session_check("Day 1")
