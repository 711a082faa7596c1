// Hand-written SVG charts for the dashboard: an intraday value line and an allocation donut.
//
// Both keep their SVG nodes for their whole life and only rewrite attributes when new
// data arrives, so a live update moves the picture without re-creating (or flickering)
// anything. Formatting is passed in by the caller: the charts know numbers, not money.

const SVG_NS = "http://www.w3.org/2000/svg";
let instances = 0;

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  return node;
}

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

const round1 = (n) => Math.round(n * 10) / 10;

let measureContext;

/** Rendered width of `text`; SVG text can't be measured before it is in the document. */
function textWidth(text, font) {
  if (measureContext === undefined) measureContext = document.createElement("canvas").getContext("2d");
  if (!measureContext) return text.length * 6.6;
  measureContext.font = font;
  return measureContext.measureText(text).width;
}

/** Calls `fn` whenever `node` changes size (and once the first time it has one). */
function watchSize(node, fn) {
  if (typeof ResizeObserver === "function") {
    const observer = new ResizeObserver(() => fn());
    observer.observe(node);
    return () => observer.disconnect();
  }
  window.addEventListener("resize", fn);
  return () => window.removeEventListener("resize", fn);
}

// ---------------------------------------------------------------- scales

/** The smallest of 1, 2, 2.5, 5 × 10^k that is at least `raw`. */
function niceStep(raw) {
  const base = 10 ** Math.floor(Math.log10(raw));
  const f = raw / base;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * base;
}

/**
 * 3–5 round y ticks covering [min, max]: { lo, hi, step, ticks }. A flat series is
 * padded so it draws mid-height instead of on an edge.
 */
export function niceTicks(min, max, maxTicks = 5) {
  if (!(max > min)) {
    const pad = Math.max(Math.abs(min) * 0.002, 1);
    min -= pad;
    max += pad;
  }
  let step = niceStep((max - min) / (maxTicks - 1));
  let lo;
  let hi;
  for (;;) {
    lo = Math.floor(min / step) * step;
    hi = Math.ceil(max / step) * step;
    if (Math.round((hi - lo) / step) + 1 <= maxTicks) break;
    step = niceStep(step * 1.0001 + Number.EPSILON);
  }
  const decimals = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  const count = Math.round((hi - lo) / step);
  const ticks = [];
  for (let i = 0; i <= count; i += 1) ticks.push(Number((lo + i * step).toFixed(decimals)));
  return { lo, hi, step, ticks };
}

const TIME_STEPS_MIN = [1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720, 1440];

/** Round local-time ticks (HH:00, HH:30, …) between t0 and t1, at most `maxTicks` of them. */
export function timeTicks(t0, t1, maxTicks) {
  const span = Math.max(1, t1 - t0);
  let stepMs = TIME_STEPS_MIN[TIME_STEPS_MIN.length - 1] * 60_000;
  for (const minutes of TIME_STEPS_MIN) {
    if (span / (minutes * 60_000) <= maxTicks) {
      stepMs = minutes * 60_000;
      break;
    }
  }
  // Align in local time, so an hour step lands on whole hours even in UTC+05:30.
  const offset = (t) => new Date(t).getTimezoneOffset() * 60_000;
  const ticks = [];
  for (let t = Math.ceil((t0 - offset(t0)) / stepMs) * stepMs + offset(t0); t <= t1; t += stepMs) ticks.push(t);
  return ticks;
}

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

const DAY_MS = 86_400_000;
// Day steps, then month steps (as negative month counts), for a daily axis.
const DAY_STEPS = [1, 2, 7, 14, -1, -2, -3, -6, -12, -24, -60];

/**
 * Round UTC-day ticks between t0 and t1 (epoch ms of UTC midnights): every 1, 2, 7 (Mondays) or 14 days, or
 * the first of every 1, 2, 3, 6, 12… months; at most `maxTicks`. Returns { ticks, unit: "day" | "month" | "year" }.
 */
export function dayTicks(t0, t1, maxTicks) {
  const span = Math.max(DAY_MS, t1 - t0);
  const step = DAY_STEPS.find((s) => (s > 0 ? span / (s * DAY_MS) : span / (-s * 30.44 * DAY_MS)) <= maxTicks) ?? DAY_STEPS[DAY_STEPS.length - 1];
  const ticks = [];
  if (step > 0) {
    let t = Math.ceil(t0 / DAY_MS) * DAY_MS;
    if (step >= 7) while (new Date(t).getUTCDay() !== 1) t += DAY_MS; // weeks start on Monday
    for (; t <= t1; t += step * DAY_MS) ticks.push(t);
    return { ticks, unit: "day" };
  }
  const months = -step;
  const start = new Date(t0);
  let y = start.getUTCFullYear();
  let m = start.getUTCMonth() + (start.getUTCDate() === 1 && t0 % DAY_MS === 0 ? 0 : 1);
  m = Math.ceil(m / months) * months;
  for (;;) {
    const t = Date.UTC(y + Math.floor(m / 12), m % 12, 1);
    if (t > t1) break;
    ticks.push(t);
    m += months;
  }
  return { ticks, unit: months >= 12 ? "year" : "month" };
}

const dayLabelFormats = {
  day: new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" }),
  month: new Intl.DateTimeFormat(undefined, { month: "short", year: "2-digit", timeZone: "UTC" }),
  year: new Intl.DateTimeFormat(undefined, { year: "numeric", timeZone: "UTC" }),
};

// ---------------------------------------------------------------- value chart

const VALUE_DEFAULTS = {
  title: "Value",
  emptyText: "Collecting history — the first point appears within a minute",
};

/**
 * A view's value over time. `setData(points, formats, { compare })` takes `[[ts, number], ...]`,
 * oldest first, formatters: value(n), tick(n, step), time(ts), change(abs, pct, sinceTs), and optionally
 * a second series `compare` (same shape) drawn as a thinner line on the same scale, with
 * formats.label / formats.compareLabel naming the two in the tooltip.
 *
 * The time axis runs from the first point to the last, so the line always starts at the left edge.
 * With `daily: true` the points are UTC days (epoch ms of midnight) and the axis shows dates.
 */
export function createValueChart(options = {}) {
  const { title: initialTitle, emptyText: initialEmpty, daily = false, testid = "value-chart" } = { ...VALUE_DEFAULTS, ...options };
  let title = initialTitle;
  let emptyText = initialEmpty;
  const gradientId = `lf-value-gradient-${++instances}`;
  let points = [];
  let compare = [];
  let format = {
    value: (n) => String(n),
    tick: (n) => String(n),
    time: (ts) => clockFormat.format(new Date(ts)),
    change: null,
  };
  let geometry = null; // the last render's scales, for the hover read-out
  let pointerX = null;

  const changeNode = htmlEl("span", { class: "chart-change", "data-testid": "value-chart-change" });
  const titleNode = htmlEl("h2", { class: "chart-title", text: title });
  const head = htmlEl("header", { class: "chart-head" }, titleNode, changeNode);

  const svg = svgEl("svg", { class: "value-svg", role: "img", "aria-label": "Value over time" });
  const gradient = svgEl("linearGradient", { id: gradientId, x1: "0", y1: "0", x2: "0", y2: "1" });
  gradient.append(svgEl("stop", { offset: "0", class: "area-stop-top" }), svgEl("stop", { offset: "1", class: "area-stop-bottom" }));
  const defs = svgEl("defs");
  defs.append(gradient);
  const grid = svgEl("g", { class: "chart-grid" });
  const yAxis = svgEl("g", { class: "chart-axis chart-axis-y" });
  const xAxis = svgEl("g", { class: "chart-axis chart-axis-x" });
  const baseline = svgEl("line", { class: "chart-baseline", visibility: "hidden" });
  const area = svgEl("path", { class: "chart-area", fill: `url(#${gradientId})`, d: "" });
  const line = svgEl("path", { class: "chart-line", d: "", "data-points": "0" });
  const compareLine = svgEl("path", { class: "chart-compare", d: "", "data-points": "0", "data-testid": `${testid}-compare` });
  const halo = svgEl("circle", { class: "chart-last-halo", r: "7", visibility: "hidden" });
  const dot = svgEl("circle", { class: "chart-last", r: "3.5", visibility: "hidden", "data-testid": "value-chart-last" });
  const singleLabel = svgEl("text", { class: "chart-single-label", visibility: "hidden" });
  const hoverLine = svgEl("line", { class: "chart-hover-line" });
  const hoverDot = svgEl("circle", { class: "chart-hover-dot", r: "4" });
  const hoverCompareDot = svgEl("circle", { class: "chart-hover-dot chart-hover-compare", r: "3.5", visibility: "hidden" });
  const hover = svgEl("g", { class: "chart-hover", visibility: "hidden" });
  hover.append(hoverLine, hoverCompareDot, hoverDot);
  const overlay = svgEl("rect", { class: "chart-overlay", x: "0", y: "0", width: "0", height: "0" });
  svg.append(defs, grid, yAxis, xAxis, baseline, area, compareLine, line, halo, dot, singleLabel, hover, overlay);

  const emptyTextNode = htmlEl("span", { class: "chart-empty-text", text: emptyText });
  const empty = htmlEl("div", { class: "chart-empty", hidden: "", "data-tone": "wait" }, emptyTextNode);
  const tooltip = htmlEl("div", { class: "chart-tooltip", hidden: "" });
  const plot = htmlEl("div", { class: "chart-plot" }, svg, empty, tooltip);
  const root = htmlEl("div", { class: `value-chart${daily ? " value-chart-daily" : ""}`, "data-testid": testid, "data-points": "0" }, head, plot);

  function fontFor() {
    const family = getComputedStyle(root).fontFamily || "system-ui, sans-serif";
    return `11px ${family}`;
  }

  function renderHeader() {
    changeNode.replaceChildren();
    changeNode.classList.remove("pos", "neg");
    if (points.length < 2 || !format.change) return;
    const [t0, first] = points[0];
    const last = points[points.length - 1][1];
    const abs = last - first;
    const pct = first !== 0 ? (abs / Math.abs(first)) * 100 : null;
    changeNode.textContent = format.change(abs, pct, t0);
    changeNode.classList.toggle("pos", abs > 0);
    changeNode.classList.toggle("neg", abs < 0);
  }

  function describe() {
    if (!points.length) return `${title}: ${emptyText}`;
    const [t0, v0] = points[0];
    const [t1, v1] = points[points.length - 1];
    if (points.length === 1) return `${title}: ${format.value(v1)} at ${format.time(t1)}`;
    return `${title} from ${format.time(t0)} to ${format.time(t1)}: ${format.value(v0)} to ${format.value(v1)}, ${points.length} points`;
  }

  function clear() {
    grid.replaceChildren();
    yAxis.replaceChildren();
    xAxis.replaceChildren();
    area.setAttribute("d", "");
    line.setAttribute("d", "");
    compareLine.setAttribute("d", "");
    for (const node of [baseline, halo, dot, singleLabel, hover]) node.setAttribute("visibility", "hidden");
    tooltip.hidden = true;
    geometry = null;
  }

  function render() {
    const n = points.length;
    line.setAttribute("data-points", String(n));
    compareLine.setAttribute("data-points", String(compare.length));
    root.dataset.points = String(n);
    svg.setAttribute("aria-label", describe());
    empty.hidden = n > 0;
    renderHeader();

    const width = plot.clientWidth;
    const height = plot.clientHeight;
    if (width < 40 || height < 40) return; // not laid out (hidden tab); the size watcher comes back
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    overlay.setAttribute("width", String(width));
    overlay.setAttribute("height", String(height));
    if (n === 0) {
      clear();
      return;
    }

    let min = Infinity;
    let max = -Infinity;
    for (const [, v] of [...points, ...compare]) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
    // The axis starts at the first point (a lone point sits on the left edge, with a minute or a day after it).
    const t0 = points[0][0];
    const t1 = Math.max(points[n - 1][0], t0 + (daily ? DAY_MS : 60_000));
    const y = niceTicks(min, max, 5);
    const font = fontFor();
    const labels = y.ticks.map((v) => format.tick(v, y.step));
    const labelWidth = Math.max(...labels.map((s) => textWidth(s, font)));
    const m = { top: 12, right: 16, bottom: 26, left: Math.ceil(labelWidth) + 14 };
    const plotW = Math.max(10, width - m.left - m.right);
    const plotH = Math.max(10, height - m.top - m.bottom);
    const xOf = (t) => m.left + ((t - t0) / (t1 - t0)) * plotW;
    const yOf = (v) => m.top + ((y.hi - v) / (y.hi - y.lo)) * plotH;

    // Grid + y labels
    const gridNodes = [];
    const yNodes = [];
    y.ticks.forEach((v, i) => {
      const py = round1(yOf(v));
      gridNodes.push(svgEl("line", { x1: m.left, x2: width - m.right, y1: py, y2: py }));
      const text = svgEl("text", { x: m.left - 10, y: py, "text-anchor": "end", "dominant-baseline": "middle" });
      text.textContent = labels[i];
      yNodes.push(text);
    });
    grid.replaceChildren(...gridNodes);
    yAxis.replaceChildren(...yNodes);

    // x labels, local HH:MM (or UTC dates on a daily chart); ones that would spill past the plot are dropped.
    const xNodes = [];
    const maxXTicks = Math.max(2, Math.floor(plotW / 76));
    const xTicks = daily ? dayTicks(t0, t1, maxXTicks) : { ticks: timeTicks(t0, t1, maxXTicks), unit: null };
    for (const t of xTicks.ticks) {
      const px = xOf(t);
      const label = xTicks.unit ? dayLabelFormats[xTicks.unit].format(new Date(t)) : format.time(t);
      const half = textWidth(label, font) / 2;
      if (px - half < m.left - 6 || px + half > width - 2) continue;
      const text = svgEl("text", { x: round1(px), y: height - 8, "text-anchor": "middle" });
      text.textContent = label;
      const tick = svgEl("line", { x1: round1(px), x2: round1(px), y1: m.top + plotH, y2: m.top + plotH + 4 });
      xNodes.push(tick, text);
    }
    xNodes.unshift(svgEl("line", { class: "chart-axis-line", x1: m.left, x2: width - m.right, y1: m.top + plotH, y2: m.top + plotH }));
    xAxis.replaceChildren(...xNodes);

    // Line and area
    let d = "";
    for (let i = 0; i < n; i += 1) {
      d += `${i ? "L" : "M"}${round1(xOf(points[i][0]))},${round1(yOf(points[i][1]))}`;
    }
    line.setAttribute("d", d);
    let cd = "";
    compare.forEach(([t, v], i) => {
      cd += `${i ? "L" : "M"}${round1(xOf(t))},${round1(yOf(v))}`;
    });
    compareLine.setAttribute("d", cd);
    const bottom = m.top + plotH;
    area.setAttribute("d", n > 1 ? `${d}L${round1(xOf(points[n - 1][0]))},${bottom}L${round1(xOf(points[0][0]))},${bottom}Z` : "");

    const first = points[0][1];
    const [lastT, last] = points[n - 1];
    root.dataset.trend = last > first ? "up" : last < first ? "down" : "flat";

    if (n > 1) {
      const by = round1(yOf(first));
      for (const [k, v] of Object.entries({ x1: m.left, x2: width - m.right, y1: by, y2: by })) baseline.setAttribute(k, String(v));
      baseline.setAttribute("visibility", "visible");
    } else baseline.setAttribute("visibility", "hidden");

    const lx = round1(xOf(lastT));
    const ly = round1(yOf(last));
    for (const node of [halo, dot]) {
      node.setAttribute("cx", String(lx));
      node.setAttribute("cy", String(ly));
      node.setAttribute("visibility", "visible");
    }
    if (n === 1) {
      singleLabel.textContent = `${format.value(last)} · ${format.time(lastT)}`;
      singleLabel.setAttribute("x", String(lx + 12));
      singleLabel.setAttribute("y", String(ly - 12));
      singleLabel.setAttribute("text-anchor", lx > width * 0.6 ? "end" : "start");
      singleLabel.setAttribute("visibility", "visible");
    } else singleLabel.setAttribute("visibility", "hidden");

    geometry = { m, plotW, plotH, width, t0, t1, xOf, yOf };
    if (pointerX !== null) showHover(pointerX);
  }

  function nearestIndex(t, list = points) {
    let lo = 0;
    let hi = list.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid][0] < t) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0 && Math.abs(list[lo - 1][0] - t) <= Math.abs(list[lo][0] - t)) return lo - 1;
    return lo;
  }

  function showHover(px) {
    if (!geometry || !points.length) return;
    const { m, plotW, plotH, width, t0, t1, xOf, yOf } = geometry;
    const t = t0 + ((Math.min(Math.max(px, m.left), m.left + plotW) - m.left) / plotW) * (t1 - t0);
    const [pt, pv] = points[nearestIndex(t)];
    const x = round1(xOf(pt));
    const yy = round1(yOf(pv));
    for (const [k, v] of Object.entries({ x1: x, x2: x, y1: m.top, y2: m.top + plotH })) hoverLine.setAttribute(k, String(v));
    hoverDot.setAttribute("cx", String(x));
    hoverDot.setAttribute("cy", String(yy));
    hover.setAttribute("visibility", "visible");
    const rows = [htmlEl("span", { class: "chart-tooltip-value", text: format.label ? `${format.label} ${format.value(pv)}` : format.value(pv) })];
    const other = compare.length ? compare[nearestIndex(pt, compare)] : null;
    if (other && other[0] === pt) {
      hoverCompareDot.setAttribute("cx", String(x));
      hoverCompareDot.setAttribute("cy", String(round1(yOf(other[1]))));
      hoverCompareDot.setAttribute("visibility", "inherit"); // "visible" would outlive its hidden group
      rows.push(htmlEl("span", { class: "chart-tooltip-compare", text: `${format.compareLabel || ""} ${format.value(other[1])}`.trim() }));
    } else hoverCompareDot.setAttribute("visibility", "hidden");
    rows.push(htmlEl("span", { class: "chart-tooltip-time", text: format.time(pt) }));
    tooltip.replaceChildren(...rows);
    tooltip.hidden = false;
    const tw = tooltip.offsetWidth;
    const th = tooltip.offsetHeight;
    const left = Math.min(Math.max(x - tw / 2, 4), width - tw - 4);
    // Above the point when there is room, else below it: never over the point itself.
    const top = yy - th - 12 >= 0 ? yy - th - 12 : yy + 12;
    tooltip.style.transform = `translate(${Math.round(left)}px, ${Math.round(top)}px)`;
  }

  function hideHover() {
    pointerX = null;
    hover.setAttribute("visibility", "hidden");
    tooltip.hidden = true;
  }

  overlay.addEventListener("pointermove", (event) => {
    const rect = svg.getBoundingClientRect();
    pointerX = event.clientX - rect.left;
    showHover(pointerX);
  });
  overlay.addEventListener("pointerleave", hideHover);

  watchSize(plot, render);

  return {
    root,
    /** Replace the series (and optionally the formatters, and the second series) and redraw. */
    setData(next, formats = {}, { compare: nextCompare = [] } = {}) {
      points = Array.isArray(next) ? next : [];
      compare = Array.isArray(nextCompare) ? nextCompare : [];
      format = { ...format, ...formats };
      render();
    },
    /** What the empty plot says, and its tone: "wait" (a blinking dot: something is coming), "info" or "error". */
    setEmpty(text, tone = "wait") {
      emptyText = text;
      emptyTextNode.textContent = text;
      empty.dataset.tone = tone;
      svg.setAttribute("aria-label", describe());
    },
    setTitle(text) {
      title = text;
      titleNode.textContent = text;
    },
    render,
    get points() {
      return points.length;
    },
  };
}

// ---------------------------------------------------------------- allocation donut

const ALLOCATION_MODES = [
  ["instrument", "Instrument"],
  ["asset_class", "Asset class"],
  ["currency", "Currency"],
];
const PALETTE_SIZE = 10;
const R_OUTER = 96;
const R_INNER = 64;
const TAU = Math.PI * 2;

function polar(r, a) {
  return `${round1(100 + r * Math.sin(a))},${round1(100 - r * Math.cos(a))}`;
}

/** An annulus sector from angle a0 to a1 (radians, clockwise from 12 o'clock). */
function sectorPath(a0, a1) {
  if (a1 - a0 >= TAU - 1e-6) return `${sectorPath(0, Math.PI)}${sectorPath(Math.PI, TAU - 1e-9)}`;
  const large = a1 - a0 > Math.PI ? 1 : 0;
  return (
    `M${polar(R_OUTER, a0)}A${R_OUTER},${R_OUTER} 0 ${large} 1 ${polar(R_OUTER, a1)}` +
    `L${polar(R_INNER, a1)}A${R_INNER},${R_INNER} 0 ${large} 0 ${polar(R_INNER, a0)}Z`
  );
}

function toNumber(value) {
  if (value === null || value === undefined || value === "") return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

/**
 * Allocation donut + legend, switchable between the allocation's groupings.
 * `setData(allocation, { formatValue, formatWeight, total, totalLabel })`.
 */
export function createAllocationChart({ title = "Allocation", mode = "instrument", onModeChange = null, maxSlices = 8 } = {}) {
  let current = ALLOCATION_MODES.some(([key]) => key === mode) ? mode : "instrument";
  let allocation = {};
  let format = { value: (v) => String(v), weight: (w) => `${w} %`, total: null, totalLabel: "Total" };
  let items = [];
  let active = null;
  let scope = "";
  const colours = new Map(); // "scope|mode" → Map(key → palette slot)
  const slices = new Map(); // key → path
  const legendRows = new Map(); // key → { li, label, value, weight }

  const buttons = ALLOCATION_MODES.map(([key, label]) =>
    htmlEl("button", { type: "button", class: "segment", "data-mode": key, "aria-pressed": String(key === current), text: label }),
  );
  const toggle = htmlEl("div", { class: "segmented segmented-sm", role: "group", "aria-label": "Group allocation by" }, ...buttons);
  const head = htmlEl("header", { class: "chart-head" }, htmlEl("h2", { class: "chart-title", text: title }), toggle);

  const svg = svgEl("svg", { class: "alloc-svg", viewBox: "0 0 200 200", role: "img", "aria-label": title });
  const track = svgEl("circle", { class: "alloc-track", cx: "100", cy: "100", r: String((R_OUTER + R_INNER) / 2), "stroke-width": String(R_OUTER - R_INNER) });
  const sliceGroup = svgEl("g", { class: "alloc-slices" });
  svg.append(track, sliceGroup);
  const centerValue = htmlEl("span", { class: "alloc-center-value" });
  const centerLabel = htmlEl("span", { class: "alloc-center-label" });
  const center = htmlEl("div", { class: "alloc-center", "aria-hidden": "true" }, centerValue, centerLabel);
  const figure = htmlEl("div", { class: "alloc-figure" }, svg, center);
  const legend = htmlEl("ul", { class: "alloc-legend", "aria-label": "Allocation legend" });
  const empty = htmlEl("p", { class: "alloc-empty", text: "Nothing allocated yet", hidden: "" });
  const body = htmlEl("div", { class: "alloc-body" }, figure, legend);
  const root = htmlEl("div", { class: "alloc-chart", "data-testid": "allocation-chart", "data-mode": current }, head, body, empty);

  /**
   * Colours per view and grouping: on first sight the largest slice gets the first
   * palette colour; after that a key keeps its colour while weights move, and a new key
   * takes the first colour no visible slice is using. Cash is grey, "Other" beige.
   */
  function assignColours(list) {
    const id = `${scope}|${current}`;
    let slots = colours.get(id);
    if (!slots) {
      slots = new Map();
      colours.set(id, slots);
    }
    const isCash = (key) => key === "cash" || key.startsWith("cash:");
    const taken = { main: new Set(), cash: new Set() };
    for (const item of list) {
      if (slots.has(item.key)) taken[isCash(item.key) ? "cash" : "main"].add(slots.get(item.key));
    }
    for (const item of list) {
      if (item.key === "other") {
        item.colour = "var(--chart-other)";
        continue;
      }
      const kind = isCash(item.key) ? "cash" : "main";
      const size = kind === "cash" ? 3 : PALETTE_SIZE;
      if (!slots.has(item.key)) {
        let slot = 0;
        while (taken[kind].has(slot) && slot < size) slot += 1;
        slot = slot < size ? slot : slots.size % size;
        slots.set(item.key, slot);
        taken[kind].add(slot);
      }
      const slot = slots.get(item.key);
      item.colour = kind === "cash" ? (slot ? `var(--chart-cash-${slot + 1})` : "var(--chart-cash)") : `var(--chart-${slot + 1})`;
    }
  }

  function computeItems() {
    const raw = (Array.isArray(allocation[current]) ? allocation[current] : [])
      .map((item) => ({
        key: String(item.key),
        label: item.label || String(item.key),
        value: item.value,
        weight: toNumber(item.weight),
      }))
      .filter((item) => item.weight !== null);
    const positive = raw.filter((item) => item.weight > 0).sort((a, b) => b.weight - a.weight);
    const rest = raw.filter((item) => item.weight <= 0); // negative cash etc.: legend only
    let shown = positive;
    if (positive.length > maxSlices) {
      shown = positive.slice(0, maxSlices - 1);
      const tail = positive.slice(maxSlices - 1);
      const sum = (field) => tail.reduce((acc, item) => acc + (toNumber(item[field]) || 0), 0);
      shown.push({ key: "other", label: `Other (${tail.length})`, value: sum("value").toFixed(2), weight: sum("weight") });
    }
    const total = shown.reduce((acc, item) => acc + item.weight, 0);
    let angle = 0;
    for (const item of shown) {
      item.a0 = angle;
      angle += (item.weight / total) * TAU;
      item.a1 = angle;
    }
    const all = [...shown, ...rest.map((item) => ({ ...item, legendOnly: true }))];
    assignColours(all);
    return all;
  }

  function renderCenter() {
    const item = active && items.find((i) => i.key === active);
    if (item) {
      centerValue.textContent = format.weight(item.weight);
      centerLabel.textContent = item.label;
    } else {
      centerValue.textContent = format.total === null || format.total === undefined ? "" : format.value(format.total);
      centerLabel.textContent = format.totalLabel;
    }
  }

  function setActive(key) {
    active = key;
    root.classList.toggle("has-active", key !== null);
    for (const [k, path] of slices) path.classList.toggle("is-active", k === key);
    for (const [k, row] of legendRows) row.li.classList.toggle("is-active", k === key);
    renderCenter();
  }

  function legendRow(key) {
    let row = legendRows.get(key);
    if (!row) {
      const swatch = htmlEl("span", { class: "alloc-swatch", "aria-hidden": "true" });
      const label = htmlEl("span", { class: "alloc-label" });
      const value = htmlEl("span", { class: "alloc-value" });
      const weight = htmlEl("span", { class: "alloc-weight" });
      const li = htmlEl("li", { class: "alloc-item", "data-key": key }, swatch, label, value, weight);
      li.addEventListener("pointerenter", () => setActive(key));
      li.addEventListener("pointerleave", () => setActive(null));
      row = { li, swatch, label, value, weight };
      legendRows.set(key, row);
    }
    return row;
  }

  function render() {
    items = computeItems();
    root.dataset.mode = current;
    const seen = new Set();
    const orderedSlices = [];
    const orderedRows = [];
    for (const item of items) {
      seen.add(item.key);
      const colour = item.colour;
      if (!item.legendOnly) {
        let path = slices.get(item.key);
        if (!path) {
          path = svgEl("path", { class: "alloc-slice", "data-key": item.key });
          path.addEventListener("pointerenter", () => setActive(item.key));
          path.addEventListener("pointerleave", () => setActive(null));
          slices.set(item.key, path);
        }
        path.setAttribute("d", sectorPath(item.a0, item.a1));
        path.style.fill = colour;
        orderedSlices.push(path);
      } else if (slices.has(item.key)) {
        slices.get(item.key).remove();
        slices.delete(item.key);
      }
      const row = legendRow(item.key);
      row.li.classList.toggle("is-legend-only", Boolean(item.legendOnly));
      row.swatch.style.background = item.legendOnly ? "transparent" : colour;
      row.swatch.style.borderColor = colour;
      if (row.label.textContent !== item.label) {
        row.label.textContent = item.label;
        row.label.title = item.label;
      }
      row.value.textContent = format.value(item.value);
      row.weight.textContent = format.weight(item.weight);
      orderedRows.push(row.li);
    }
    for (const [key, path] of slices) {
      if (!seen.has(key)) {
        path.remove();
        slices.delete(key);
      }
    }
    for (const [key, row] of legendRows) {
      if (!seen.has(key)) {
        row.li.remove();
        legendRows.delete(key);
      }
    }
    // Re-order only when needed: moving nodes restarts their transitions.
    const sameOrder = (parent, nodes) => nodes.length === parent.children.length && nodes.every((node, i) => parent.children[i] === node);
    if (!sameOrder(sliceGroup, orderedSlices)) sliceGroup.replaceChildren(...orderedSlices);
    if (!sameOrder(legend, orderedRows)) legend.replaceChildren(...orderedRows);

    const drawn = items.filter((item) => !item.legendOnly);
    empty.hidden = drawn.length > 0;
    body.hidden = items.length === 0;
    const modeLabel = ALLOCATION_MODES.find(([key]) => key === current)[1].toLowerCase();
    const summary = drawn.map((item) => `${item.label} ${format.weight(item.weight)}`).join(", ");
    svg.setAttribute("aria-label", drawn.length ? `${title} by ${modeLabel}: ${summary}` : `${title}: nothing allocated yet`);
    if (active && !seen.has(active)) active = null;
    setActive(active);
  }

  function setMode(next, { notify = true } = {}) {
    if (next === current || !ALLOCATION_MODES.some(([key]) => key === next)) return;
    current = next;
    for (const button of buttons) button.setAttribute("aria-pressed", String(button.dataset.mode === current));
    active = null;
    render();
    if (notify && onModeChange) onModeChange(current);
  }

  toggle.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-mode]");
    if (button) setMode(button.dataset.mode);
  });

  return {
    root,
    /**
     * New allocation; formats: value(v), weight(w), total, totalLabel, and `scope`
     * (e.g. the view id) under which slice colours are remembered.
     */
    setData(next, { scope: nextScope, ...formats } = {}) {
      allocation = next && typeof next === "object" ? next : {};
      format = { ...format, ...formats };
      if (nextScope !== undefined) scope = String(nextScope);
      render();
    },
    setMode,
    get mode() {
      return current;
    },
  };
}

// ---------------------------------------------------------------- candlesticks

const CANDLE_DEFAULTS = {
  title: "Price",
  emptyText: "Waiting for the first trade",
  intervalMs: 60_000,
  // At least this many slots are drawn, so a young series grows in from the right.
  minSlots: 30,
  maxSlots: 120,
  // Narrower slots than this and older candles are left out.
  minSlotPx: 7,
};

/**
 * OHLC candlesticks with a volume strip, on a time axis of one slot per interval.
 * `setData(candles, formats)` takes `[{start, open, high, low, close, volume, trades, closed}, ...]`
 * (decimal strings or numbers, oldest first); the last one may be the open candle and is
 * updated in place by the next call. Formats: price(n), tick(n, step), volume(n), time(ts).
 */
export function createCandleChart(options = {}) {
  const { title, emptyText, intervalMs, minSlots, maxSlots, minSlotPx } = { ...CANDLE_DEFAULTS, ...options };
  let candles = [];
  let format = {
    price: (n) => String(n),
    tick: (n) => String(n),
    volume: (n) => String(n),
    time: (ts) => clockFormat.format(new Date(ts)),
  };
  let geometry = null;
  let pointerX = null;
  const nodes = new Map(); // start → { g, wick, body, vol }

  const ohlc = htmlEl("span", { class: "chart-change candle-ohlc", "data-testid": "candle-ohlc" });
  const head = htmlEl("header", { class: "chart-head" }, htmlEl("h2", { class: "chart-title", text: title }), ohlc);

  const svg = svgEl("svg", { class: "value-svg candle-svg", role: "img", "aria-label": title });
  const grid = svgEl("g", { class: "chart-grid" });
  const yAxis = svgEl("g", { class: "chart-axis chart-axis-y" });
  const xAxis = svgEl("g", { class: "chart-axis chart-axis-x" });
  const volumes = svgEl("g", { class: "candle-volumes" });
  const bodies = svgEl("g", { class: "candle-bodies" });
  const lastLine = svgEl("line", { class: "candle-last-line", visibility: "hidden" });
  const lastTag = svgEl("g", { class: "candle-last-tag", visibility: "hidden" });
  const lastTagBox = svgEl("rect", { rx: "3", ry: "3" });
  const lastTagText = svgEl("text", { "dominant-baseline": "middle" });
  lastTag.append(lastTagBox, lastTagText);
  const hoverLine = svgEl("line", { class: "chart-hover-line" });
  const hover = svgEl("g", { class: "chart-hover", visibility: "hidden" });
  hover.append(hoverLine);
  const overlay = svgEl("rect", { class: "chart-overlay", x: "0", y: "0", width: "0", height: "0" });
  svg.append(grid, yAxis, xAxis, volumes, bodies, lastLine, lastTag, hover, overlay);

  const empty = htmlEl("div", { class: "chart-empty", hidden: "" }, htmlEl("span", { class: "chart-empty-text", text: emptyText }));
  const tooltip = htmlEl("div", { class: "chart-tooltip candle-tooltip", hidden: "" });
  const plot = htmlEl("div", { class: "chart-plot candle-plot" }, svg, empty, tooltip);
  const root = htmlEl("div", { class: "value-chart candle-chart", "data-testid": "candle-chart", "data-candles": "0" }, head, plot);

  const num = (value) => (value === null || value === undefined || value === "" ? NaN : Number(value));

  function fontFor() {
    const family = getComputedStyle(root).fontFamily || "system-ui, sans-serif";
    return `11px ${family}`;
  }

  function direction(c) {
    const open = num(c.open);
    const close = num(c.close);
    return close > open ? "up" : close < open ? "down" : "flat";
  }

  function renderOhlc(c, { hovered = false } = {}) {
    ohlc.replaceChildren();
    ohlc.classList.remove("pos", "neg");
    if (!c) return;
    const part = (label, value) => htmlEl("span", { class: "ohlc-part" }, htmlEl("span", { class: "ohlc-label", text: label }), String(value));
    ohlc.append(
      htmlEl("span", { class: "ohlc-time", text: `${format.time(c.start)}${!hovered && !c.closed ? " · open" : ""}` }),
      part("O", format.price(c.open)),
      part("H", format.price(c.high)),
      part("L", format.price(c.low)),
      part("C", format.price(c.close)),
      part("Vol", format.volume(c.volume)),
    );
    ohlc.dataset.direction = direction(c);
  }

  /**
   * The candles drawn and their time window: as many minutes as the recent candles span (a
   * minute a day back does not stretch it), at least `minSlots`, at most what fits.
   */
  function visibleWindow(width) {
    const n = candles.length;
    if (!n) return null;
    const fit = Math.max(4, Math.floor(width / minSlotPx));
    const tEnd = candles[n - 1].start + intervalMs;
    const recent = candles.find((c) => c.start >= tEnd - maxSlots * intervalMs);
    const span = Math.ceil((tEnd - recent.start) / intervalMs);
    const slots = Math.min(fit, Math.max(minSlots, span));
    const tStart = tEnd - slots * intervalMs;
    const shown = candles.filter((c) => c.start >= tStart);
    return { slots, tStart, tEnd, shown };
  }

  function render() {
    const n = candles.length;
    const last = n ? candles[n - 1] : null;
    root.dataset.candles = String(n);
    root.dataset.lastStart = last ? String(last.start) : "";
    root.dataset.lastClose = last ? String(last.close) : "";
    empty.hidden = n > 0;
    if (pointerX === null) renderOhlc(last);

    const width = plot.clientWidth;
    const height = plot.clientHeight;
    if (width < 40 || height < 40) return;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    overlay.setAttribute("width", String(width));
    overlay.setAttribute("height", String(height));
    if (!n) {
      for (const node of [grid, yAxis, xAxis, volumes, bodies]) node.replaceChildren();
      nodes.clear();
      for (const node of [lastLine, lastTag, hover]) node.setAttribute("visibility", "hidden");
      tooltip.hidden = true;
      geometry = null;
      svg.setAttribute("aria-label", `${title}: ${emptyText}`);
      return;
    }

    const font = fontFor();
    const tagText = format.price(last.close);
    const tagWidth = Math.ceil(textWidth(tagText, font)) + 12;
    // The price range and its labels, for the candles a window shows.
    const measure = (list) => {
      let lo = Infinity;
      let hi = -Infinity;
      let maxVolume = 0;
      for (const c of list) {
        lo = Math.min(lo, num(c.low));
        hi = Math.max(hi, num(c.high));
        maxVolume = Math.max(maxVolume, num(c.volume) || 0);
      }
      const ticks = niceTicks(lo, hi, 5);
      const labels = ticks.ticks.map((v) => format.tick(v, ticks.step));
      return { y: ticks, labels, maxVolume, labelWidth: Math.ceil(Math.max(...labels.map((text) => textWidth(text, font)))) };
    };
    const m = { top: 12, right: tagWidth + 8, bottom: 26, left: 0 };
    const plotWidth = () => Math.max(10, width - m.left - m.right);
    // The labels' width depends on the window, which depends on the labels' width: guess, then settle.
    let scale = measure(visibleWindow(width - 140).shown);
    m.left = scale.labelWidth + 14;
    let win = visibleWindow(plotWidth());
    const settled = measure(win.shown);
    if (settled.labelWidth > scale.labelWidth) {
      m.left = settled.labelWidth + 14;
      win = visibleWindow(plotWidth()); // narrower: a subset of the candles `settled` measured
    }
    scale = settled;
    const { y, labels, maxVolume } = scale;
    const plotW = plotWidth();
    const plotH = Math.max(10, height - m.top - m.bottom);
    const { slots, tStart, tEnd, shown } = win;
    const volH = Math.round(plotH * 0.16);
    const priceH = plotH - volH - 6;
    const slotW = plotW / slots;
    const bodyW = Math.max(1, Math.min(18, Math.floor(slotW * 0.66)));
    const xOf = (t) => m.left + ((t - tStart) / (tEnd - tStart)) * plotW;
    const yOf = (v) => m.top + ((y.hi - v) / (y.hi - y.lo)) * priceH;
    const volTop = m.top + priceH + 6;
    const volOf = (v) => (maxVolume > 0 ? (Math.max(0, v) / maxVolume) * volH : 0);

    grid.replaceChildren(
      ...y.ticks.map((v) => {
        const py = round1(yOf(v));
        return svgEl("line", { x1: m.left, x2: m.left + plotW, y1: py, y2: py });
      }),
    );
    yAxis.replaceChildren(
      ...y.ticks.map((v, i) => {
        const text = svgEl("text", { x: m.left - 10, y: round1(yOf(v)), "text-anchor": "end", "dominant-baseline": "middle" });
        text.textContent = labels[i];
        return text;
      }),
    );
    const xNodes = [svgEl("line", { class: "chart-axis-line", x1: m.left, x2: m.left + plotW, y1: m.top + plotH, y2: m.top + plotH })];
    for (const t of timeTicks(tStart, tEnd, Math.max(2, Math.floor(plotW / 80)))) {
      const px = xOf(t);
      const label = format.time(t);
      const half = textWidth(label, font) / 2;
      if (px - half < m.left - 6 || px + half > width - 2) continue;
      const text = svgEl("text", { x: round1(px), y: height - 8, "text-anchor": "middle" });
      text.textContent = label;
      xNodes.push(svgEl("line", { x1: round1(px), x2: round1(px), y1: m.top + plotH, y2: m.top + plotH + 4 }), text);
    }
    xAxis.replaceChildren(...xNodes);

    // Candles: one <g> per minute, kept across renders so the open one is only re-shaped.
    const seen = new Set();
    const ordered = [];
    const orderedVolumes = [];
    for (const c of shown) {
      seen.add(c.start);
      let node = nodes.get(c.start);
      if (!node) {
        const g = svgEl("g", { class: "candle", "data-start": String(c.start) });
        const wick = svgEl("line", { class: "candle-wick" });
        const body = svgEl("rect", { class: "candle-body" });
        g.append(wick, body);
        const vol = svgEl("rect", { class: "candle-volume" });
        node = { g, wick, body, vol };
        nodes.set(c.start, node);
      }
      const dir = direction(c);
      const cx = Math.round(xOf(c.start + intervalMs / 2)) + 0.5;
      const open = num(c.open);
      const close = num(c.close);
      const top = Math.round(yOf(Math.max(open, close)));
      const bottom = Math.round(yOf(Math.min(open, close)));
      node.g.setAttribute("data-direction", dir);
      node.g.setAttribute("data-close", String(c.close));
      node.g.classList.toggle("is-open", !c.closed);
      for (const [k, v] of Object.entries({ x1: cx, x2: cx, y1: round1(yOf(num(c.high))), y2: round1(yOf(num(c.low))) })) node.wick.setAttribute(k, String(v));
      for (const [k, v] of Object.entries({ x: Math.round(cx - bodyW / 2), y: top, width: bodyW, height: Math.max(1, bottom - top) })) {
        node.body.setAttribute(k, String(v));
      }
      const vh = volOf(num(c.volume) || 0);
      for (const [k, v] of Object.entries({ x: Math.round(cx - bodyW / 2), y: round1(volTop + volH - vh), width: bodyW, height: round1(vh) })) {
        node.vol.setAttribute(k, String(v));
      }
      node.vol.setAttribute("data-direction", dir);
      ordered.push(node.g);
      orderedVolumes.push(node.vol);
    }
    for (const start of [...nodes.keys()]) {
      if (!seen.has(start)) {
        nodes.get(start).g.remove();
        nodes.get(start).vol.remove();
        nodes.delete(start);
      }
    }
    const same = (parent, list) => list.length === parent.children.length && list.every((node, i) => parent.children[i] === node);
    if (!same(bodies, ordered)) bodies.replaceChildren(...ordered);
    if (!same(volumes, orderedVolumes)) volumes.replaceChildren(...orderedVolumes);

    // The last price: a dashed line across, and its value in a tag at the right edge.
    const ly = Math.round(yOf(num(last.close))) + 0.5;
    const dir = direction(last);
    for (const [k, v] of Object.entries({ x1: m.left, x2: m.left + plotW, y1: ly, y2: ly })) lastLine.setAttribute(k, String(v));
    lastLine.setAttribute("data-direction", dir);
    lastTag.setAttribute("data-direction", dir);
    lastTagText.textContent = tagText;
    const tagX = m.left + plotW + 4;
    for (const [k, v] of Object.entries({ x: tagX, y: ly - 9, width: tagWidth, height: 18 })) lastTagBox.setAttribute(k, String(v));
    lastTagText.setAttribute("x", String(tagX + 6));
    lastTagText.setAttribute("y", String(ly + 0.5));
    lastLine.setAttribute("visibility", "visible");
    lastTag.setAttribute("visibility", "visible");

    root.dataset.visible = String(shown.length);
    svg.setAttribute(
      "aria-label",
      `${title}: ${shown.length} one-minute candles from ${format.time(shown[0].start)} to ${format.time(last.start)}; last ${format.price(last.close)}`,
    );
    geometry = { m, plotW, plotH, width, tStart, tEnd, xOf, shown };
    if (pointerX !== null) showHover(pointerX);
  }

  function showHover(px) {
    if (!geometry || !geometry.shown.length) return;
    const { m, plotW, plotH, width, tStart, tEnd, xOf, shown } = geometry;
    const t = tStart + ((Math.min(Math.max(px, m.left), m.left + plotW) - m.left) / plotW) * (tEnd - tStart);
    let best = shown[0];
    for (const c of shown) if (Math.abs(c.start + intervalMs / 2 - t) < Math.abs(best.start + intervalMs / 2 - t)) best = c;
    const x = Math.round(xOf(best.start + intervalMs / 2)) + 0.5;
    for (const [k, v] of Object.entries({ x1: x, x2: x, y1: m.top, y2: m.top + plotH })) hoverLine.setAttribute(k, String(v));
    hover.setAttribute("visibility", "visible");
    renderOhlc(best, { hovered: true });
    tooltip.replaceChildren(
      htmlEl("span", { class: "chart-tooltip-value", text: format.price(best.close) }),
      htmlEl("span", { class: "chart-tooltip-time", text: `${format.time(best.start)} · ${best.trades ?? 0} trades` }),
    );
    tooltip.hidden = false;
    const tw = tooltip.offsetWidth;
    const left = Math.min(Math.max(x - tw / 2, 4), width - tw - 4);
    tooltip.style.transform = `translate(${Math.round(left)}px, 4px)`;
  }

  function hideHover() {
    pointerX = null;
    hover.setAttribute("visibility", "hidden");
    tooltip.hidden = true;
    renderOhlc(candles[candles.length - 1]);
  }

  overlay.addEventListener("pointermove", (event) => {
    const rect = svg.getBoundingClientRect();
    pointerX = event.clientX - rect.left;
    showHover(pointerX);
  });
  overlay.addEventListener("pointerleave", hideHover);

  watchSize(plot, render);

  return {
    root,
    /** Replace the candles (oldest first; `start` in epoch ms) and optionally the formatters; redraw. */
    setData(next, formats = {}) {
      candles = (Array.isArray(next) ? next : []).map((c) => ({ ...c, start: Number(c.start) })).filter((c) => Number.isFinite(c.start));
      format = { ...format, ...formats };
      render();
    },
    render,
    get candles() {
      return candles.length;
    },
  };
}
