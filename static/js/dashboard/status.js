// The badges in the page head: #connection-status (connecting, live, reconnecting with a
// countdown, or stale when no frame has come for a while) and the "Replay" badge.

/**
 * The connection indicator. It also sets `root.dataset.connection`. `onLive()` runs
 * whenever the socket (re)opens, before the indicator is drawn.
 */
export function createConnectionStatus({ root, indicator, now, staleAfterMs, onLive }) {
  let connection = "connecting"; // socket-level: connecting | live | reconnecting | unauthenticated | stopped
  let retryAt = null;
  let lastFrameAt = null;
  let shownState = null;
  let shownText = null;

  /** A frame arrived: the stale clock starts again. */
  function frameArrived() {
    lastFrameAt = now();
  }

  /** What the indicator shows: one of connecting | live | reconnecting | stale, and its words. */
  function indicatorView() {
    const t = now();
    switch (connection) {
      case "live": {
        if (lastFrameAt !== null && t - lastFrameAt > staleAfterMs) {
          const secs = Math.floor((t - lastFrameAt) / 1000);
          return { state: "stale", text: `Stale — no prices for ${secs} s` };
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

  function renderIndicator() {
    const { state, text } = indicatorView();
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
      lastFrameAt = now(); // the stale clock starts at open
      onLive();
    }
    renderIndicator();
  }

  return { view: indicatorView, render: renderIndicator, setConnectionState, frameArrived };
}

/** "Replay" beside the connection status while any price shown comes from a replayed session. */
export function renderReplayBadge(views) {
  const badge = document.getElementById("replay-badge");
  if (!badge) return;
  badge.hidden = ![...views.values()].some((view) => [...view.rows.values()].some((row) => row.price_replay === true));
}

