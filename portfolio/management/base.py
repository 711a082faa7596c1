"""Shared by the portfolio app's management commands."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError

from portfolio.models import Portfolio


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the command like Ctrl-C: the open database transaction rolls back."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread (e.g. under a test server)
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def portfolio_get(portfolio_id: int) -> Portfolio:
    try:
        return Portfolio.objects.get(pk=portfolio_id)
    except Portfolio.DoesNotExist:
        raise CommandError(f"no portfolio with id {portfolio_id}") from None
