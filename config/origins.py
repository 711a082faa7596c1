"""Origin checks for WebSocket handshakes: a page may open our sockets only from our own origin.

Cross-site WebSocket hijacking (CSWSH) is a browser attack: a page on another
site opens a WebSocket to us, and the browser attaches our session cookie. The
defence is the Origin header, which browsers always send on a WebSocket
handshake and which a page's script cannot remove or forge. So:

- an Origin that is present must be the handshake's own origin (scheme, host
  and port), or one of CSRF_TRUSTED_ORIGINS, whatever else the connection
  carries. This is the rule Django's CSRF check applies to our forms
  (`CsrfViewMiddleware._origin_verified`): the page that may post a form is
  the page that may open a socket. Comparing hosts only (channels'
  `AllowedHostsOriginValidator`) let `http://127.0.0.1:1`, any other port on
  our host, and an `http://` page of an `https://` site in;
- a handshake with no Origin at all did not come from a browser. It is a bot
  (a script, a trading program), which can set any header it likes anyway, so
  the Origin says nothing about it. It carries no ambient credential either: a
  bot authenticates explicitly, with an API token in an `auth` frame.

The handshake's own origin is `http(s)://` + its Host header. The Host must be
in ALLOWED_HOSTS (as Django requires of every request), else there is no own
origin: that refuses a DNS-rebinding page, whose Origin and Host agree on a
name that is not ours. The scheme is `https` when the socket came over TLS
(`wss`), or when SECURE_PROXY_SSL_HEADER says so, read exactly as Django reads
it for `request.is_secure()`, so a page and its socket get one verdict. The
proxy header is believed from anyone, as Django believes it: a browser cannot
set it on a handshake, so a forged one comes from a bot, which could forge the
Origin too.

`/ws/v1/market` serves bots, so it lets a missing Origin through
(`SameOriginValidator(app, allow_missing=True)`). `/ws/portfolio/` serves only
the dashboard page, so it refuses a missing Origin too. `OriginCheckByPath`
picks one per path, and a path it does not name gets the strict check.

A refused handshake is closed before it is accepted, which the server answers
with HTTP 403, exactly as channels' OriginValidator does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

ASGIApp: TypeAlias = Any  # an ASGI application: async (scope, receive, send) -> None

log = logging.getLogger(__name__)

# What Django allows when DEBUG is on and ALLOWED_HOSTS is empty (HttpRequest.get_host).
_DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def scope_is_secure(scope: Mapping[str, Any]) -> bool:
    """Whether the handshake came over TLS: `wss`, or SECURE_PROXY_SSL_HEADER as Django reads it."""
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        meta_name, secure_value = proxy_header
        # Django's META name (HTTP_X_FORWARDED_PROTO) of the header x-forwarded-proto.
        name = meta_name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        value = _header(scope, name)
        if value is not None:
            return bool(value.split(",", 1)[0].strip() == secure_value)
    return scope.get("scheme") in ("wss", "https")


def scope_origin(scope: Mapping[str, Any]) -> str | None:
    """The handshake's own origin, `http(s)://host[:port]`; None without a Host header in ALLOWED_HOSTS."""
    host = _header(scope, b"host")
    if not host:
        return None
    domain, _port = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS or (_DEBUG_HOSTS if settings.DEBUG else [])
    if not domain or not validate_host(domain, allowed_hosts):
        return None
    return f"{'https' if scope_is_secure(scope) else 'http'}://{host}"


def trusted_origin(origin: str) -> bool:
    """Whether `origin` is one of CSRF_TRUSTED_ORIGINS (`https://*.example.com` covering its subdomains, as for CSRF)."""
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in trusted:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    for entry in trusted:
        if "*" not in entry:
            continue
        allowed = urlsplit(entry)
        if allowed.scheme == parsed.scheme and is_same_domain(parsed.netloc, allowed.netloc.lstrip("*")):
            return True
    return False


def origin_allowed(scope: Mapping[str, Any], *, allow_missing: bool) -> bool:
    """The verdict on one handshake (see the module's docstring)."""
    origin = _header(scope, b"origin")
    if origin is None:
        # No Origin header: not a browser, so not a CSWSH attempt.
        return allow_missing
    # `null` (a sandboxed frame, a file: page) and an empty value equal no origin of ours and no trusted one.
    return origin == scope_origin(scope) or trusted_origin(origin)


class SameOriginValidator:
    """Lets a WebSocket handshake through only from the page's own origin or a trusted one.

    `allow_missing` lets a handshake without an Origin header (a bot's) through.
    Anything that is not a WebSocket passes untouched.
    """

    def __init__(self, application: ASGIApp, *, allow_missing: bool = False) -> None:
        self.application = application
        self.allow_missing = allow_missing

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope, allow_missing=self.allow_missing):
            # Logged: a proxy that rewrites Host, or a page on a new origin, shows up here and nowhere else.
            log.warning(
                "WebSocket handshake to %s refused (HTTP 403): Origin %r is not the socket's own origin %r nor in CSRF_TRUSTED_ORIGINS",
                scope.get("path", ""),
                _header(scope, b"origin"),
                scope_origin(scope),
            )
            # Closed before accept: the server answers the upgrade with HTTP 403.
            await WebsocketDenier.as_asgi()(scope, receive, send)
            return
        await self.application(scope, receive, send)


class OriginCheckByPath:
    """Routes a WebSocket handshake to the origin check named for its path, or to `default` for any other path.

    Paths are matched whole (after the root path), like `path()` routes:
    `{"/ws/v1/market": ...}` does not cover `/ws/v1/market/x`. Put it in front
    of the URL router: a check sees the same scope the router will.
    """

    def __init__(self, checks: Mapping[str, ASGIApp], *, default: ASGIApp) -> None:
        self.checks = {"/" + path.lstrip("/"): app for path, app in checks.items()}
        self.default = default

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        check = self.checks.get("/" + path.lstrip("/"))
        await (self.default if check is None else check)(scope, receive, send)
