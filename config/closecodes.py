"""Let daphne send the registered close codes 1012 and 1013 (RFC 6455 §7.4, IANA "WebSocket Close Code Number Registry").

daphne closes a socket through autobahn's `sendClose`, which lets an application send only
1000 and 3000-4999, so `websocket.close` with 1013 ("try again later") raised inside the
application instead of closing. The codes a server is meant to send when it restarts (1012)
or cannot serve now (1013) are written as they are (autobahn's own `sendCloseFrame`); every
other code still goes through autobahn's check. Other ASGI servers (uvicorn) send them as is.

Installed by config/asgi.py; a no-op where daphne is not installed.
"""

from __future__ import annotations

from typing import Any

CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
REGISTERED = frozenset({CLOSE_SERVICE_RESTART, CLOSE_TRY_AGAIN_LATER})


def install() -> None:
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return
    original = WebSocketProtocol.serverClose
    if getattr(original, "livefolio", False):
        return

    def server_close(self: Any, code: int | None = None) -> None:
        if code in REGISTERED:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code)

    server_close.livefolio = True  # type: ignore[attr-defined]
    WebSocketProtocol.serverClose = server_close
