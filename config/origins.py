"""Origin checks for WebSocket handshakes: strict for pages' own streams, bot-friendly for the market API.

Cross-site WebSocket hijacking (CSWSH) is a browser attack: a page on another
site opens a WebSocket to us, and the browser attaches our session cookie. The
defence is the Origin header, which browsers always send on a WebSocket
handshake and which a page's script cannot remove or forge. So:

- an Origin that is present must be one of ALLOWED_HOSTS, whatever else the
  connection carries;
- a handshake with no Origin at all did not come from a browser. It is a bot
  (a script, a trading program), which can set any header it likes anyway, so
  the Origin says nothing about it. It carries no ambient credential either: a
  bot authenticates explicitly, with an API token in an `auth` frame.

`/ws/v1/market` serves bots, so it lets a missing Origin through
(`AllowedHostsBrowserOriginValidator`). `/ws/portfolio/` serves only the
dashboard page, so it keeps channels' strict `AllowedHostsOriginValidator`,
which refuses a missing Origin too. `OriginCheckByPath` picks one per path,
and a path it does not name gets the strict check.

A refused handshake is closed before it is accepted, which the server answers
with HTTP 403, exactly as channels' OriginValidator does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias
from urllib.parse import ParseResult

from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator

ASGIApp: TypeAlias = Any  # an ASGI application: async (scope, receive, send) -> None


class BrowserOriginValidator(OriginValidator):
    """channels' OriginValidator, except that a handshake without an Origin header passes.

    Matching a present Origin against the allowed list is channels' own
    (`validate_origin`); only the "no Origin" case differs. An Origin that is
    present but names no host (`null` from a sandboxed frame or a file: page,
    an empty value) is still refused.
    """

    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        if parsed_origin is None:
            # No Origin header: not a browser, so not a CSWSH attempt (see the module's docstring).
            return True
        return bool(super().valid_origin(parsed_origin))


def AllowedHostsBrowserOriginValidator(application: ASGIApp) -> BrowserOriginValidator:
    """BrowserOriginValidator allowing the hosts channels' AllowedHostsOriginValidator allows (ALLOWED_HOSTS)."""
    # Borrow the list channels builds, so both checks always allow the same hosts (its DEBUG default included).
    strict = AllowedHostsOriginValidator(application)
    return BrowserOriginValidator(application, strict.allowed_origins)


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
