"""What every page's template needs from the settings (base.html)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def live_pages(request: HttpRequest) -> dict[str, int]:
    """The one staleness threshold of the live pages, for <body data-stale-after-ms> (static/js/staleness.js)."""
    return {"live_stale_after_ms": settings.LIVE_STALE_AFTER_MS}
