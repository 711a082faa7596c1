"""HTTP pages while the database is down: 503 with a clear page and Retry-After, not a 500 and a stack trace.

A view (or the session and user it loads on the way) that cannot reach the database raises
`OperationalError`/`InterfaceError`; this middleware answers those with 503. The page is
rendered without a request context, so nothing on it needs the database. Other errors are
left to Django (500).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from config import metrics

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        metrics.DATABASE_ERRORS.labels("web").inc()
        log.warning("the database is unreachable (%s: %s): %s answered 503", type(exception).__name__, exception, request.path)
        response = HttpResponse(render_to_string("503.html"), status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        response["Cache-Control"] = "no-store"
        return response
