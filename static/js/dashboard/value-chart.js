// A view's value over time, drawn by lightweight-charts (../charts.js): the live 1D minute line, or a range's
// daily values, optionally with a second series (a benchmark) on the same scale. The time axis runs from the
// first point to the last, so the line always starts at the left edge.
//
// The charts know numbers, not money: the caller passes its formatters.

import { AreaSeries, LineSeries, credit, htmlEl, makeChart, withAlpha } from "../charts.js";

const DEFAULTS = {
  title: "Value",
  emptyText: "Collecting history — the first point appears within a minute",
};

/** The smallest of 1, 2, 2.5, 5 × 10^k that is at least `raw`: the step the price scale's labels are rounded to. */
function niceStep(raw) {
  if (!(raw > 0)) return 1;
  const base = 10 ** Math.floor(Math.log10(raw));
  const f = raw / base;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * base;
}

/** Points as the library takes them: ascending, one per second (a later duplicate wins). */
function seriesData(points) {
  const out = [];
  for (const [ts, value] of points) {
    const time = Math.floor(Number(ts) / 1000);
    if (!Number.isFinite(time) || !Number.isFinite(value)) continue;
    if (out.length && out[out.length - 1].time >= time) {
      if (out[out.length - 1].time === time) out[out.length - 1] = { time, value };
      continue;
    }
    out.push({ time, value });
  }
  return out;
}

/**
 * `setData(points, formats, { compare })` takes `[[ts, number], ...]`, oldest first, formatters: value(n),
 * tick(n, step), time(ts), change(abs, pct, sinceTs), and optionally a second series `compare` (same shape)
 * drawn as a thinner line on the same scale, with formats.label / formats.compareLabel naming the two in the
 * tooltip. With `daily: true` the points are UTC days (epoch ms of midnight) and the axis shows dates.
 */
export function createValueChart(options = {}) {
  const { title: initialTitle, emptyText: initialEmpty, daily = false, testid = "value-chart" } = { ...DEFAULTS, ...options };
  let title = initialTitle;
  let emptyText = initialEmpty;
  let points = [];
  let compare = [];
  let trend = "flat";
  let step = 1;
  let format = {
    value: (n) => String(n),
    tick: (n) => String(n),
    time: (ts) => new Date(ts).toLocaleString(),
    change: null,
  };

  const changeNode = htmlEl("span", { class: "chart-change", "data-testid": `${testid}-change` });
  const titleNode = htmlEl("h2", { class: "chart-title", text: title });
  const head = htmlEl("header", { class: "chart-head" }, titleNode, changeNode);
  const canvas = htmlEl("div", { class: "chart-canvas" });
  const emptyTextNode = htmlEl("span", { class: "chart-empty-text", text: emptyText });
  const empty = htmlEl("div", { class: "chart-empty", hidden: "", "data-tone": "wait" }, emptyTextNode);
  const tooltip = htmlEl("div", { class: "chart-tooltip", hidden: "" });
  const plot = htmlEl("div", { class: "chart-plot", role: "img", "aria-label": "Value over time" }, canvas, empty, tooltip);
  const root = htmlEl(
    "div",
    { class: `value-chart${daily ? " value-chart-daily" : ""}`, "data-testid": testid, "data-points": "0", "data-compare-points": "0" },
    head,
    plot,
    credit(),
  );

  const { chart, theme } = makeChart(canvas, {
    daily,
    options: {
      // A summary, not a trading chart: it always shows the whole range, and the wheel scrolls the page.
      handleScroll: false,
      handleScale: false,
      rightPriceScale: { scaleMargins: { top: 0.12, bottom: 0.08 } },
      // Up to the whole width between two points: the library's default stops at half, which would leave a young line short.
      timeScale: { rightOffset: 0, maxBarSpacing: 10_000 },
      localization: { priceFormatter: (n) => format.tick(n, step) },
    },
    recolour: () => colour(),
  });
  const main = chart.addSeries(AreaSeries, { lineWidth: 2, priceLineVisible: false, lastValueVisible: true, crosshairMarkerRadius: 4 });
  const other = chart.addSeries(LineSeries, { lineWidth: 2, priceLineVisible: false, lastValueVisible: true, crosshairMarkerRadius: 3.5 });

  function colour() {
    const t = theme();
    const line = trend === "up" ? t.up : trend === "down" ? t.down : t.line;
    main.applyOptions({ lineColor: line, topColor: withAlpha(line, 0.22), bottomColor: withAlpha(line, 0), crosshairMarkerBackgroundColor: line });
    other.applyOptions({ color: t.compare });
    root.style.setProperty("--series", line);
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

  function render() {
    const n = points.length;
    root.dataset.points = String(n);
    root.dataset.comparePoints = String(compare.length);
    plot.setAttribute("aria-label", describe());
    empty.hidden = n > 0;
    renderHeader();
    const first = n ? points[0][1] : 0;
    const last = n ? points[n - 1][1] : 0;
    trend = last > first ? "up" : last < first ? "down" : "flat";
    root.dataset.trend = trend;
    let min = Infinity;
    let max = -Infinity;
    for (const [, v] of [...points, ...compare]) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
    // The axis labels' rounding: the library picks its own ticks (at 2.5s and 5s too), so round finely enough
    // that 12.5 never reads 13 and neighbours never read the same: a fortieth of the range.
    step = n ? niceStep((max - min || Math.abs(max) * 0.01 || 1) / 40) : 1;
    colour();
    main.applyOptions({ pointMarkersVisible: n === 1 });
    main.setData(seriesData(points));
    other.setData(seriesData(compare));
    other.applyOptions({ visible: compare.length > 0 });
    fit();
  }

  /**
   * The whole series, edge to edge: the library's fitContent leaves half a bar's room at each end (a lot, for a
   * young live line of a few minutes), so the logical range is set from the first point to the last.
   */
  function fit() {
    const n = seriesData(points).length;
    if (!n) return;
    // The library puts a range's `from` half a bar in from the edge, hence the 0.5s. It will not start a range past
    // the first point's middle while there are fewer than three: a lone point gets a narrow slot at the edge (room
    // for the 40 the live line grows into), two points the library's own fit (a quarter in from each edge).
    if (n === 1) chart.timeScale().setVisibleLogicalRange({ from: 0, to: 40 });
    else if (n === 2) chart.timeScale().fitContent();
    else chart.timeScale().setVisibleLogicalRange({ from: 0.5, to: n - 1.5 });
    // For the browser tests: where the visible range starts, and the first point's x in the plot.
    const range = chart.timeScale().getVisibleLogicalRange();
    root.dataset.visibleFrom = range ? range.from.toFixed(2) : "";
    const x = chart.timeScale().logicalToCoordinate(0);
    root.dataset.firstX = x === null ? "" : String(Math.round(x));
  }

  // Shown after being hidden (a tab, a range), or resized: the whole series again, once the library has resized.
  if (typeof ResizeObserver === "function") {
    new ResizeObserver(() => requestAnimationFrame(fit)).observe(canvas);
  }

  chart.subscribeCrosshairMove((param) => {
    const value = param.point && param.time !== undefined ? param.seriesData.get(main) : undefined;
    if (!value) {
      tooltip.hidden = true;
      return;
    }
    const ms = Number(param.time) * 1000;
    const rows = [htmlEl("span", { class: "chart-tooltip-value", text: format.label ? `${format.label} ${format.value(value.value)}` : format.value(value.value) })];
    const bench = compare.length ? param.seriesData.get(other) : undefined;
    if (bench) rows.push(htmlEl("span", { class: "chart-tooltip-compare", text: `${format.compareLabel || ""} ${format.value(bench.value)}`.trim() }));
    rows.push(htmlEl("span", { class: "chart-tooltip-time", text: format.time(ms) }));
    tooltip.replaceChildren(...rows);
    tooltip.hidden = false;
    const width = plot.clientWidth;
    const tw = tooltip.offsetWidth;
    const left = Math.min(Math.max(param.point.x - tw / 2, 4), width - tw - 4);
    const y = main.priceToCoordinate(value.value) ?? param.point.y;
    const th = tooltip.offsetHeight;
    // Above the point when there is room, else below it: never over the point itself.
    const top = y - th - 12 >= 0 ? y - th - 12 : y + 12;
    tooltip.style.transform = `translate(${Math.round(left)}px, ${Math.round(top)}px)`;
  });

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
      plot.setAttribute("aria-label", describe());
    },
    setTitle(text) {
      title = text;
      titleNode.textContent = text;
    },
    /** Fit the whole series again (after the chart was hidden, or its figures changed). */
    render: fit,
    get points() {
      return points.length;
    },
    chart,
  };
}
