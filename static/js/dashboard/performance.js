// The value chart card with ranges: 1D is the live minute line the stream extends; 1W, 1M, YTD, 1Y and Max
// come from GET /portfolios/<id>/performance/ (daily values; docs/accounting.md, "Performance") with the
// range's time- and money-weighted return, max drawdown and, when one is picked, a benchmark.
//
// With a benchmark the chart shows both as % since the range start: the portfolio's growth is its
// time-weighted index (deposits and withdrawals do not move it), the benchmark's is its close rebased to
// the same start, so the two lines compare like with like. Without one it shows the value in money.
//
// The range and the benchmark are remembered per tab. The "All portfolios" tab keeps the live line only:
// the endpoint is per portfolio.

import { el, setSignClass, setText } from "./dom.js";
import { formatMoney, formatPercent } from "./format.js";
import { COMBINED } from "./model.js";
import { STORAGE_KEYS, storageGet, storageSet } from "./storage.js";
import { createValueChart } from "./value-chart.js";

export const RANGES = [
  ["1D", "1D", "Today, live, minute by minute"],
  ["1W", "1W", "The last week, one value per day"],
  ["1M", "1M", "The last month, one value per day"],
  ["YTD", "YTD", "Since 1 January, one value per day"],
  ["1Y", "1Y", "The last year, one value per day"],
  ["MAX", "Max", "Since the first transaction, one value per day"],
];
const LIVE = "1D";
const CACHE_MS = 60_000;
const YEAR_DAYS = 365;
const DAY_MS = 86_400_000;

const HELP_TWR =
  "Time-weighted return: how the investments did, with deposits and withdrawals taken out — " +
  "the figure to compare with a benchmark or a fund.";
const HELP_MWR =
  "Money-weighted return (XIRR): how your money did, counting when you put it in and took it out — " +
  "adding before a rise raises it, before a fall lowers it.";
const HELP_MWR_ANNUAL = `${HELP_MWR} Over a year it is shown per year (annualised).`;
const HELP_DRAWDOWN = "Max drawdown: the largest fall from a high to a later low, on the time-weighted growth (a withdrawal is not a loss).";

const dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });

/** "2024-03-05" → epoch ms of that UTC midnight (the chart's daily axis is in UTC days). */
export function dayMs(iso) {
  const [y, m, d] = String(iso).slice(0, 10).split("-").map(Number);
  return Date.UTC(y, m - 1, d);
}

const shortDateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
const formatDay = (ts) => dateFormat.format(new Date(ts));
const formatShortDay = (ts) => shortDateFormat.format(new Date(ts));

/** A ratio from the endpoint (0.0345) as the dashboard shows a percentage ("+3.45 %"); "—" when there is none. */
export function formatRatio(ratio, { signed = true } = {}) {
  if (ratio === null || ratio === undefined || !Number.isFinite(Number(ratio))) return "—";
  return formatPercent((Number(ratio) * 100).toFixed(2), { signed });
}

function readConfig() {
  const node = document.getElementById("performance-config");
  if (!node) return {};
  try {
    return JSON.parse(node.textContent) || {};
  } catch (err) {
    console.warn("Livefolio: bad #performance-config", err);
    return {};
  }
}

function figure(label, testid, help) {
  const value = el("dd", { class: "figure-value num", "data-testid": testid });
  const sub = el("span", { class: "figure-sub" });
  const term = el("dt", { class: "figure-label", text: label, title: help });
  const box = el("div", { class: "perf-figure" }, term, value, sub);
  return { box, term, value, sub };
}

/**
 * The value card. `liveChart` is the 1D chart (the stream's minute line, fed by the caller). `show(view)`
 * puts a view's ranges on screen (cheap when it is already there); `invalidate()` forgets fetched ranges
 * after a ledger change and reloads the one on screen.
 */
export function createPerformance({ liveChart, config = readConfig(), fetchFn = (...args) => window.fetch(...args) }) {
  const endpoint = String(config.url || "/portfolios/0/performance/");
  const benchmarks = Array.isArray(config.benchmarks) ? config.benchmarks : [];
  const staff = Boolean(config.staff);
  const rangeChart = createValueChart({ title: "Value", daily: true, testid: "range-chart", emptyText: "Loading…" });
  rangeChart.root.hidden = true;

  // ---- controls: range buttons and the benchmark select

  const rangeButtons = RANGES.map(([key, label, help]) =>
    el("button", { type: "button", class: "segment", "data-range": key, "aria-pressed": "false", title: help, text: label }),
  );
  const rangeGroup = el("div", { class: "segmented perf-ranges", role: "group", "aria-label": "Range", "data-testid": "ranges" }, ...rangeButtons);
  const benchmarkSelect = el(
    "select",
    { class: "select perf-benchmark-select", id: "perf-benchmark", "data-testid": "benchmark" },
    el("option", { value: "", text: benchmarks.length ? "None" : "None (no daily closes yet)" }),
    ...benchmarks.map((b) => el("option", { value: b.symbol, text: b.name && b.name !== b.symbol ? `${b.symbol} · ${b.name}` : b.symbol })),
  );
  benchmarkSelect.disabled = benchmarks.length === 0;
  const benchmarkBox = el(
    "div",
    {
      class: "perf-benchmark",
      title: "Draws an instrument's daily closes beside the portfolio, both as % since the start of the range",
    },
    el("label", { class: "perf-benchmark-label", htmlFor: "perf-benchmark", text: "Compare with" }),
    benchmarkSelect,
  );
  const bar = el("div", { class: "perf-bar" }, rangeGroup, benchmarkBox);
  const legend = el("div", { class: "perf-legend", hidden: true, "data-testid": "perf-legend" });

  // ---- figures

  const twr = figure("Time-weighted", "perf-twr", HELP_TWR);
  const mwr = figure("Money-weighted", "perf-mwr", HELP_MWR);
  const drawdown = figure("Max drawdown", "perf-drawdown", HELP_DRAWDOWN);
  const bench = figure("Benchmark", "perf-benchmark-return", "The benchmark's change over the range, in its own currency");
  const figures = el("dl", { class: "perf-figures" }, twr.box, mwr.box, drawdown.box, bench.box);
  const note = el("p", { class: "perf-note", "data-testid": "perf-note", hidden: true });
  const retry = el("button", { type: "button", class: "btn btn-ghost perf-retry", text: "Retry", "data-testid": "perf-retry" });
  const problem = el("div", { class: "perf-problem", role: "alert", hidden: true }, el("span", { class: "perf-problem-text" }), retry);
  const help = el(
    "details",
    { class: "perf-help" },
    el("summary", { text: "Time- or money-weighted?" }),
    el("p", { text: HELP_TWR }),
    el("p", { text: HELP_MWR_ANNUAL }),
    el("p", { text: HELP_DRAWDOWN }),
  );
  const stats = el("div", { class: "perf-stats", "data-testid": "perf-stats", hidden: true }, figures, note, problem, help);
  const hint = el("p", { class: "perf-hint", "data-testid": "perf-hint", hidden: true });

  const node = el(
    "section",
    { class: "card chart-card chart-card-value", "aria-label": "Value over time", "data-testid": "value-card" },
    liveChart.root,
    rangeChart.root,
    legend,
    stats,
    hint,
  );

  // ---- state

  let view = null; // { id, name, currency } of the view on screen
  let range = LIVE;
  let benchmark = "";
  let request = null; // { key, controller } of the fetch under way
  const cache = new Map(); // "id|range|benchmark" → { at, body }

  const rangeKey = (id) => `${STORAGE_KEYS.range}.${id}`;
  const benchmarkKey = (id) => `${STORAGE_KEYS.benchmark}.${id}`;

  function placeBar(chart) {
    // Under the visible chart's head (title and change), above its plot.
    const plot = chart.root.querySelector(".chart-plot");
    if (bar.parentNode !== chart.root || bar.nextSibling !== plot) chart.root.insertBefore(bar, plot);
  }

  function renderControls() {
    const perPortfolio = view !== null && view.id !== COMBINED;
    rangeGroup.hidden = !perPortfolio;
    for (const button of rangeButtons) {
      const on = button.dataset.range === range;
      button.setAttribute("aria-pressed", String(on));
      button.tabIndex = on ? 0 : -1;
    }
    benchmarkBox.hidden = !perPortfolio || range === LIVE;
    benchmarkSelect.value = benchmark;
    const live = !perPortfolio || range === LIVE;
    liveChart.root.hidden = !live;
    rangeChart.root.hidden = live;
    placeBar(live ? liveChart : rangeChart);
    stats.hidden = live;
    if (!live) legend.hidden = !benchmark;
    else legend.hidden = true;
    hint.hidden = !live;
    setText(
      hint,
      !perPortfolio
        ? "Ranges, returns and a benchmark are per portfolio: open a portfolio's tab to see them."
        : "1D is live, minute by minute. Pick 1W or longer for returns, max drawdown and a benchmark.",
    );
    node.dataset.range = perPortfolio ? range : LIVE;
  }

  function show(next) {
    const same = view !== null && view.id === next.id;
    view = { id: next.id, name: next.name, currency: next.currency };
    if (same) return;
    if (next.id === COMBINED) {
      range = LIVE;
      benchmark = "";
    } else {
      const remembered = storageGet(rangeKey(next.id));
      range = RANGES.some(([key]) => key === remembered) ? remembered : LIVE;
      const wanted = storageGet(benchmarkKey(next.id)) || "";
      benchmark = benchmarks.some((b) => b.symbol === wanted) ? wanted : "";
    }
    renderControls();
    load();
  }

  function chooseRange(key, { focus = false } = {}) {
    if (!view || view.id === COMBINED || !RANGES.some(([k]) => k === key)) return;
    range = key;
    storageSet(rangeKey(view.id), key);
    renderControls();
    if (focus) rangeButtons.find((b) => b.dataset.range === key)?.focus();
    load();
  }

  function chooseBenchmark(symbol) {
    if (!view || view.id === COMBINED) return;
    benchmark = benchmarks.some((b) => b.symbol === symbol) ? symbol : "";
    storageSet(benchmarkKey(view.id), benchmark || null);
    renderControls();
    load();
  }

  // ---- fetching

  function urlFor(id, rangeName, symbol) {
    const base = endpoint.replace(/\/0\/performance\/$/, `/${encodeURIComponent(id)}/performance/`);
    const params = new URLSearchParams({ range: rangeName });
    if (symbol) params.set("benchmark", symbol);
    return `${base}?${params}`;
  }

  async function load({ fresh = false } = {}) {
    if (!view || view.id === COMBINED || range === LIVE) {
      request?.controller.abort();
      request = null;
      return;
    }
    const key = `${view.id}|${range}|${benchmark}`;
    const hit = cache.get(key);
    if (!fresh && hit && Date.now() - hit.at < CACHE_MS) {
      request?.controller.abort();
      request = null;
      renderBody(hit.body);
      return;
    }
    if (request && request.key === key && !fresh) return; // already on its way
    request?.controller.abort();
    const controller = new AbortController();
    const mine = { key, controller };
    request = mine;
    const { id, currency } = view;
    const wanted = benchmark;
    node.setAttribute("aria-busy", "true");
    node.dataset.loading = "true";
    if (rangeChart.root.dataset.loaded !== key) {
      rangeChart.setData([], {});
      rangeChart.setEmpty(`Loading ${labelOf(range)}…`, "wait");
      clearFigures();
    }
    let body = null;
    let failure = null;
    try {
      const response = await fetchFn(urlFor(id, range, wanted), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        signal: controller.signal,
      });
      const text = await response.text();
      try {
        body = JSON.parse(text);
      } catch (err) {
        body = null;
      }
      if (!response.ok || body === null || typeof body !== "object") {
        failure = { status: response.status, message: body && body.error ? String(body.error) : null, signedOut: response.redirected };
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      failure = { status: 0, message: null };
    }
    if (request !== mine) return; // another range or view was picked meanwhile
    request = null;
    node.removeAttribute("aria-busy");
    delete node.dataset.loading;
    if (failure && failure.status === 400 && wanted) {
      // The benchmark went (an instrument removed since the page loaded): forget it and show the range without.
      console.warn(`Livefolio: benchmark ${wanted} refused: ${failure.message}`);
      benchmark = "";
      storageSet(benchmarkKey(id), null);
      renderControls();
      load();
      return;
    }
    if (failure) {
      renderFailure(failure);
      return;
    }
    cache.set(key, { at: Date.now(), body });
    rangeChart.root.dataset.loaded = key;
    renderBody(body);
  }

  function labelOf(key) {
    return (RANGES.find(([k]) => k === key) || [key, key])[1];
  }

  // ---- rendering a range

  function clearFigures() {
    for (const f of [twr, mwr, drawdown, bench]) {
      setText(f.value, "—");
      setText(f.sub, "");
      f.value.classList.remove("pos", "neg");
      f.value.removeAttribute("title");
    }
    bench.box.hidden = !benchmark;
    figures.hidden = false;
    help.hidden = false;
    note.hidden = true;
    problem.hidden = true;
    legend.replaceChildren();
  }

  function renderFailure({ status, message, signedOut }) {
    clearFigures();
    rangeChart.setData([], {});
    const why = signedOut
      ? "you seem to be signed out — reload the page to sign in again"
      : message || (status ? `the server answered ${status}` : "the server could not be reached");
    rangeChart.setEmpty(`Couldn't load ${labelOf(range)}: ${why}.`, "error");
    problem.querySelector(".perf-problem-text").textContent = `Couldn't load this range (${why}).`;
    problem.hidden = false;
    figures.hidden = true;
    help.hidden = true;
    node.dataset.state = "error";
  }

  function emptyText(body) {
    const priced = (body.series || []).some((p) => Number(p.value) !== 0);
    if (!priced && body.incomplete_days > 0) {
      return staff
        ? "No day in this range could be fully priced. Import daily closes with manage.py import_prices, then run manage.py rebuild_daily_values."
        : "No day in this range could be fully priced yet: daily closes are missing. Ask staff to import them.";
    }
    return staff
      ? "No daily history yet. It builds up every night; to fill the past, import daily closes with manage.py import_prices, then run manage.py rebuild_daily_values."
      : "No daily history yet: it builds up from tonight, one value per day. 1D shows today live.";
  }

  function renderBody(body) {
    clearFigures();
    const series = Array.isArray(body.series) ? body.series : [];
    const cur = body.currency || view.currency;
    const percent = Boolean(benchmark) && body.benchmark !== null && body.benchmark !== undefined;
    // The value line leaves out the zero before the first day (the range reaches back past the history).
    let start = 0;
    while (start < series.length - 1 && Number(series[start].value) === 0) start += 1;
    const shown = series.slice(start);
    const priced = shown.some((p) => Number(p.value) !== 0);
    node.dataset.state = priced ? "ready" : "empty";
    figures.hidden = !priced; // nothing to show but dashes: the plot says why
    help.hidden = !priced;

    if (!priced) {
      rangeChart.setTitle("Value");
      rangeChart.setData([], { change: null });
      rangeChart.setEmpty(emptyText(body), "info");
    } else if (percent) {
      const bm = body.benchmark;
      const main = series.map((p) => [dayMs(p.t), (Number(p.index) - 1) * 100]);
      const other = (bm.series || []).map((p) => [dayMs(p.t), (Number(p.index) - 1) * 100]);
      rangeChart.setTitle(`Return vs ${bm.symbol}`);
      rangeChart.setData(
        main,
        {
          value: (n) => formatPercent(n.toFixed(2)),
          tick: (n, step) => `${n.toFixed(step >= 1 ? 0 : step >= 0.1 ? 1 : 2)} %`,
          time: formatDay,
          change: null,
          label: view.name,
          compareLabel: bm.symbol,
        },
        { compare: other },
      );
      legend.replaceChildren(
        el("span", { class: "perf-key perf-key-main" }, el("span", { class: "perf-swatch", "aria-hidden": "true" }), `${view.name} (time-weighted)`),
        el("span", { class: "perf-key perf-key-compare" }, el("span", { class: "perf-swatch", "aria-hidden": "true" }), `${bm.symbol} (close, ${bm.currency})`),
      );
      if (!other.length) legend.append(el("span", { class: "perf-key-missing", text: `${bm.symbol} has no daily closes in this range.` }));
    } else {
      const flows = shown.slice(1).reduce((sum, p) => sum + Number(p.flow || 0), 0);
      rangeChart.setTitle("Value");
      rangeChart.setData(
        shown.map((p) => [dayMs(p.t), Number(p.value)]),
        {
          value: (n) => formatMoney(n.toFixed(2), cur),
          tick: (n, step) => formatMoney(n, cur, { digits: step >= 1 ? 0 : step >= 0.1 ? 1 : 2 }),
          time: formatDay,
          change: (abs, pct, since) =>
            `${formatMoney(abs.toFixed(2), cur, { signed: true })} since ${formatDay(since)}` +
            (flows ? ` (net deposits ${formatMoney(flows.toFixed(2), cur, { signed: true })})` : ""),
          label: null,
          compareLabel: null,
        },
      );
    }

    // The figures of the range.
    setText(twr.value, formatRatio(body.twr));
    setSignClass(twr.value, body.twr);
    setText(twr.sub, "cash flows taken out");
    const days = series.length > 1 ? Math.round((dayMs(series[series.length - 1].t) - dayMs(series[0].t)) / DAY_MS) : 0;
    const annual = days > YEAR_DAYS;
    const money = annual ? body.mwr_annualised : body.mwr;
    setText(mwr.term, annual ? "Money-weighted, a year" : "Money-weighted");
    mwr.term.title = annual ? HELP_MWR_ANNUAL : HELP_MWR;
    setText(mwr.value, formatRatio(money));
    setSignClass(mwr.value, money);
    setText(mwr.sub, annual ? `annualised over ${days} days` : "XIRR over the range");
    mwr.value.dataset.annualised = String(annual);
    const dd = body.max_drawdown;
    if (dd) {
      setText(drawdown.value, formatRatio(-dd.depth));
      setSignClass(drawdown.value, -dd.depth);
      const peak = formatDay(dayMs(dd.peak));
      const trough = formatDay(dayMs(dd.trough));
      setText(drawdown.sub, dd.depth > 0 ? `${formatShortDay(dayMs(dd.peak))} → ${formatShortDay(dayMs(dd.trough))}` : "no fall in this range");
      drawdown.value.title = dd.depth > 0 ? `From the high on ${peak} to the low on ${trough}` : "The growth never fell in this range";
    }
    for (const f of [twr, mwr]) if (f.value.textContent === "—") f.value.title = "Not enough priced days in this range";
    if (percent) {
      bench.box.hidden = false;
      setText(bench.term, body.benchmark.symbol);
      setText(bench.value, formatRatio(body.benchmark.return));
      setSignClass(bench.value, body.benchmark.return);
      setText(bench.sub, `price change, ${body.benchmark.currency}`);
    } else bench.box.hidden = true;

    const incomplete = Number(body.incomplete_days) || 0;
    note.hidden = incomplete === 0 || !priced;
    setText(
      note,
      incomplete
        ? `${incomplete} day${incomplete === 1 ? "" : "s"} in this range had a holding or currency without a daily close; ` +
            `${incomplete === 1 ? "it is" : "they are"} left out of the returns (deposits on ${incomplete === 1 ? "it" : "them"} count on the next priced day).` +
            (staff ? " Fill the gaps with manage.py import_prices, then manage.py rebuild_daily_values." : "")
        : "",
    );
    rangeChart.render();
  }

  // ---- events

  rangeGroup.addEventListener("click", (event) => {
    const button = event.target.closest("[data-range]");
    if (button) chooseRange(button.dataset.range);
  });
  rangeGroup.addEventListener("keydown", (event) => {
    const keys = { ArrowRight: 1, ArrowLeft: -1, Home: "first", End: "last" };
    const move = keys[event.key];
    if (move === undefined) return;
    event.preventDefault();
    const index = RANGES.findIndex(([k]) => k === range);
    const next = move === "first" ? 0 : move === "last" ? RANGES.length - 1 : (index + move + RANGES.length) % RANGES.length;
    chooseRange(RANGES[next][0], { focus: true });
  });
  benchmarkSelect.addEventListener("change", () => chooseBenchmark(benchmarkSelect.value));
  retry.addEventListener("click", () => load({ fresh: true }));

  renderControls();

  return {
    node,
    show,
    chooseRange,
    chooseBenchmark,
    /** A ledger changed: what was fetched is out of date; reload the range on screen. */
    invalidate() {
      cache.clear();
      load({ fresh: true }); // the range on screen stays up until the new figures arrive
    },
    get range() {
      return range;
    },
  };
}
