"""Login throttling: django-axes, configured once for the login page, the admin and API tokens on the socket.

Axes counts failed logins in the database (`axes.AccessAttempt`, one row per
username, address and user agent) and locks out a username, or a client
address, once it has `AXES_FAILURE_LIMIT` failures none older than
`AXES_COOLOFF_TIME`. The address is `config.proxies.request_client_address`, the
rule every per-address limit uses. Staff see and lift lockouts in the admin
(deleting the rows of "Access attempts").

The socket's `auth` frame is a login without a username: `token_attempt` makes an
`HttpRequest` stand-in for its handshake, so axes counts a bad token against the
client's address through its ordinary `user_login_failed` path. One address
therefore has one budget of failures, whether it guesses passwords or tokens.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_failure_limit
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from config.proxies import scope_client_address

log = logging.getLogger(__name__)

# Marks the stand-in request of a socket token check (`token_attempt`).
SOCKET_AUTH_MARK = "livefolio_token_attempt"


def lockout_parameters(request: Any, credentials: Mapping[str, Any] | None = None) -> list[str]:
    """AXES_LOCKOUT_PARAMETERS: a username and an address are locked out separately (either one is enough).

    A token has no username, so a token attempt counts against its address only:
    counting it under "no username" would lock every token client out together.
    """
    if getattr(request, SOCKET_AUTH_MARK, False):
        return ["ip_address"]
    return ["username", "ip_address"]


def locked_until(request: HttpRequest, credentials: Mapping[str, Any] | None = None) -> datetime:
    """When a locked-out request's username and address may log in again.

    A row counts until its last failure is AXES_COOLOFF_TIME old, so a lockout ends
    when enough of the newest rows have expired that fewer than the limit remain.
    Attempts during a lockout do not extend it (AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT).
    """
    cool_off = get_cool_off(request) or timedelta(0)
    limit = get_failure_limit(request, credentials)
    handler = AxesProxyHandler.get_implementation()
    AxesProxyHandler.update_request(request)
    until = timezone.now()
    for attempts in handler.get_user_attempts(request, credentials):
        failures = 0
        for attempt_time, count in attempts.order_by("-attempt_time").values_list("attempt_time", "failures_since_start"):
            failures += count
            if failures >= limit:
                until = max(until, attempt_time + cool_off)
                break
    return until


def seconds_until(moment: datetime) -> int:
    return max(1, math.ceil((moment - timezone.now()).total_seconds()))


def lockout_response(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the login page again, status 429, saying when to try again (and `Retry-After`).

    Used for the admin's login too. Axes' async middleware passes its arguments
    shifted by one, so the credentials are read from the request, where axes keeps them.
    """
    credentials = getattr(request, "axes_credentials", None) or (credentials if isinstance(credentials, Mapping) else None)
    until = locked_until(request, credentials)
    seconds = seconds_until(until)
    username = (credentials or {}).get("username") or ""
    log.warning(
        "login refused, locked out: username %r from %s on %s until %s",
        username,
        getattr(request, "axes_ip_address", None),
        request.path,
        until.isoformat(timespec="seconds"),
    )
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "lockout": {"until": until, "minutes": math.ceil(seconds / 60)},
        "next": request.POST.get("next", "") if request.method == "POST" else "",
    }
    response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response


def token_attempt(scope: Mapping[str, Any]) -> HttpRequest:
    """A stand-in request for an `auth` frame on the socket whose handshake is `scope`, for axes.

    REMOTE_ADDR is already the client's address by our one rule (X-Forwarded-For
    from trusted proxies only), so `request_client_address` gives it back unchanged.
    """
    request = HttpRequest()
    request.path = request.path_info = str(scope.get("path", ""))
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())}
    request.META = {
        "REMOTE_ADDR": scope_client_address(scope),
        "PATH_INFO": request.path,
        "HTTP_USER_AGENT": headers.get("user-agent", "<unknown>"),
        "HTTP_ACCEPT": headers.get("accept", "<unknown>"),
    }
    setattr(request, SOCKET_AUTH_MARK, True)
    return request


@dataclass(frozen=True)
class TokenLogin:
    """What `token_login` found: the token's user, or none; `locked_for` (seconds) when the address is locked out."""

    user: Any = None
    locked_for: int | None = None


def token_login(*, scope: Mapping[str, Any], plaintext: Any, authenticate: Callable[[Any], Any]) -> TokenLogin:
    """Check an API token sent on the socket whose handshake is `scope`, under the login lockout (database; sync).

    A locked-out address is refused before the token is looked at, as the login
    page refuses a locked-out username before the password is. A bad token is a
    failed login of the address (axes' `user_login_failed`); the one that reaches
    the limit is answered as locked out already.
    """
    if not getattr(settings, "AXES_ENABLED", True):  # axes.conf fills in its defaults
        return TokenLogin(user=authenticate(plaintext))
    request = token_attempt(scope)
    credentials: dict[str, Any] = {"username": None}
    if not AxesProxyHandler.is_allowed(request, credentials):
        until = locked_until(request, credentials)
        log.warning(
            "API token refused, locked out: %s on %s until %s",
            request.META["REMOTE_ADDR"],
            request.path,
            until.isoformat(timespec="seconds"),
        )
        return TokenLogin(locked_for=seconds_until(until))
    user = authenticate(plaintext)
    if user is not None:
        return TokenLogin(user=user)
    user_login_failed.send(sender=__name__, credentials=credentials, request=request)
    if getattr(request, "axes_locked_out", False):
        return TokenLogin(locked_for=seconds_until(locked_until(request, credentials)))
    return TokenLogin()
