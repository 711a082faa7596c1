"""`marketdata.delivery.outbox`: clean-up that outlives its connection."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.exceptions

from marketdata.delivery import outbox


async def _fails(exc: BaseException) -> None:
    await asyncio.sleep(0)
    raise exc


async def _settled() -> None:
    await asyncio.wait(set(outbox._detached))
    await asyncio.sleep(0)  # the tasks' done callbacks


async def test_a_detached_clean_up_failing_because_redis_is_down_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="marketdata.delivery.outbox")
    outbox.close_detached(_fails(redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")))
    await asyncio.wait_for(_settled(), timeout=5)
    [record] = [r for r in caplog.records if r.name == "marketdata.delivery.outbox"]
    assert record.levelno == logging.WARNING
    assert "clean-up of a closed connection failed: ConnectionError: Error 111" in record.getMessage()


async def test_a_detached_clean_up_failing_otherwise_is_logged_as_an_error_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="marketdata.delivery.outbox")
    outbox.close_detached(_fails(KeyError("bug")))
    await asyncio.wait_for(_settled(), timeout=5)
    [record] = [r for r in caplog.records if r.name == "marketdata.delivery.outbox"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is KeyError
