// A view as the page keeps it (a portfolio, or "combined" = all portfolios): the last
// known totals/rows/allocation and its value series, and how a frame's patch changes it.

import { toNumber } from "./format.js";

export const COMBINED = "combined";
// Live points between the minute history: at most one per LIVE_POINT_MS, the head moves in between.
const LIVE_POINT_MS = 5_000;
const HISTORY_SPAN_MS = 24 * 60 * 60 * 1000;

/** Row weights come from the allocation by instrument, which every frame carries whole, so no row's weight goes stale. */
function syncWeights(view) {
  const slices = Array.isArray(view.allocation && view.allocation.instrument) ? view.allocation.instrument : [];
  const weights = new Map(slices.map((slice) => [String(slice.key), slice.weight]));
  for (const [key, row] of view.rows) row.weight = weights.has(key) ? weights.get(key) : null;
}

export function viewModel(raw, currencyFallback) {
  const rows = new Map();
  for (const row of Array.isArray(raw.rows) ? raw.rows : []) rows.set(String(row.key), { ...row });
  const series = [];
  for (const point of Array.isArray(raw.history) ? raw.history : []) {
    const ts = Number(point[0]);
    const value = toNumber(point[1]);
    if (Number.isFinite(ts) && value !== null) series.push([ts, value]);
  }
  const view = {
    id: String(raw.id),
    name: raw.name || (String(raw.id) === COMBINED ? "All portfolios" : `Portfolio ${raw.id}`),
    currency: raw.currency || currencyFallback || "",
    totals: { ...(raw.totals || {}) },
    allocation: raw.allocation || {},
    rows,
    series,
    // Combined view only, from snapshots: past figures converted at today's rate for want of FX history.
    pastFx: Array.isArray(raw.past_fx) ? raw.past_fx : [],
    lastLiveAt: null, // when the newest live point was appended; null: the head is history
  };
  syncWeights(view);
  return view;
}

/** Holdings in server order, then cash rows. */
export function orderedRows(view) {
  const rows = [...view.rows.values()];
  return [...rows.filter((r) => r.kind !== "cash"), ...rows.filter((r) => r.kind === "cash")];
}

/** Add the view's current total to its value line: append every LIVE_POINT_MS, else move the head. */
function pushLivePoint(view, at) {
  const value = toNumber(view.totals.total_value);
  if (value === null) return;
  const series = view.series;
  const last = series[series.length - 1];
  const ts = last ? Math.max(at, last[0]) : at; // a client clock behind the server's must not draw backwards
  if (view.lastLiveAt !== null && last && at - view.lastLiveAt < LIVE_POINT_MS) {
    last[0] = ts;
    last[1] = value;
    return;
  }
  series.push([ts, value]);
  view.lastLiveAt = at;
  while (series.length > 2 && series[0][0] < ts - HISTORY_SPAN_MS) series.shift();
}

/** Merge an update frame's patch for this view; a patch with totals extends the value line. */
export function mergeView(view, patch, at) {
  if (patch.totals) view.totals = { ...view.totals, ...patch.totals };
  if (patch.allocation) view.allocation = patch.allocation;
  for (const row of Array.isArray(patch.rows) ? patch.rows : []) {
    const key = String(row.key);
    view.rows.set(key, { ...(view.rows.get(key) || {}), ...row });
  }
  syncWeights(view);
  if (patch.totals) pushLivePoint(view, at);
}
