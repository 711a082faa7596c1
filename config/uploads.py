"""Keep daphne from parsing form uploads itself: Django does, from the body daphne passes on.

Twisted's `http.Request` parses every multipart/form-data POST body into `request.args`
as soon as it has arrived (`parsePOSTFormSubmission`, on by default), through the
`email` parser, whole, in memory, on the event loop. daphne never reads `request.args`:
it hands the raw body to the application, and Django parses it again (to temporary
files beyond FILE_UPLOAD_MAX_MEMORY_SIZE). That first parse held a 10 MB upload
several times over in daphne's memory (+100 MB at its peak) and stopped the event
loop, and every other request with it, while it ran. Twisted documents the switch:
"This can use large amounts of memory for large uploads."

Installed by config/asgi.py; a no-op where daphne is not installed.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    try:
        from daphne import http_protocol
    except ImportError:
        return
    if getattr(http_protocol.WebRequest, "livefolio", False):
        return

    class WebRequest(http_protocol.WebRequest):
        livefolio = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

    # daphne's HTTPFactory builds each request from this module-level name.
    http_protocol.WebRequest = WebRequest
