"""Site-wide odds and ends that belong to no app."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """/favicon.ico, which browsers ask for on their own: our SVG icon (base.html links it too)."""
    return HttpResponseRedirect(static("favicon.svg"))
