// One staleness rule for every live page (the dashboard, the instrument page): the connection badge
// (#connection-status) and `data-connection` on the page's root.
//
// The rule: while the socket is open, the page is **Stale** once no price has arrived for
// `staleAfterMs` — counted from the last price, or from the socket opening when none came since.
// "A price" is any market data the page shows: a dashboard snapshot or update, an instrument
// channel's snapshot or update (ticker, trades, candles, book). Heartbeats, pongs and errors prove
// the connection, not the prices, so they do not count.
//
// The threshold is the server's: LIVE_STALE_AFTER_MS (10 s by default; config/settings.py), which
// base.html puts on <body data-stale-after-ms>. One setting, so every page says the same thing at
// the same time (and a browser test can shorten it).
//
// What the server says about the prices shapes the words: when the last prices came from a replayed
// session, silence usually means the replay was paused or ended, not that the feed broke, and the
// badge says so ("Stale — replay sent no prices for N s").

export const DEFAULT_STALE_AFTER_MS = 10_000;

/** The page's threshold: <body data-stale-after-ms>, else the default. */
export function pageStaleAfterMs(doc = document) {
  const value = Number(doc.body ? doc.body.dataset.staleAfterMs : NaN);
  return Number.isFinite(value) && value > 0 ? value : DEFAULT_STALE_AFTER_MS;
}

/**
 * The connection indicator. It sets `indicator.dataset.state` and `root.dataset.connection` to one of
 * connecting | live | reconnecting | stale. Call `setConnectionState` with the socket's states,
 * `pricesArrived({ replay })` on every price, and `render()` about once a second (the stale check and
 * the reconnect countdown). `onLive()` runs whenever the socket (re)opens, before the indicator is drawn.
 */
export function createConnectionStatus({ root, indicator, now = () => Date.now(), staleAfterMs = pageStaleAfterMs(), onLive = () => {} }) {
  let connection = "connecting"; // socket-level: connecting | live | reconnecting | unauthenticated | stopped
  let retryAt = null;
  let lastPriceAt = null;
  let lastFromReplay = false;
  let shownState = null;
  let shownText = null;

  /** Prices arrived (`replay`: they came from a replayed session): the stale clock starts again. */
  function pricesArrived({ replay = false } = {}) {
    lastPriceAt = now();
    lastFromReplay = Boolean(replay);
  }

  /** What the indicator shows: one of connecting | live | reconnecting | stale, and its words. */
  function view() {
    const t = now();
    switch (connection) {
      case "live": {
        if (lastPriceAt !== null && t - lastPriceAt > staleAfterMs) {
          const secs = Math.floor((t - lastPriceAt) / 1000);
          const text = lastFromReplay ? `Stale — replay sent no prices for ${secs} s` : `Stale — no prices for ${secs} s`;
          return { state: "stale", text };
        }
        return { state: "live", text: "Live" };
      }
      case "reconnecting": {
        const secs = retryAt === null ? 0 : Math.max(0, Math.ceil((retryAt - t) / 1000));
        return { state: "reconnecting", text: secs > 0 ? `Reconnecting in ${secs} s…` : "Reconnecting…" };
      }
      case "unauthenticated":
        return { state: "stale", text: "Signed out — redirecting to log in…" };
      case "stopped":
        return { state: "stale", text: "Disconnected" };
      default:
        return { state: "connecting", text: "Connecting…" };
    }
  }

  function render() {
    const { state, text } = view();
    if (state !== shownState) {
      if (indicator) indicator.dataset.state = state;
      root.dataset.connection = state;
      shownState = state;
    }
    if (text !== shownText && indicator) {
      (indicator.querySelector(".status-text") || indicator).textContent = text;
      shownText = text;
    }
  }

  function setConnectionState(state, { retryAt: at = null } = {}) {
    connection = state;
    retryAt = at;
    if (state === "live") {
      lastPriceAt = now(); // the stale clock starts at open
      onLive();
    }
    render();
  }

  return { view, render, setConnectionState, pricesArrived, staleAfterMs };
}
