"""`make run`'s Redis: an embedded server only where it can stand in for the configured one."""

from __future__ import annotations

import pytest

from config.devstack import ensure_redis, redis_answers

NOBODY = "redis://127.0.0.1:1/0"  # port 1: nothing answers


@pytest.mark.parametrize(
    ("url", "sentinels"),
    [(NOBODY, "127.0.0.1:2,127.0.0.1:3"), (f"{NOBODY},redis://127.0.0.1:2/0", "")],
    ids=["sentinel", "shards"],
)
def test_redis_behind_sentinel_or_over_shards_is_used_as_configured(url: str, sentinels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", sentinels)
    with ensure_redis(url, log=False) as used:
        assert used == url
        assert not redis_answers(NOBODY)  # nothing was started in their place


def test_a_single_redis_that_does_not_answer_is_replaced_by_an_embedded_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_SENTINELS", raising=False)
    assert not redis_answers(NOBODY)
    with ensure_redis(NOBODY, log=False) as used:
        assert redis_answers(used)
