// The one door to TradingView's lightweight-charts (static/vendor/lightweight-charts.mjs, put there by make from
// package-lock.json; Apache-2.0): the charts of the instrument page (candle-chart.js) and the dashboard
// (dashboard/value-chart.js) are made here, so they share fonts, time formats and the theme.
//
// Theming contract: every colour comes from CSS custom properties on the chart's element (light defaults in
// static/css/app.css, "chart theme"): --chart-up, --chart-down, --chart-line, --chart-compare, --chart-grid,
// --chart-text, --chart-crosshair, --chart-border. They are read again when the document fires
// `livefolio:themechange` and when the system's colour scheme changes, and every chart is recoloured.

import {
  AreaSeries,
  CandlestickSeries,
  ColorType,
  CrosshairMode,
  HistogramSeries,
  LineSeries,
  TickMarkType,
  createChart,
} from "../vendor/lightweight-charts.mjs";

export { AreaSeries, CandlestickSeries, HistogramSeries, LineSeries };

export const THEME_EVENT = "livefolio:themechange";

const THEME_VARS = {
  up: ["--chart-up", "#16a36b"],
  down: ["--chart-down", "#d03a4c"],
  line: ["--chart-line", "#2356d8"],
  compare: ["--chart-compare", "#f0a020"],
  grid: ["--chart-grid", "#edf1f6"],
  text: ["--chart-text", "#8a96a8"],
  crosshair: ["--chart-crosshair", "#8a96a8"],
  border: ["--chart-border", "#cfd7e3"],
};

/** An HTML element with attributes (`class`, `text` as textContent) and children; null/undefined attributes are left out. */
export function htmlEl(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

let probe;

/**
 * Any CSS colour as [r, g, b, a] (0–255, alpha 0–1), through a 1×1 canvas: the library parses hex, rgb() and
 * hsl() only, while a theme may say oklch() or color-mix(). Null when the browser does not take it as a colour.
 */
function rgbaOf(colour) {
  if (!probe) probe = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  if (!probe || !colour) return null;
  probe.fillStyle = "#010203";
  probe.fillStyle = colour;
  if (probe.fillStyle === "#010203" && colour.replace(/\s/g, "").toLowerCase() !== "#010203") return null;
  probe.clearRect(0, 0, 1, 1);
  probe.fillRect(0, 0, 1, 1);
  const [r, g, b, a] = probe.getImageData(0, 0, 1, 1).data;
  return [r, g, b, a / 255];
}

/** `colour` at `alpha` × its own opacity, as rgba(). */
export function withAlpha(colour, alpha) {
  const rgba = rgbaOf(colour) || [128, 128, 128, 1];
  return `rgba(${rgba[0]}, ${rgba[1]}, ${rgba[2]}, ${Math.round(rgba[3] * alpha * 1000) / 1000})`;
}

/**
 * The chart colours as the CSS says them for `node` now (rgba strings), and its font family. A node not yet in the
 * page (a chart being built) has no computed style: the page's body is read instead, which carries the theme.
 */
export function readTheme(node = document.body) {
  const style = getComputedStyle(node.isConnected ? node : document.body);
  const theme = {};
  for (const [key, [name, fallback]] of Object.entries(THEME_VARS)) {
    const rgba = rgbaOf(style.getPropertyValue(name).trim()) || rgbaOf(fallback);
    theme[key] = `rgba(${rgba[0]}, ${rgba[1]}, ${rgba[2]}, ${Math.round(rgba[3] * 1000) / 1000})`;
  }
  theme.font = style.fontFamily || "system-ui, sans-serif";
  return theme;
}

/** Calls `fn` when the page's theme changes: the app's own event, or the system's light/dark preference. */
export function onThemeChange(fn) {
  document.addEventListener(THEME_EVENT, fn);
  const media = typeof window.matchMedia === "function" ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  media?.addEventListener("change", fn);
  return () => {
    document.removeEventListener(THEME_EVENT, fn);
    media?.removeEventListener("change", fn);
  };
}

// ---------------------------------------------------------------- time labels

const formats = new Map();

function dateFormat(options) {
  const key = JSON.stringify(options);
  let format = formats.get(key);
  if (!format) {
    format = new Intl.DateTimeFormat(undefined, options);
    formats.set(key, format);
  }
  return format;
}

/**
 * Tick labels for the time axis. Intraday charts (`utc: false`) show the viewer's local clock; daily ones
 * are in UTC days (their points are UTC midnights). The library picks which ticks to label; this names them.
 */
function tickMarkFormatter(utc) {
  const zone = utc ? { timeZone: "UTC" } : {};
  return (time, type) => {
    const date = new Date(Number(time) * 1000);
    switch (type) {
      case TickMarkType.Year:
        return dateFormat({ year: "numeric", ...zone }).format(date);
      case TickMarkType.Month:
        return dateFormat({ month: "short", ...zone }).format(date);
      case TickMarkType.DayOfMonth:
        return dateFormat({ day: "numeric", month: "short", ...zone }).format(date);
      default:
        return dateFormat({ hour: "2-digit", minute: "2-digit", hourCycle: "h23", ...zone }).format(date);
    }
  };
}

/** What the crosshair's time label says: the date and, intraday, the local time. */
export function timeLabel(ms, { daily = false } = {}) {
  const date = new Date(ms);
  if (daily) return dateFormat({ day: "numeric", month: "short", year: "numeric", timeZone: "UTC" }).format(date);
  return dateFormat({ day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(date);
}

// ---------------------------------------------------------------- charts

/** The attribution lightweight-charts' licence asks for: its name and a link to TradingView, under a chart. */
export function credit() {
  return htmlEl(
    "p",
    { class: "chart-credit" },
    "Charts: ",
    htmlEl("a", { href: "https://www.tradingview.com/", rel: "noopener noreferrer", target: "_blank", text: "TradingView Lightweight Charts™" }),
  );
}

function themedOptions(theme) {
  return {
    layout: {
      background: { type: ColorType.Solid, color: "transparent" },
      textColor: theme.text,
      fontFamily: theme.font,
      fontSize: 11,
      panes: { separatorColor: theme.grid, separatorHoverColor: withAlpha(theme.crosshair, 0.25) },
    },
    grid: { vertLines: { color: theme.grid }, horzLines: { color: theme.grid } },
    rightPriceScale: { borderColor: theme.border },
    timeScale: { borderColor: theme.border },
    crosshair: {
      vertLine: { color: theme.crosshair, labelBackgroundColor: theme.text },
      horzLine: { color: theme.crosshair, labelBackgroundColor: theme.text },
    },
  };
}

/**
 * A chart in `container`, sized to it (autoSize), themed from the CSS, recoloured on theme changes: then
 * `recolour(theme)` is called for the caller's series. `daily`: the time axis is in UTC days.
 * `options` are the library's, merged over these. Returns { chart, theme() }.
 */
export function makeChart(container, { daily = false, options = {}, recolour = () => {} } = {}) {
  let theme = readTheme(container);
  const base = themedOptions(theme);
  const chart = createChart(container, {
    autoSize: true,
    ...base,
    ...options,
    // The library's own logo link would inject a <style> element, which the Content-Security-Policy refuses;
    // the attribution its licence asks for is `credit()` under each chart instead.
    layout: { ...base.layout, attributionLogo: false, ...(options.layout || {}) },
    crosshair: { mode: CrosshairMode.Normal, ...base.crosshair, ...(options.crosshair || {}) },
    localization: { timeFormatter: (time) => timeLabel(Number(time) * 1000, { daily }), ...(options.localization || {}) },
    timeScale: {
      ...base.timeScale,
      timeVisible: !daily,
      secondsVisible: false,
      tickMarkFormatter: tickMarkFormatter(daily),
      ...(options.timeScale || {}),
    },
  });
  onThemeChange(() => {
    theme = readTheme(container);
    chart.applyOptions(themedOptions(theme));
    recolour(theme);
  });
  return {
    chart,
    theme: () => theme,
  };
}
