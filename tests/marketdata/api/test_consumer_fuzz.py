"""Fuzzing /ws/v1/market through the real application: whatever a client sends, the consumer answers and carries on.

Random JSON values, frames of the right shape with wrong types, garbage text,
binary and empty frames, and frames over the size limit. The consumer must
never crash, must answer every frame (an error, or the reply a valid frame
earns), and a channel subscribed before the fuzzing must still deliver its
next update afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.marketdata.api.test_consumer import Client, Feed, connect

pytestmark = pytest.mark.django_db(transaction=True)

CODES = {"bad_json", "bad_request", "unknown_op", "unknown_channel", "unknown_symbol", "not_authenticated", "subscription_limit"}
FUZZ = hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
# Names that look like channels but are not ones this connection may take (none is a known symbol's channel).
NEAR_CHANNELS = st.sampled_from(
    [
        "ticker:NOPE",
        "tickr:BTC-USD",
        "book:BTC-USD@depth=7",
        "book:BTC-USD",
        "candles:BTC-USD@5m",
        "trades:BTC-USD@1m",
        "portfolio",
        "portfolio:1",
        "portfolio:0",
        "portfolio:x",
        "",
        " ",
        "ticker:",
        "ticker:BTC USD",
    ]
) | st.text(max_size=40)
CHANNEL_LISTS = st.lists(NEAR_CHANNELS, max_size=5) | JSON
POSITIONS = st.dictionaries(NEAR_CHANNELS, st.fixed_dictionaries({}, optional={"epoch": JSON, "seq": JSON}) | JSON, max_size=4) | JSON
SHAPED = st.fixed_dictionaries(
    {"op": st.sampled_from(["ping", "subscribe", "unsubscribe", "resume", "auth", "Ping", "", "hello"]) | JSON},
    optional={
        "id": JSON,
        "channels": CHANNEL_LISTS | POSITIONS,
        "throttle_ms": JSON,
        "token": JSON.filter(lambda t: not isinstance(t, str)),
    },
)


def _auth_with_a_string_token(frame: Any) -> bool:
    # A token that is a string is checked, and a wrong one closes the connection (4401): tested elsewhere.
    return isinstance(frame, dict) and frame.get("op") == "auth" and isinstance(frame.get("token"), str)


TEXT_FRAMES = st.one_of(
    JSON.filter(lambda v: not _auth_with_a_string_token(v)).map(json.dumps),
    SHAPED.map(json.dumps),
    st.text(max_size=200),
    st.sampled_from(
        ["[" * 5000, "{" * 5000, '{"op": "ping", "id": ' + "9" * 5000 + "}", "NaN", '{"op": "ping", "id": NaN}', "\x00", "\ud800"]
    ),
)
FRAMES = st.one_of(TEXT_FRAMES.map(lambda text: ("text", text)), st.binary(max_size=200).map(lambda data: ("bytes", data)))


def expected_id(kind: str, frame: str | bytes) -> int | str | None:
    """The id an answer must echo: a text frame's JSON object's usable `id` (an integer within ±(2**53 - 1), or a string
    of at most 128 characters)."""
    if kind != "text":
        return None
    try:
        parsed = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    request_id = parsed.get("id") if isinstance(parsed, dict) else None
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        return request_id if abs(request_id) < 2**53 else None
    return request_id if isinstance(request_id, str) and len(request_id) <= 128 else None


async def send_raw(ws: Client, kind: str, frame: str | bytes) -> None:
    # Straight to the application: the test client refuses empty frames, a real one may send them.
    await ws.ws.send_input({"type": "websocket.receive", kind: frame})


@pytest.fixture
def fuzz_settings(settings: Any) -> Any:
    # Fuzzing sends frames as fast as it can: the rate limit is tested on its own.
    settings.MARKET_WS_MESSAGES_PER_SECOND = 1_000_000
    settings.MARKET_WS_BURST = 1_000_000
    settings.MARKET_WS_HEARTBEAT_SECONDS = 3600
    return settings


@pytest.fixture
def feed() -> Feed:
    return Feed()


@FUZZ
@given(frames=st.lists(FRAMES, min_size=1, max_size=15))
async def test_any_frame_is_answered_and_a_channel_subscribed_before_still_delivers(
    instruments: Any, fuzz_settings: Any, feed: Feed, frames: list[tuple[str, str | bytes]]
) -> None:
    async with connect(origin=None) as ws:
        _, [snapshot] = await ws.subscribe("ticker:BTC-USD")
        for kind, frame in frames:
            await send_raw(ws, kind, frame)
            reply = await ws.recv(timeout=5)
            assert reply["type"] in ("error", "pong", "unsubscribed"), (frame, reply)
            if reply["type"] == "error":
                assert reply["code"] in CODES and isinstance(reply["message"], str), (frame, reply)
            assert reply.get("id") == expected_id(kind, frame), (frame, reply)
        # Still open, still subscribed, and nothing was left unanswered or sent twice.
        assert await ws.request({"op": "ping", "id": "after"}) == {"type": "pong", "id": "after"}
        message = feed.tick("BTC-USD", "1")
        await feed.publish(message)
        update = await ws.recv(timeout=5)
        assert (update["type"], update["seq"]) == ("update", snapshot["seq"] + 1)
        assert await ws.nothing(0.05)


@FUZZ
@given(
    frame=st.one_of(
        st.integers(1025, 20_000).map(lambda n: ("text", json.dumps({"op": "ping", "pad": "x" * n}))),
        st.text(min_size=1100, max_size=3000).map(lambda text: ("text", text)),
        st.binary(min_size=1025, max_size=5000).map(lambda data: ("bytes", data)),
    )
)
async def test_a_frame_over_the_size_limit_is_answered_then_closed_with_1009(
    instruments: Any, fuzz_settings: Any, frame: tuple[str, str | bytes]
) -> None:
    fuzz_settings.MARKET_WS_MAX_MESSAGE_BYTES = 1024
    kind, data = frame
    size = len(data) if isinstance(data, bytes) else len(data.encode(errors="surrogatepass"))
    async with connect(origin=None) as ws:
        await ws.subscribe("ticker:BTC-USD")
        await send_raw(ws, kind, data)
        if size <= 1024:  # short text of many characters can still fit
            assert (await ws.recv())["type"] == "error"
            return
        error = await ws.recv()
        assert (error["type"], error["code"]) == ("error", "message_too_big")
        assert await ws.closed_with() == 1009
