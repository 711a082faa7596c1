"""What the browser tests share about pages: the two screen sizes, screenshots at both, and the dashboard's ratio text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SIZES = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


def shoot(page: Any, directory: Path, name: str, *, redraw_ms: int = 0) -> None:
    """The page at both sizes (full height) as `directory/<name>-<size>.png`, then back to the desktop size.

    `redraw_ms`: a pause after each resize, for pages whose charts redraw on the resize observer's next frame."""
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        if redraw_ms:
            page.wait_for_timeout(redraw_ms)
        page.screenshot(path=str(directory / f"{name}-{size}.png"), full_page=True)
    page.set_viewport_size(SIZES["desktop"])


def ratio_text(ratio: float) -> str:
    """What the dashboard shows for a ratio (formatPercent of the % to two places, en-US)."""
    return f"{ratio * 100:+.2f} %" if round(ratio * 100, 2) != 0 else "0.00 %"
