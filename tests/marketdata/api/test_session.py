"""The v1 protocol session (marketdata/api/session.py) on its own: frames in, frames out, no Channels, no I/O."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from marketdata.api.limits import Request
from marketdata.api.session import CLOSE_MESSAGE_TOO_BIG, CLOSE_RATE_LIMITED, Limits, MarketSub, Refused, Session

ROOT = Path(__file__).resolve().parents[3]
LIMITS = Limits(
    subscriptions=4, messages_per_second=2, burst=3, message_bytes=200, connections_per_user=2, heartbeat_seconds=15, anonymous=True
)
SYMBOLS = frozenset({"BTC-USD", "AAPL"})


class User:
    pk = 7

    def get_username(self) -> str:
        return "alice"


class Timer:
    def cancel(self) -> None:
        pass


class Wire:
    """What the session wrote, decoded; and the throttles it asked a timer for."""

    def __init__(self, **options: Any) -> None:
        self.sent: list[str] = []
        self.timers: list[MarketSub] = []
        self.session = Session(
            send=self.sent.append, limits=LIMITS, symbols=SYMBOLS, connection_id="c1", throttle_timer=self.timer, now=0, **options
        )

    def timer(self, sub: MarketSub) -> None:
        """As the adapter does: note that a timer runs for the channel's throttle."""
        self.timers.append(sub)
        sub.timer = Timer()  # type: ignore[assignment]

    def take(self) -> list[dict[str, Any]]:
        frames = [json.loads(text) for text in self.sent]
        self.sent.clear()  # the session holds this list's `append`
        return frames


def tick(seq: int, epoch: str = "e1", last: str = "1", ch: str = "ticker:BTC-USD") -> dict[str, Any]:
    return {"ch": ch, "epoch": epoch, "seq": seq, "ts": 1000 + seq, "data": {"last": last}}


def frame_of(message: dict[str, Any]) -> str:
    return json.dumps({"type": "update", **message}, separators=(",", ":"))


def subscribe(wire: Wire, *names: str, throttle_ms: int = 0, snapshot_seq: int = 0) -> list[MarketSub]:
    """A subscribe answered with snapshots at `snapshot_seq`; returns the channels that found a gap."""
    session = wire.session
    request = Request("subscribe", 1, channels=names, throttle_ms=throttle_ms)
    subs = session.install(session.channels(names), {}, throttle_ms)
    snapshots = {sub.name: {"type": "snapshot", "ch": sub.name, "epoch": "e1", "seq": snapshot_seq, "ts": 0, "data": {}} for sub in subs}
    return session.subscribed(request, subs, snapshots)


def test_the_session_needs_neither_channels_nor_django() -> None:
    code = (
        "import sys, marketdata.api.session; print(sorted(m for m in sys.modules if m.split('.')[0] in ('channels', 'django', 'daphne')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_hello_states_the_limits_and_the_features() -> None:
    wire = Wire(user=User())
    wire.session.hello()
    [hello] = wire.take()
    assert (hello["type"], hello["user"], hello["heartbeat_ms"], hello["features"]) == ("hello", "alice", 15000, ["batch"])
    assert hello["limits"] == {"subscriptions": 4, "messages_per_second": 2, "burst": 3, "message_bytes": 200, "connections_per_user": 2}


def test_a_frame_over_the_size_limit_is_refused_with_a_close_code() -> None:
    wire = Wire()
    assert wire.session.admit("x" * 201, None, 0) == CLOSE_MESSAGE_TOO_BIG
    [error] = wire.take()
    assert (error["code"], error["message"]) == ("message_too_big", "A frame may carry 200 bytes; this one had 201.")


def test_past_the_burst_frames_are_dropped_and_ten_in_a_row_close_the_connection() -> None:
    wire = Wire()
    assert [wire.session.admit(f'{{"op": "ping", "id": {n}}}', None, 0) for n in range(3)] == [True] * 3
    assert wire.session.admit('{"op": "ping", "id": 9}', None, 0) is False
    [error] = wire.take()
    assert (error["code"], error["id"]) == ("rate_limited", 9)
    assert wire.session.admit("{}", None, 1.0) is True  # two tokens a second: one came back, and the run of refusals ends
    verdicts = [wire.session.admit("{}", None, 1.0) for _ in range(11)]
    assert verdicts[-2:] == [False, CLOSE_RATE_LIMITED] and verdicts.count(False) == 9  # one got the token left, then ten in a row


def test_a_frame_that_is_not_a_request_gets_an_error_with_its_id() -> None:
    wire = Wire()
    assert wire.session.parse('{"op": "subscribe", "id": 3, "channels": []}', None) is None
    [error] = wire.take()
    assert (error["code"], error["id"]) == ("bad_request", 3)


@pytest.mark.parametrize(
    ("names", "user", "anonymous", "code"),
    [
        (["ticker:NOPE"], None, True, "unknown_symbol"),
        (["tickr:BTC-USD"], None, True, "unknown_channel"),
        (["portfolio"], None, True, "not_authenticated"),
        (["ticker:BTC-USD"], None, False, "not_authenticated"),
        (["ticker:BTC-USD", "ticker:AAPL", "trades:AAPL", "trades:BTC-USD", "candles:AAPL@1m"], User(), True, "subscription_limit"),
    ],
)
def test_a_request_is_refused_whole_when_one_channel_is_bad(names: list[str], user: Any, anonymous: bool, code: str) -> None:
    wire = Wire(user=user)
    wire.session.limits = Limits(**{**LIMITS.__dict__, "anonymous": anonymous})
    with pytest.raises(Refused) as refused:
        wire.session.channels(names)
    assert refused.value.code == code


def test_channel_names_are_normalised_and_count_once() -> None:
    channels = Wire().session.channels(["book:BTC-USD@depth=010", "book:BTC-USD@depth=10", "ticker:AAPL"])
    assert [c.name for c in channels] == ["book:BTC-USD@depth=10", "ticker:AAPL"]


def test_a_subscribe_answers_ack_then_snapshots_then_what_waited_meanwhile_without_duplicates() -> None:
    wire = Wire()
    session = wire.session
    request = Request("subscribe", 1, channels=("ticker:BTC-USD",))
    [sub] = session.install(session.channels(request.channels), {}, 0)
    # Live messages that came while the history was read: 5 is in the snapshot, 6 and 7 are not.
    for seq in (5, 6, 7):
        assert session.deliver(tick(seq), frame_of(tick(seq))) is None
    assert wire.sent == []
    snapshot = {"type": "snapshot", "ch": "ticker:BTC-USD", "epoch": "e1", "seq": 5, "ts": 0, "data": {}}
    assert session.subscribed(request, [sub], {"ticker:BTC-USD": snapshot}) == []
    ack, snap, *updates = wire.take()
    assert (ack["type"], ack["id"], ack["channels"]) == ("ack", 1, [{"ch": "ticker:BTC-USD", "epoch": "e1", "seq": 5}])
    assert snap == snapshot
    assert [u["seq"] for u in updates] == [6, 7]
    assert not sub.syncing and sub.sent == ("e1", 7)


def test_live_messages_next_goes_out_as_encoded_a_duplicate_is_dropped_a_gap_asks_for_a_resync() -> None:
    wire = Wire()
    [] = subscribe(wire, "ticker:BTC-USD", snapshot_seq=1)
    wire.take()
    sub = wire.session.subs["ticker:BTC-USD"]
    assert wire.session.deliver(tick(2), "the hub's frame") is None
    assert wire.sent == ["the hub's frame"]  # not encoded again
    wire.sent.clear()
    assert wire.session.deliver(tick(2), "again") is None and wire.sent == []
    assert wire.session.deliver(tick(4), frame_of(tick(4))) is sub  # 3 was lost
    assert sub.syncing and sub.buffer == [(tick(4), frame_of(tick(4)))]
    assert wire.session.deliver(tick(5), frame_of(tick(5))) is None and len(sub.buffer) == 2  # waits behind the gap
    # The adapter filled the gap from the history: the buffer follows on.
    wire.session.filled(sub, [tick(3)])
    assert wire.session.drained(sub)
    assert [f["seq"] for f in wire.take()] == [3, 4, 5]


def test_a_new_epoch_is_a_gap() -> None:
    wire = Wire()
    subscribe(wire, "ticker:BTC-USD", snapshot_seq=9)
    sub = wire.session.subs["ticker:BTC-USD"]
    assert wire.session.deliver(tick(1, epoch="e2"), None) is sub


def test_a_snapshot_that_would_take_the_client_back_is_not_sent() -> None:
    wire = Wire()
    subscribe(wire, "ticker:BTC-USD", snapshot_seq=4)
    wire.take()
    sub = wire.session.subs["ticker:BTC-USD"]
    for seq in (3, 4):
        wire.session.snapshot_past(sub, {"type": "snapshot", "ch": sub.name, "epoch": "e1", "seq": seq, "ts": 0, "data": {}})
    assert wire.take() == []
    wire.session.snapshot_past(sub, {"type": "snapshot", "ch": sub.name, "epoch": "e1", "seq": 8, "ts": 0, "data": {}})
    assert [f["seq"] for f in wire.take()] == [8] and (sub.seq, sub.sent) == (8, ("e1", 8))


def test_a_throttled_channel_sends_the_first_asks_for_a_timer_and_merges_the_rest() -> None:
    wire = Wire()
    subscribe(wire, "ticker:BTC-USD", throttle_ms=500, snapshot_seq=0)
    wire.take()
    sub = wire.session.subs["ticker:BTC-USD"]
    for seq in (1, 2, 3):
        wire.session.deliver(tick(seq, last=str(seq)), frame_of(tick(seq)))
    assert [f["seq"] for f in wire.take()] == [1]
    assert wire.timers == [sub]  # one timer, asked once
    sub.timer = None  # the adapter's timer has fired
    wire.session.throttled(sub, 10.0)
    [merged] = wire.take()
    assert (merged["seq"], merged["first_seq"], merged["data"]["last"]) == (3, 2, "3")


def test_resuming_from_the_history_sends_exactly_the_missed_messages_then_what_waited() -> None:
    wire = Wire()
    session = wire.session
    request = Request("resume", 5, channels=("ticker:BTC-USD",), positions={"ticker:BTC-USD": ("e1", 3)})
    [sub] = session.install(session.channels(request.channels), {}, 0)
    assert isinstance(sub, MarketSub)
    session.deliver(tick(6), None)  # live, while the history was read
    assert session.resumed_from_history(request, sub, "e1", 3, [tick(4), tick(5)])
    resumed, *updates = wire.take()
    assert resumed == {"type": "resumed", "id": 5, "ch": "ticker:BTC-USD", "recovered": True, "epoch": "e1", "from_seq": 4, "seq": 5}
    assert [u["seq"] for u in updates] == [4, 5, 6]


def test_the_heartbeat_names_the_last_seq_sent_per_channel_and_missed_picks_the_live_ones() -> None:
    wire = Wire()
    subscribe(wire, "ticker:BTC-USD", "ticker:AAPL", snapshot_seq=2)
    wire.session.deliver(tick(3), None)
    wire.take()
    wire.session.heartbeat(123)
    [beat] = wire.take()
    assert beat == {
        "type": "heartbeat",
        "ts": 123,
        "channels": {"ticker:BTC-USD": {"epoch": "e1", "seq": 3}, "ticker:AAPL": {"epoch": "e1", "seq": 2}},
    }
    wire.session.subs["ticker:AAPL"].syncing = True  # already resynchronising: left alone
    assert [sub.name for sub in wire.session.missed(["ticker:BTC-USD", "ticker:AAPL", "ticker:MSFT"])] == ["ticker:BTC-USD"]


def test_a_closed_session_sends_nothing() -> None:
    wire = Wire()
    subscribe(wire, "ticker:BTC-USD", snapshot_seq=1)
    wire.take()
    wire.session.closed = True
    wire.session.deliver(tick(2), frame_of(tick(2)))
    wire.session.error("server_error", "x")
    assert wire.take() == []
