// The "Replay" badge in the page head. (#connection-status is drawn by ../staleness.js, the one
// connection and staleness rule every live page shares.)

/** Whether any price the views hold comes from a replayed session. */
export function anyReplayPrice(views) {
  return [...views.values()].some((view) => [...view.rows.values()].some((row) => row.price_replay === true));
}

/** "Replay" beside the connection status while any price shown comes from a replayed session. */
export function renderReplayBadge(views) {
  const badge = document.getElementById("replay-badge");
  if (!badge) return;
  badge.hidden = !anyReplayPrice(views);
}

