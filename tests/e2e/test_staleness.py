"""static/js/staleness.js, in Chromium: the dashboard and an instrument page say "Stale" after the same
silence — the one threshold, LIVE_STALE_AFTER_MS, set short here (1.5 s) so the test is quick.

No feed runs: each page gets its snapshot on connect and then nothing. The time of the last data
frame each page received and the moment its badge turned stale are recorded in the page (a WebSocket
wrapper and an observer injected through DevTools), so the silence each page waited is measured, not
guessed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings

from tests.e2e.conftest import BROWSER_TEST, log_in, wait_for_js
from tests.servers import restartable_daphne

pytestmark = BROWSER_TEST

STALE_AFTER_MS = 1500
# The badge is redrawn once a second, so it turns stale up to a second after the threshold passes.
REDRAW_MS = 1000

# Data frames only: a dashboard's snapshot/update, a market channel's snapshot/update (also inside a
# batch). Hello, ack, heartbeat and pong prove the connection, not the prices, and do not count.
RECORD = """
(() => {
  window.lastDataAt = null;
  window.staleAt = null;
  const Native = window.WebSocket;
  const isData = (frame) => frame && (frame.type === "snapshot" || frame.type === "update" ||
    (frame.type === "batch" && (frame.messages || []).some(isData)));
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        try { if (isData(JSON.parse(event.data))) window.lastDataAt = Date.now(); } catch (err) {}
      });
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    const badge = document.getElementById("connection-status");
    if (!badge) return;
    new MutationObserver(() => {
      if (badge.dataset.state === "stale" && window.staleAt === null) window.staleAt = Date.now();
    }).observe(badge, { attributes: true, attributeFilter: ["data-state"] });
  });
})();
"""


# `demo` before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_the_dashboard_and_an_instrument_page_turn_stale_after_the_same_silence(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    env = {"LIVE_STALE_AFTER_MS": str(STALE_AFTER_MS)}
    with restartable_daphne(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, env=env) as daphne:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
        context.add_init_script(RECORD)
        dashboard = context.new_page()
        log_in(dashboard, daphne.url, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)
        instrument = context.new_page()
        instrument.goto(f"{daphne.url}/market/BTC-USD/")

        silences = {}
        texts = {}
        for name, page in (("dashboard", dashboard), ("instrument", instrument)):
            assert page.evaluate("document.body.dataset.staleAfterMs") == str(STALE_AFTER_MS)
            status = page.locator("#connection-status")
            expect(status).to_have_attribute("data-state", "stale", timeout=10_000)
            wait_for_js(page, "window.staleAt !== null && window.lastDataAt !== null")
            silences[name] = page.evaluate("window.staleAt - window.lastDataAt")
            texts[name] = status.inner_text()

        for name, silence in silences.items():
            assert STALE_AFTER_MS <= silence <= STALE_AFTER_MS + REDRAW_MS + 400, (name, silences)
        assert abs(silences["dashboard"] - silences["instrument"]) <= REDRAW_MS + 200, silences
        # The same words on both, from the same rule.
        for text in texts.values():
            assert re.fullmatch(r"Stale — no prices for \d+ s", text.strip()), texts

        # Prices from a replay (as the server marks them, `price_replay`): Live again, and when they stop,
        # the badge says the replay went quiet rather than that the feed broke.
        status = dashboard.locator("#connection-status")
        dashboard.evaluate(
            """() => {
              const d = window.livefolioDashboard;
              const view = d.views.get(d.selectedView);
              const row = [...view.rows.values()].find((r) => r.kind !== "cash");
              d.applyFrame({type: "update", portfolios: [{id: view.id, rows: [{key: row.key, price_replay: true}]}]});
              d.tick();
            }"""
        )
        expect(status).to_have_attribute("data-state", "live")
        expect(status).to_have_text(re.compile(r"Stale — replay sent no prices for \d+ s"), timeout=5_000)
        context.close()
