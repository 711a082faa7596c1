// The instrument page's price chart: candlesticks in a timeframe the user picks (1m, 5m, 15m, 1h, 1d), with
// volume in a pane of its own, zoom (wheel, pinch), pan (drag) and a crosshair whose bar the legend reads out.
// Drawn by lightweight-charts through ../charts.js.
//
// History comes from GET /market/<symbol>/candles/?tf= (the stored one-minute candles added up on the server, in
// UTC buckets; marketdata/timeframes.py) up to its `last_minute`; the live channel's one-minute candles after it
// are added up here into the same buckets, so the open bar of any timeframe keeps moving. A replay session's
// page (?session=) has no stored history: its bars are the session's channel minutes only.
//
// Older days on 1d have a daily close and nothing else: they are a line, not candles made up from one price.

import { CandlestickSeries, HistogramSeries, LineSeries, credit, htmlEl as el, makeChart, timeLabel, withAlpha } from "./charts.js";

export const TIMEFRAMES = [
  ["1m", 60_000, "1-minute"],
  ["5m", 300_000, "5-minute"],
  ["15m", 900_000, "15-minute"],
  ["1h", 3_600_000, "1-hour"],
  ["1d", 86_400_000, "daily"],
];
const STORAGE_KEY = "livefolio.instrument.timeframe";
// Live minutes kept past the stored history: a week of an open page.
const MINUTES_KEPT = 10_080;

function storageGet(key) {
  try {
    return window.localStorage.getItem(key);
  } catch (err) {
    return null; // storage disabled: nothing is remembered, nothing breaks
  }
}

function storageSet(key, value) {
  try {
    window.localStorage.setItem(key, value);
  } catch (err) {
    /* storage disabled or full */
  }
}

function decimalsOf(value) {
  const match = /\.(\d+)/.exec(String(value ?? ""));
  return match ? match[1].length : 0;
}

/** Bars folded into one: the first's open, the extremes, the last's close, summed volume and trades (decimal strings kept). */
function fold(start, parts) {
  let high = parts[0].high;
  let low = parts[0].low;
  let volume = 0;
  let trades = 0;
  for (const p of parts) {
    if (Number(p.high) > Number(high)) high = p.high;
    if (Number(p.low) < Number(low)) low = p.low;
    volume += Number(p.volume) || 0;
    trades += Number(p.trades) || 0;
  }
  const last = parts[parts.length - 1];
  return { start, open: parts[0].open, high, low, close: last.close, volume: String(volume), trades, closed: Boolean(last.closed) };
}

/**
 * The chart card. `formats`: price(s) and volume(s) of decimal strings for the legend, axis(n, decimals) for the
 * price scale. Call `setMinutes` with a candles snapshot, `addMinute` with each update, then `render()`
 * (instrument.js batches it to a frame).
 */
export function createCandleChart({ symbol, session = null, formats, fetchFn = (...args) => window.fetch(...args) }) {
  let timeframe = TIMEFRAMES.some(([key]) => key === storageGet(STORAGE_KEY)) ? storageGet(STORAGE_KEY) : "1m";
  let intervalMs = TIMEFRAMES.find(([key]) => key === timeframe)[1];
  let stored = new Map(); // bucket start → the server's bar for it
  let closes = []; // 1d: [{start, close}] of days with a daily close only
  let lastMinute = null; // the newest stored minute the server's bars include
  const minutes = new Map(); // the live channel's one-minute candles, start → candle
  let bars = []; // what is drawn, oldest first
  let dirty = new Set(); // buckets whose bar changed since the last render
  let everything = true; // or: redraw every bar (a snapshot, a timeframe's history, a late minute in a gap)
  let loaded = session !== null; // a session page has no stored history to wait for
  let request = null;
  let hovered = null;
  let precision = 2;
  let volumeColours = { up: "", down: "" };

  // ---- DOM: a head with the title, the timeframe buttons and the legend; the plot

  const buttons = TIMEFRAMES.map(([key, , label]) =>
    el("button", { type: "button", class: "segment", "data-timeframe": key, "aria-pressed": String(key === timeframe), title: `${label} candles`, text: key }),
  );
  const group = el("div", { class: "segmented segmented-sm candle-timeframes", role: "group", "aria-label": "Timeframe", "data-testid": "timeframes" }, ...buttons);
  const title = el("h2", { class: "chart-title", text: "Price" });
  const legend = el("div", { class: "chart-change candle-ohlc", "data-testid": "candle-ohlc", "aria-live": "off" });
  const head = el("header", { class: "chart-head" }, title, group);
  const canvas = el("div", { class: "chart-canvas" });
  const empty = el("div", { class: "chart-empty", hidden: "" }, el("span", { class: "chart-empty-text", text: "Waiting for the first trade" }));
  const plot = el("div", { class: "chart-plot candle-plot", role: "img", "aria-label": "Price chart" }, canvas, empty);
  const root = el(
    "div",
    { class: "value-chart candle-chart", "data-testid": "candle-chart", "data-candles": "0", "data-timeframe": timeframe, "data-interval-ms": String(intervalMs) },
    head,
    legend,
    plot,
    credit(),
  );

  // ---- the chart: candles and a close-only line on the price pane, volume on its own pane below

  const { chart, theme } = makeChart(canvas, {
    options: {
      rightPriceScale: { scaleMargins: { top: 0.08, bottom: 0.06 } },
      timeScale: { rightOffset: 4, minBarSpacing: 2 },
    },
    recolour: (t) => colour(t),
  });
  const candles = chart.addSeries(CandlestickSeries, { priceLineVisible: true });
  const closeLine = chart.addSeries(LineSeries, { lineWidth: 2, priceLineVisible: false, lastValueVisible: false, crosshairMarkerVisible: true });
  const volume = chart.addSeries(HistogramSeries, { priceFormat: { type: "volume" }, priceLineVisible: false, lastValueVisible: false }, 1);
  chart.panes()[0].setStretchFactor(4);
  chart.panes()[1].setStretchFactor(1);

  function colour(t) {
    volumeColours = { up: withAlpha(t.up, 0.45), down: withAlpha(t.down, 0.45) };
    candles.applyOptions({ upColor: t.up, downColor: t.down, borderUpColor: t.up, borderDownColor: t.down, wickUpColor: t.up, wickDownColor: t.down });
    closeLine.applyOptions({ color: t.text });
    if (bars.length) volume.setData(bars.map(volumeOf));
  }

  function volumeOf(bar) {
    const up = Number(bar.close) >= Number(bar.open);
    return { time: bar.start / 1000, value: Number(bar.volume) || 0, color: up ? volumeColours.up : volumeColours.down };
  }

  const candleOf = (bar) => ({ time: bar.start / 1000, open: Number(bar.open), high: Number(bar.high), low: Number(bar.low), close: Number(bar.close) });

  colour(theme());

  // ---- the legend: the hovered bar, else the last one

  function renderLegend() {
    const bar = hovered || bars[bars.length - 1] || null;
    legend.replaceChildren();
    if (!bar) {
      delete legend.dataset.direction;
      return;
    }
    const part = (label, value) => el("span", { class: "ohlc-part" }, el("span", { class: "ohlc-label", text: label }), String(value));
    const daily = intervalMs >= 86_400_000;
    const when = `${timeLabel(bar.start, { daily })}${bar === bars[bars.length - 1] && !bar.closed && !hovered ? " · open" : ""}`;
    if (bar.closeOnly) {
      legend.append(el("span", { class: "ohlc-time", text: when }), part("C", formats.price(bar.close)), el("span", { class: "ohlc-note", text: "daily close only" }));
      legend.dataset.direction = "flat";
      return;
    }
    legend.append(
      el("span", { class: "ohlc-time", text: when }),
      part("O", formats.price(bar.open)),
      part("H", formats.price(bar.high)),
      part("L", formats.price(bar.low)),
      part("C", formats.price(bar.close)),
      part("Vol", formats.volume(bar.volume)),
    );
    const open = Number(bar.open);
    const close = Number(bar.close);
    legend.dataset.direction = close > open ? "up" : close < open ? "down" : "flat";
  }

  const byTime = new Map(); // seconds → bar, for the crosshair
  chart.subscribeCrosshairMove((param) => {
    hovered = param.time === undefined || !param.point ? null : byTime.get(Number(param.time)) || null;
    renderLegend();
  });
  chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
    // What the browser tests read (and nothing else): which bars are in view after a zoom or a pan.
    if (!range) return;
    root.dataset.visibleFrom = range.from.toFixed(2);
    root.dataset.visibleTo = range.to.toFixed(2);
  });

  // ---- bars: the server's, with the live minutes after them folded in

  const bucketOf = (start) => Math.floor(start / intervalMs) * intervalMs;

  function liveMinutesIn(bucket) {
    const out = [];
    for (const [start, candle] of minutes) {
      if (start >= bucket && start < bucket + intervalMs && (lastMinute === null || start > lastMinute)) out.push(candle);
    }
    return out.sort((a, b) => a.start - b.start);
  }

  function barAt(bucket) {
    const parts = [];
    if (stored.has(bucket)) parts.push(stored.get(bucket));
    parts.push(...liveMinutesIn(bucket));
    return parts.length ? fold(bucket, parts) : null;
  }

  function rebuild() {
    const buckets = new Set(stored.keys());
    for (const start of minutes.keys()) if (lastMinute === null || start > lastMinute) buckets.add(bucketOf(start));
    bars = [...buckets].sort((a, b) => a - b).map(barAt);
  }

  function draw() {
    const lastStart = bars.length ? bars[bars.length - 1].start : -Infinity;
    // A bucket new to the chart but older than its last bar (a late minute in a gap) cannot be updated in: redraw.
    if (!everything && [...dirty].some((bucket) => bucket < lastStart && !byTime.has(bucket / 1000))) everything = true;
    if (everything) {
      rebuild();
      // The scale's decimals: as many as the prices have, at least 2, and fewer the larger the price (a mid of
      // 87,355.755 does not make a 89,000.000 axis).
      const recent = bars.length ? bars.slice(-50) : closes.slice(-50);
      const size = recent.length ? Math.abs(Number(recent[recent.length - 1].close)) : 1;
      const most = size >= 1000 ? 2 : size >= 1 ? 5 : 8;
      precision = Math.min(most, Math.max(2, ...recent.map((b) => Math.max(decimalsOf(b.close), decimalsOf(b.open ?? b.close)))));
      const priceFormat = { type: "custom", minMove: 10 ** -precision, formatter: (n) => formats.axis(n, precision) };
      candles.applyOptions({ priceFormat });
      closeLine.applyOptions({ priceFormat });
      candles.setData(bars.map(candleOf));
      volume.setData(bars.map(volumeOf));
      closeLine.setData(closes.map((c) => ({ time: c.start / 1000, value: Number(c.close) })));
      byTime.clear();
      for (const c of closes) byTime.set(c.start / 1000, { start: c.start, close: c.close, closeOnly: true, closed: true });
      for (const bar of bars) byTime.set(bar.start / 1000, bar);
      // The latest bars at a readable width: up to 120 of them, and room for 30 however few there are yet.
      const count = bars.length + closes.length;
      const slots = Math.min(Math.max(count, 30), 120);
      if (count) chart.timeScale().setVisibleLogicalRange({ from: count - slots, to: count + 3 });
    } else {
      for (const bucket of [...dirty].sort((a, b) => a - b)) {
        const bar = barAt(bucket);
        if (!bar) continue;
        const i = bars.findIndex((b) => b.start >= bucket);
        if (i === -1) bars.push(bar);
        else bars[i] = bar;
        byTime.set(bar.start / 1000, bar);
        const historical = bucket < lastStart;
        candles.update(candleOf(bar), historical);
        volume.update(volumeOf(bar), historical);
      }
    }
    everything = false;
    dirty = new Set();
  }

  function render() {
    if (!loaded) return; // the stored history first, so live minutes are not drawn as the whole chart
    draw();
    const last = bars[bars.length - 1];
    root.dataset.candles = String(bars.length);
    root.dataset.lastStart = last ? String(last.start) : "";
    root.dataset.lastClose = last ? String(last.close) : "";
    root.dataset.closes = String(closes.length);
    empty.hidden = bars.length + closes.length > 0;
    const label = TIMEFRAMES.find(([key]) => key === timeframe)[2];
    plot.setAttribute(
      "aria-label",
      last ? `${symbol}: ${bars.length} ${label} candles to ${timeLabel(last.start, { daily: intervalMs >= 86_400_000 })}; last ${formats.price(last.close)}` : `${symbol}: no candles yet`,
    );
    if (!hovered) renderLegend();
  }

  // ---- fetching a timeframe's history

  async function load() {
    request?.abort();
    if (session !== null) {
      loaded = true;
      everything = true;
      render();
      return;
    }
    const controller = new AbortController();
    request = controller;
    loaded = false;
    root.dataset.loading = "true";
    const url = `/market/${encodeURIComponent(symbol).replace(/%2F/gi, "/")}/candles/?tf=${encodeURIComponent(timeframe)}`;
    let body = null;
    try {
      const response = await fetchFn(url, { credentials: "same-origin", headers: { Accept: "application/json" }, signal: controller.signal });
      body = response.ok ? await response.json() : null;
      if (!response.ok) console.warn(`Livefolio: ${url} answered ${response.status}`);
    } catch (err) {
      if (controller.signal.aborted) return;
      console.warn(`Livefolio: ${url} failed`, err);
    }
    if (request !== controller) return;
    request = null;
    delete root.dataset.loading;
    // Without stored history (the server unreachable) the live minutes alone are drawn.
    stored = new Map((body?.bars || []).map((bar) => [Number(bar.start), { ...bar, start: Number(bar.start) }]));
    closes = Array.isArray(body?.closes) ? body.closes.map((c) => ({ start: Number(c.start), close: c.close })) : [];
    lastMinute = body && body.last_minute !== null && body.last_minute !== undefined ? Number(body.last_minute) : null;
    root.dataset.lastMinute = lastMinute === null ? "" : String(lastMinute);
    root.dataset.loaded = timeframe;
    loaded = true;
    everything = true;
    render();
  }

  function choose(key, { focus = false } = {}) {
    const entry = TIMEFRAMES.find(([k]) => k === key);
    if (!entry) return;
    if (focus) buttons.find((b) => b.dataset.timeframe === key)?.focus();
    if (key === timeframe && root.dataset.loaded === key) return;
    timeframe = key;
    intervalMs = entry[1];
    storageSet(STORAGE_KEY, key);
    for (const button of buttons) {
      const on = button.dataset.timeframe === key;
      button.setAttribute("aria-pressed", String(on));
      button.tabIndex = on ? 0 : -1;
    }
    root.dataset.timeframe = key;
    root.dataset.intervalMs = String(intervalMs);
    hovered = null;
    stored = new Map();
    closes = [];
    load();
  }

  group.addEventListener("click", (event) => {
    const button = event.target.closest("[data-timeframe]");
    if (button) choose(button.dataset.timeframe);
  });
  group.addEventListener("keydown", (event) => {
    const moves = { ArrowRight: 1, ArrowLeft: -1, Home: "first", End: "last" };
    const move = moves[event.key];
    if (move === undefined) return;
    event.preventDefault();
    const index = TIMEFRAMES.findIndex(([k]) => k === timeframe);
    const n = TIMEFRAMES.length;
    const next = move === "first" ? 0 : move === "last" ? n - 1 : (index + move + n) % n;
    choose(TIMEFRAMES[next][0], { focus: true });
  });
  for (const button of buttons) button.tabIndex = button.dataset.timeframe === timeframe ? 0 : -1;

  load();

  return {
    root,
    render,
    /** A candles snapshot: the channel's minutes replace those kept. */
    setMinutes(list) {
      minutes.clear();
      for (const candle of list) minutes.set(Number(candle.start), { ...candle, start: Number(candle.start) });
      everything = true;
    },
    /** One minute from the channel, new or changed. */
    addMinute(candle) {
      const start = Number(candle.start);
      if (!Number.isFinite(start)) return;
      minutes.set(start, { ...candle, start });
      if (minutes.size > MINUTES_KEPT) minutes.delete(Math.min(...minutes.keys()));
      if (lastMinute !== null && start <= lastMinute) return; // the stored history has it
      dirty.add(bucketOf(start));
    },
    choose,
    get timeframe() {
      return timeframe;
    },
    get intervalMs() {
      return intervalMs;
    },
    get bars() {
      return bars;
    },
    chart,
  };
}
