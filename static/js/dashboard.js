// Renders the /ws/portfolio/ stream (v2: views, allocation, history) into #portfolios
// and drives #connection-status.
//
// Rendering does not need a socket: `createDashboard(...)` returns an object whose
// `applyFrame(frame)` takes protocol frames directly. The page instance is also
// exposed as `window.livefolioDashboard` for tests and debugging.
//
// One view (a portfolio, or "combined" = all portfolios) is on screen at a time; the
// others are kept as data, updated by every frame, so switching is instant and their
// value lines keep growing while hidden.

import { createAllocationChart, createValueChart } from "./charts.js";
import { LiveSocket } from "./livesocket.js";

const DEFAULT_LOGIN_URL = "/accounts/login/?next=/";
const COMBINED = "combined";
// Live points between the minute history: at most one per LIVE_POINT_MS, the head moves in between.
const LIVE_POINT_MS = 5_000;
const HISTORY_SPAN_MS = 24 * 60 * 60 * 1000;
const STORAGE_KEYS = {
  view: "livefolio.view",
  currency: "livefolio.combinedCurrency",
  allocation: "livefolio.allocationMode",
};

// ---------------------------------------------------------------- formatting

const formatterCache = new Map();

function cachedFormatter(key, make) {
  let fmt = formatterCache.get(key);
  if (fmt === undefined) {
    try {
      fmt = make();
    } catch (err) {
      fmt = null; // e.g. a currency code Intl rejects; callers fall back.
    }
    formatterCache.set(key, fmt);
  }
  return fmt;
}

function isMissing(value) {
  return value === null || value === undefined || value === "";
}

/** Digits after the decimal point in a decimal string ("190.120" → 3). */
function decimalsOf(value) {
  const match = /\.(\d+)/.exec(String(value));
  return match ? match[1].length : 0;
}

function currencyDigits(currency) {
  const fmt = cachedFormatter(`cur:${currency}`, () => new Intl.NumberFormat(undefined, { style: "currency", currency }));
  return fmt ? fmt.resolvedOptions().maximumFractionDigits : 2;
}

// Intl formats decimal strings exactly where supported; elsewhere they go through Number.
function fmtInput(value) {
  return typeof value === "string" ? value : Number(value);
}

/**
 * Money in `currency`. With `keepPrecision`, shows at least as many decimals as
 * the server sent (prices of cheap coins need them), else the currency's usual digits.
 * `precisionOf` takes the decimals from another value instead (an average cost
 * shown as precisely as the instrument's price, not to ten places).
 */
export function formatMoney(value, currency, { keepPrecision = false, signed = false, precisionOf = null, digits: fixed = null } = {}) {
  if (isMissing(value)) return "—";
  const std = currencyDigits(currency);
  const source = isMissing(precisionOf) ? value : precisionOf;
  const digits = fixed !== null ? fixed : keepPrecision ? Math.min(20, Math.max(std, decimalsOf(source))) : std;
  const signDisplay = signed ? "exceptZero" : "auto";
  const fmt = cachedFormatter(`money:${currency}:${digits}:${signDisplay}`, () =>
    new Intl.NumberFormat(undefined, {
      style: "currency",
      currency,
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
      signDisplay,
    }),
  );
  if (fmt) return fmt.format(fmtInput(value));
  // Unknown or non-ISO code (e.g. "USDT"): a plain number and the code.
  const plain = cachedFormatter(`plain:${digits}:${signDisplay}`, () =>
    new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits, signDisplay }),
  );
  return `${plain.format(fmtInput(value))} ${currency || ""}`.trim();
}

/** A y-axis label: whole units unless the tick step needs decimals. */
export function formatAxisMoney(value, currency, step) {
  const digits = step >= 1 ? 0 : step >= 0.1 ? 1 : 2;
  return formatMoney(value, currency, { digits });
}

export function formatQuantity(value) {
  if (isMissing(value)) return "—";
  const fmt = cachedFormatter("qty", () => new Intl.NumberFormat(undefined, { maximumFractionDigits: 8 }));
  return fmt.format(fmtInput(value));
}

export function formatPercent(value, { signed = true } = {}) {
  if (isMissing(value)) return "—";
  const fmt = cachedFormatter(`pct:${signed}`, () =>
    new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: signed ? "exceptZero" : "auto" }),
  );
  return `${fmt.format(fmtInput(value))} %`;
}

export function formatClock(ts, { seconds = true } = {}) {
  const fmt = cachedFormatter(`clock:${seconds}`, () =>
    new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: seconds ? "2-digit" : undefined, hourCycle: "h23" }),
  );
  return fmt.format(new Date(ts));
}

export function formatAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** Exact sum of decimal strings ("33.10" + "1.20" → "34.30"); null if any is missing. */
export function addDecimals(...values) {
  if (values.some(isMissing)) return null;
  const scale = Math.max(...values.map(decimalsOf));
  let total = 0n;
  for (const value of values) {
    const [int, frac = ""] = String(value).replace(/^([+-]?)/, "").split(".");
    const negative = String(value).trim().startsWith("-");
    const units = BigInt(`${int || "0"}${frac.padEnd(scale, "0")}`);
    total += negative ? -units : units;
  }
  const negative = total < 0n;
  const digits = (negative ? -total : total).toString().padStart(scale + 1, "0");
  const whole = digits.slice(0, digits.length - scale);
  const frac = scale ? `.${digits.slice(digits.length - scale)}` : "";
  return `${negative ? "-" : ""}${whole}${frac}`;
}

/** -1, 0 or 1 for a decimal string; null when there is no value. */
function signOf(value) {
  if (isMissing(value)) return null;
  const n = Number(value);
  if (Number.isNaN(n)) return null;
  return n > 0 ? 1 : n < 0 ? -1 : 0;
}

function toNumber(value) {
  if (isMissing(value)) return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

const ASSET_CLASS_LABELS = { equity: "Equity", etf: "ETF", crypto: "Crypto", fx: "FX", bond: "Bond", fund: "Fund", cash: "Cash" };

function assetClassLabel(key) {
  if (isMissing(key)) return "";
  return ASSET_CLASS_LABELS[key] || String(key).replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

/** "US Dollar" for "USD", where the browser knows it. */
function currencyName(code) {
  if (isMissing(code)) return null;
  const names = cachedFormatter("currency-names", () => new Intl.DisplayNames(undefined, { type: "currency" }));
  try {
    const name = names ? names.of(code) : null;
    return name && name !== code ? name : null;
  } catch (err) {
    return null; // not a well-formed code
  }
}

const MISSING_REASONS = { no_rate: "no FX rate", no_price: "no price", no_reference: "no previous close" };

// ---------------------------------------------------------------- DOM helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "scope" || key === "title" || key === "type") {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function setSignClass(node, value) {
  const sign = signOf(value);
  node.classList.toggle("pos", sign === 1);
  node.classList.toggle("neg", sign === -1);
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

const FLASH_MS = 1000;
const flashTimers = new WeakMap();

/** Restart the flash animation on `node` if the value moved. */
function flash(node, oldValue, newValue) {
  if (isMissing(oldValue) || isMissing(newValue)) return;
  const before = Number(oldValue);
  const after = Number(newValue);
  if (Number.isNaN(before) || Number.isNaN(after) || before === after) return;
  node.classList.remove("flash-up", "flash-down");
  void node.offsetWidth; // reflow, so re-adding the class replays the animation
  node.classList.add(after > before ? "flash-up" : "flash-down");
  // A timer rather than animationend: that event never fires in hidden tabs or with
  // animations disabled, and a leftover class would swallow the next flash.
  clearTimeout(flashTimers.get(node));
  flashTimers.set(node, setTimeout(() => node.classList.remove("flash-up", "flash-down"), FLASH_MS + 50));
}

function storageGet(key) {
  try {
    return window.localStorage.getItem(key);
  } catch (err) {
    return null; // storage disabled: nothing is remembered, nothing breaks
  }
}

function storageSet(key, value) {
  try {
    if (value === null || value === undefined) window.localStorage.removeItem(key);
    else window.localStorage.setItem(key, String(value));
  } catch (err) {
    /* storage disabled or full */
  }
}

// ---------------------------------------------------------------- view models

/** A view as the page keeps it: the last known totals/rows/allocation and its value series. */
/** Row weights come from the allocation by instrument, which every frame carries whole, so no row's weight goes stale. */
function syncWeights(view) {
  const slices = Array.isArray(view.allocation && view.allocation.instrument) ? view.allocation.instrument : [];
  const weights = new Map(slices.map((slice) => [String(slice.key), slice.weight]));
  for (const [key, row] of view.rows) row.weight = weights.has(key) ? weights.get(key) : null;
}

function viewModel(raw, currencyFallback) {
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
    lastLiveAt: null, // when the newest live point was appended; null: the head is history
  };
  syncWeights(view);
  return view;
}

/** Holdings in server order, then cash rows. */
function orderedRows(view) {
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

// ---------------------------------------------------------------- holdings table

/** A status reason for a missing number, shown as a tooltip. */
function missingTitle(row, viewCurrency, field) {
  switch (row.status) {
    case "no_rate":
      return `No ${row.currency}/${viewCurrency} rate yet`;
    case "no_price":
      return `No price for ${row.symbol || row.key} yet`;
    case "no_reference":
      return field === "day_change" ? "No previous close yet" : null;
    default:
      return null;
  }
}

function renderMissing(cell, row, ctx, field, { pill = false } = {}) {
  const title = missingTitle(row, ctx.currency, field);
  const label = pill && row.status === "no_rate" ? "no rate" : pill && row.status === "no_price" ? "no price" : "—";
  cell.replaceChildren(el("span", { class: label === "—" ? "na" : "status-pill", text: label, title: title || undefined }));
}

/** Value cell: "no rate" / "no price" instead of a number when the server could not value the row. */
function renderValue(cell, row, ctx) {
  if (isMissing(row.market_value)) {
    renderMissing(cell, row, ctx, "market_value", { pill: true });
    return;
  }
  cell.replaceChildren(formatMoney(row.market_value, ctx.currency));
}

/** Absolute change over a smaller percentage, coloured by sign. */
function renderChange(cell, row, ctx, absField, pctField) {
  setSignClass(cell, isMissing(row[absField]) ? row[pctField] : row[absField]);
  if (row.kind === "cash" && isMissing(row[absField]) && isMissing(row[pctField])) {
    cell.replaceChildren();
    return;
  }
  if (isMissing(row[absField]) && isMissing(row[pctField])) {
    renderMissing(cell, row, ctx, absField);
    return;
  }
  const abs = isMissing(row[absField])
    ? el("span", { class: "na", text: "—", title: missingTitle(row, ctx.currency, absField) || undefined })
    : el("span", { class: "cell-main", text: formatMoney(row[absField], ctx.currency, { signed: true }) });
  const pct = isMissing(row[pctField]) ? null : el("span", { class: "cell-sub", text: formatPercent(row[pctField]) });
  cell.replaceChildren(abs, pct || "");
}

const COLUMNS = [
  {
    field: "instrument",
    label: "Instrument",
    deps: ["symbol", "name", "asset_class", "kind", "currency"],
    render(cell, row) {
      const cash = row.kind === "cash";
      const text = cash ? row.currency || row.symbol : row.symbol || row.key;
      // A holding's symbol opens its instrument page (/market/<symbol>/; a slash in EUR/USD stays a slash).
      const symbol = cash
        ? el("span", { class: "symbol", text })
        : el("a", { class: "symbol", text, href: `/market/${String(text).split("/").map(encodeURIComponent).join("/")}/`, title: `${text}: chart, trades and order book` });
      const badgeClass = cash ? "cash" : row.asset_class;
      const badge = badgeClass ? el("span", { class: "class-badge", "data-class": badgeClass, text: assetClassLabel(badgeClass) }) : null;
      const nameText = (cash && currencyName(row.currency)) || row.name || "";
      const name = el("span", { class: "instrument-name", text: nameText, title: nameText || undefined });
      cell.replaceChildren(el("span", { class: "instrument-line" }, symbol, badge), name);
    },
  },
  {
    field: "quantity",
    label: "Quantity",
    numeric: true,
    deps: ["quantity", "kind", "currency"],
    render(cell, row) {
      cell.textContent = row.kind === "cash" ? formatMoney(row.quantity, row.currency, { keepPrecision: true }) : formatQuantity(row.quantity);
    },
  },
  {
    field: "average_cost",
    label: "Avg cost",
    numeric: true,
    deps: ["average_cost", "price", "currency", "kind"],
    render(cell, row) {
      if (row.kind === "cash") cell.textContent = "";
      else cell.textContent = formatMoney(row.average_cost, row.currency, { keepPrecision: true, precisionOf: row.price });
    },
  },
  {
    field: "price",
    label: "Price",
    numeric: true,
    flash: "price",
    deps: ["price", "price_ts", "currency", "kind", "status"],
    render(cell, row, ctx) {
      cell.dataset.ts = isMissing(row.price_ts) ? "" : String(row.price_ts);
      if (row.kind === "cash") {
        cell.replaceChildren();
        return;
      }
      if (isMissing(row.price)) {
        renderMissing(cell, row, ctx, "price");
        return;
      }
      cell.replaceChildren(formatMoney(row.price, row.currency, { keepPrecision: true }));
      ctx.refreshPriceAge(cell);
    },
  },
  {
    field: "market_value",
    label: "Value",
    numeric: true,
    flash: "market_value",
    currencyHeader: true,
    deps: ["market_value", "status", "currency"],
    render: renderValue,
  },
  {
    field: "day_change",
    label: "Day change",
    numeric: true,
    flash: "day_change",
    deps: ["day_change", "day_change_pct", "status", "kind", "currency"],
    render: (cell, row, ctx) => renderChange(cell, row, ctx, "day_change", "day_change_pct"),
  },
  {
    field: "unrealised_pnl",
    label: "Unrealised P&L",
    numeric: true,
    flash: "unrealised_pnl",
    deps: ["unrealised_pnl", "unrealised_pnl_pct", "status", "kind", "currency"],
    render: (cell, row, ctx) => renderChange(cell, row, ctx, "unrealised_pnl", "unrealised_pnl_pct"),
  },
  {
    field: "weight",
    label: "Weight",
    numeric: true,
    deps: ["weight", "status"],
    render(cell, row, ctx) {
      const weight = toNumber(row.weight);
      if (weight === null) {
        renderMissing(cell, row, ctx, "weight");
        return;
      }
      const bar = el("span", { class: "weight-bar", "aria-hidden": "true" }, el("span", { class: "weight-fill" }));
      bar.firstChild.style.width = `${Math.max(0, Math.min(100, weight))}%`;
      cell.replaceChildren(bar, el("span", { class: "weight-text", text: formatPercent(row.weight, { signed: false }) }));
    },
  },
];

// ---------------------------------------------------------------- dashboard

export function createDashboard({
  root,
  indicator,
  config = {},
  loginUrl = DEFAULT_LOGIN_URL,
  emptyState = null,
  now = () => Date.now(),
  send = () => false,
}) {
  const staleAfterMs = Number(config.staleAfterMs) || 10_000;

  /** id → view model (see viewModel); tab order in `order`. */
  const views = new Map();
  let order = [];
  let selectedId = null;
  let viewCurrencies = [];
  let combinedCurrency = null;
  let currencySyncDue = true; // after (re)connecting, the first snapshot re-asks for the remembered currency
  let pendingCurrency = null;
  let ui = null;
  /** What is on screen: which view, its totals and its rows (key → {tr, cells, data}). */
  const shown = { viewId: null, totals: null, rows: new Map() };

  let connection = "connecting"; // socket-level: connecting | live | reconnecting | unauthenticated | stopped
  let retryAt = null;
  let lastFrameAt = null;
  let shownState = null;
  let shownText = null;

  // ---- connection indicator

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
      currencySyncDue = true;
    }
    renderIndicator();
  }

  // ---- page skeleton (built on the first snapshot with a portfolio)

  function kpi(label, testid, { hero = false, withPct = false } = {}) {
    const value = el("div", { class: "kpi-value num", "data-testid": testid });
    const pct = withPct ? el("span", { class: "chip num", "data-testid": `${testid}-pct` }) : null;
    const sub = el("div", { class: "kpi-sub" }, pct);
    const card = el("div", { class: `kpi card${hero ? " kpi-hero" : ""}` }, el("div", { class: "kpi-label", text: label }), value, sub);
    return { card, value, pct, sub };
  }

  function figure(label, testid) {
    const value = el("dd", { class: "figure-value num", "data-testid": testid });
    const sub = el("span", { class: "figure-sub" });
    const box = el("div", { class: "figure" }, el("dt", { class: "figure-label", text: label }), value, sub);
    return { box, value, sub };
  }

  function buildUi() {
    const tabs = el("div", { class: "view-tabs", role: "tablist", "aria-label": "Portfolios" });
    const currencySelect = el("select", { class: "select", "data-testid": "view-currency", id: "view-currency" });
    const currencyHint = el("span", { class: "currency-hint", "aria-live": "polite" });
    const currencyBox = el(
      "div",
      { class: "view-currency", hidden: true },
      el("label", { class: "view-currency-label", htmlFor: "view-currency", text: "Show in" }),
      currencySelect,
      currencyHint,
    );
    const bar = el("div", { class: "view-bar" }, tabs, currencyBox);

    const total = kpi("Total value", "total-value", { hero: true });
    const dayChange = kpi("Day change", "day-change", { withPct: true });
    const unrealised = kpi("Unrealised P&L", "unrealised-pnl", { withPct: true });
    const kpis = el("div", { class: "kpis" }, total.card, dayChange.card, unrealised.card);

    const realised = figure("Realised P&L", "realised-pnl");
    const dividends = figure("Dividends & interest", "dividends");
    const fees = figure("Fees", "fees");
    const cash = figure("Cash", "cash-total");
    const deposits = figure("Net deposits", "net-deposits");
    const figures = el("dl", { class: "figures card" }, realised.box, dividends.box, fees.box, cash.box, deposits.box);
    const missing = el("p", { class: "totals-note", "data-testid": "totals-missing", role: "note", hidden: true });

    const valueChart = createValueChart({ title: "Value" });
    const allocationChart = createAllocationChart({
      title: "Allocation",
      mode: storageGet(STORAGE_KEYS.allocation) || "instrument",
      onModeChange: (mode) => storageSet(STORAGE_KEYS.allocation, mode),
    });
    const charts = el(
      "div",
      { class: "charts" },
      el("section", { class: "card chart-card chart-card-value", "aria-label": "Value over time" }, valueChart.root),
      el("section", { class: "card chart-card chart-card-alloc", "aria-label": "Allocation" }, allocationChart.root),
    );

    const headRow = el("tr");
    const currencyHeads = [];
    for (const col of COLUMNS) {
      const th = el("th", { scope: "col", class: col.numeric ? `num col-${col.field}` : `col-${col.field}`, text: col.label });
      if (col.currencyHeader) {
        const ccy = el("span", { class: "th-ccy" });
        th.append(ccy);
        currencyHeads.push(ccy);
      }
      headRow.append(th);
    }
    const tbody = el("tbody");
    const table = el("table", { class: "holdings", "data-testid": "holdings" }, el("thead", {}, headRow), tbody);
    const scroller = el("div", { class: "table-scroll", tabIndex: 0, role: "region", "aria-label": "Holdings" }, table);
    const holdingsMeta = el("span", { class: "card-meta" });
    const emptyRows = el("p", { class: "holdings-empty", text: "No holdings yet.", hidden: true });
    const holdings = el(
      "section",
      { class: "card holdings-card", "aria-labelledby": "holdings-title" },
      el("header", { class: "card-head" }, el("h2", { class: "card-title", id: "holdings-title", text: "Holdings" }), holdingsMeta),
      scroller,
      emptyRows,
    );

    const panel = el("section", { class: "view", id: "view-panel", role: "tabpanel", "data-testid": "view-panel" }, kpis, figures, missing, charts, holdings);
    const dashboardNode = el("div", { class: "dashboard" }, bar, panel);

    tabs.addEventListener("click", (event) => {
      const tab = event.target.closest("[data-view-id]");
      if (tab) selectView(tab.dataset.viewId, { focus: false });
    });
    tabs.addEventListener("keydown", onTabKey);
    currencySelect.addEventListener("change", () => chooseCurrency(currencySelect.value));

    return {
      dashboardNode,
      tabs,
      panel,
      currencyBox,
      currencySelect,
      currencyHint,
      total,
      dayChange,
      unrealised,
      realised,
      dividends,
      fees,
      cash,
      deposits,
      missing,
      valueChart,
      allocationChart,
      currencyHeads,
      tbody,
      scroller,
      holdingsMeta,
      emptyRows,
    };
  }

  function ensureUi() {
    if (!ui) ui = buildUi();
    if (ui.dashboardNode.parentNode !== root) root.replaceChildren(ui.dashboardNode);
    return ui;
  }

  // ---- switcher

  function renderTabs() {
    const nodes = order.map((id) => {
      const view = views.get(id);
      const selected = id === selectedId;
      return el(
        "button",
        {
          type: "button",
          class: `view-tab${id === COMBINED ? " view-tab-combined" : ""}`,
          role: "tab",
          id: `view-tab-${id}`,
          "data-testid": "view-tab",
          "data-view-id": id,
          "aria-selected": String(selected),
          "aria-controls": "view-panel",
          tabIndex: selected ? 0 : -1,
        },
        el("span", { class: "view-tab-name", text: view.name }),
        el("span", { class: "view-tab-ccy", text: view.currency }),
      );
    });
    ui.tabs.replaceChildren(...nodes);
    ui.panel.setAttribute("aria-labelledby", `view-tab-${selectedId}`);
  }

  function onTabKey(event) {
    const keys = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: "first", End: "last" };
    const move = keys[event.key];
    if (move === undefined) return;
    event.preventDefault();
    const index = order.indexOf(selectedId);
    const next = move === "first" ? 0 : move === "last" ? order.length - 1 : (index + move + order.length) % order.length;
    selectView(order[next], { focus: true });
  }

  function renderCurrencyBox() {
    const show = selectedId === COMBINED && viewCurrencies.length > 0;
    ui.currencyBox.hidden = !show;
    if (!show) return;
    const options = viewCurrencies.map((code) => el("option", { value: code, text: code }));
    const same = ui.currencySelect.options.length === options.length && options.every((o, i) => ui.currencySelect.options[i].value === o.value);
    if (!same) ui.currencySelect.replaceChildren(...options);
    ui.currencySelect.value = pendingCurrency || combinedCurrency || viewCurrencies[0];
    ui.currencyBox.classList.toggle("is-pending", pendingCurrency !== null);
    setText(ui.currencyHint, pendingCurrency ? `Switching to ${pendingCurrency}…` : "");
  }

  function selectView(id, { focus = false } = {}) {
    if (!views.has(id)) return;
    const changed = id !== selectedId;
    selectedId = id;
    storageSet(STORAGE_KEYS.view, id);
    renderTabs();
    renderCurrencyBox();
    if (changed) renderSelected({ animate: false });
    if (focus) document.getElementById(`view-tab-${id}`)?.focus();
  }

  function defaultView() {
    const remembered = storageGet(STORAGE_KEYS.view);
    if (remembered && views.has(remembered)) return remembered;
    return order[0] || null;
  }

  // ---- combined currency

  function requestCurrency(code) {
    const ok = Boolean(send({ type: "view", currency: code }));
    pendingCurrency = ok ? code : null;
    return ok;
  }

  function chooseCurrency(code) {
    if (!viewCurrencies.includes(code)) return;
    storageSet(STORAGE_KEYS.currency, code);
    if (code === combinedCurrency) {
      pendingCurrency = null;
    } else if (!requestCurrency(code)) {
      currencySyncDue = true; // offline: asked for again after the next connect's snapshot
    }
    renderCurrencyBox();
  }

  function syncCurrency(frame) {
    if (pendingCurrency !== null && frame.combined_currency === pendingCurrency) pendingCurrency = null;
    if (!currencySyncDue || !frame.combined) return;
    currencySyncDue = false;
    const wanted = storageGet(STORAGE_KEYS.currency);
    if (wanted && wanted !== frame.combined_currency && viewCurrencies.includes(wanted) && !requestCurrency(wanted)) {
      currencySyncDue = true;
    }
  }

  // ---- totals

  function renderTotals(view, { animate }) {
    const t = view.totals || {};
    const prev = animate && shown.totals ? shown.totals : {};
    const cur = view.currency;
    const money = (value, opts) => formatMoney(value, cur, opts);
    const id = view.id;

    for (const node of [ui.total.value, ui.dayChange.value, ui.unrealised.value, ui.realised.value, ui.dividends.value, ui.fees.value, ui.cash.value, ui.deposits.value]) {
      node.dataset.portfolioId = id;
    }

    setText(ui.total.value, money(t.total_value));
    setText(
      ui.total.sub,
      isMissing(t.market_value) && isMissing(t.cost) ? "" : `Holdings ${money(t.market_value)} · Cost ${money(t.cost)}`,
    );

    for (const [card, abs, pct] of [
      [ui.dayChange, "day_change", "day_change_pct"],
      [ui.unrealised, "unrealised_pnl", "unrealised_pnl_pct"],
    ]) {
      setText(card.value, money(t[abs], { signed: true }));
      setSignClass(card.value, t[abs]);
      setText(card.pct, formatPercent(t[pct]));
      setSignClass(card.pct, t[pct]);
      card.pct.hidden = isMissing(t[pct]);
    }

    setText(ui.realised.value, money(t.realised_pnl, { signed: true }));
    setSignClass(ui.realised.value, t.realised_pnl);

    // Unknown dividends stay unknown; unknown interest is left out rather than guessed as 0.
    const income = isMissing(t.interest) ? t.dividends : addDecimals(t.dividends, t.interest);
    setText(ui.dividends.value, money(income));
    setText(ui.dividends.sub, signOf(t.interest) ? `incl. ${money(t.interest)} interest` : "");
    ui.dividends.value.title = `Dividends ${money(t.dividends)} · interest ${money(t.interest)}`;

    setText(ui.fees.value, money(t.fees));
    setText(ui.cash.value, money(t.cash));
    setText(ui.deposits.value, money(t.net_deposits));

    if (animate) {
      flash(ui.total.value, prev.total_value, t.total_value);
      flash(ui.dayChange.value, prev.day_change, t.day_change);
      flash(ui.unrealised.value, prev.unrealised_pnl, t.unrealised_pnl);
      flash(ui.realised.value, prev.realised_pnl, t.realised_pnl);
      flash(ui.cash.value, prev.cash, t.cash);
    }

    const missing = Array.isArray(t.missing) ? t.missing : [];
    ui.missing.hidden = missing.length === 0;
    const parts = missing.map((m) => {
      const row = view.rows.get(String(m.key));
      const label = row && row.kind === "cash" ? `Cash ${row.currency}` : row?.symbol || String(m.key);
      return `${label} (${MISSING_REASONS[m.reason] || String(m.reason || "unknown").replace(/_/g, " ")})`;
    });
    setText(ui.missing, parts.length ? `Left out of totals: ${parts.join(", ")}` : "");
    shown.totals = { ...t };
  }

  // ---- rows

  function rowContext(view) {
    return { currency: view.currency, refreshPriceAge };
  }

  function refreshPriceAge(cell) {
    const ts = Number(cell.dataset.ts);
    if (!cell.dataset.ts || Number.isNaN(ts)) {
      cell.removeAttribute("title");
      cell.classList.remove("is-stale");
      return;
    }
    const ageMs = now() - ts;
    const title = `Price at ${formatClock(ts)} (${formatAge(ageMs)})`;
    if (cell.title !== title) cell.title = title;
    cell.classList.toggle("is-stale", ageMs > staleAfterMs);
  }

  function buildRow(row, ctx) {
    const cash = row.kind === "cash";
    const tr = el("tr", {
      class: cash ? "row-cash" : "row-holding",
      "data-key": row.key,
      "data-kind": row.kind || "holding",
      "data-status": row.status || "ok",
      "data-symbol": cash ? undefined : row.symbol,
    });
    const cells = {};
    for (const col of COLUMNS) {
      const isHead = col.field === "instrument";
      const cell = el(isHead ? "th" : "td", {
        class: col.numeric ? `num col-${col.field}` : `col-${col.field}`,
        "data-field": col.field,
        scope: isHead ? "row" : undefined,
      });
      col.render(cell, row, ctx);
      cells[col.field] = cell;
      tr.append(cell);
    }
    return { tr, cells, data: { ...row } };
  }

  function updateRow(entry, row, ctx, { animate }) {
    for (const col of COLUMNS) {
      if (!col.deps.some((field) => entry.data[field] !== row[field])) continue;
      col.render(entry.cells[col.field], row, ctx);
      if (animate && col.flash) flash(entry.cells[col.field], entry.data[col.flash], row[col.flash]);
    }
    entry.tr.dataset.status = row.status || "ok";
    entry.data = { ...row };
  }

  /** Bring the table in line with the view: update, add, remove and order rows by key. */
  function renderRows(view, { animate }) {
    const ctx = rowContext(view);
    if (shown.viewId !== view.id) {
      shown.rows.clear();
      ui.tbody.replaceChildren();
    }
    const rows = orderedRows(view);
    const seen = new Set();
    const nodes = [];
    for (const row of rows) {
      const key = String(row.key);
      seen.add(key);
      let entry = shown.rows.get(key);
      if (entry && entry.data.kind !== row.kind) {
        entry.tr.remove();
        entry = null;
      }
      if (entry) updateRow(entry, row, ctx, { animate });
      else {
        entry = buildRow(row, ctx);
        shown.rows.set(key, entry);
      }
      nodes.push(entry.tr);
    }
    for (const [key, entry] of shown.rows) {
      if (!seen.has(key)) {
        entry.tr.remove();
        shown.rows.delete(key);
      }
    }
    const current = ui.tbody.children;
    if (nodes.length !== current.length || nodes.some((node, i) => current[i] !== node)) ui.tbody.replaceChildren(...nodes);
    for (const tr of nodes) tr.classList.remove("row-cash-first");
    const firstCash = nodes.find((tr) => tr.dataset.kind === "cash");
    if (firstCash && firstCash !== nodes[0]) firstCash.classList.add("row-cash-first");

    const holdings = rows.filter((r) => r.kind !== "cash").length;
    const cashRows = rows.length - holdings;
    const parts = [`${holdings} ${holdings === 1 ? "position" : "positions"}`];
    if (cashRows) parts.push(`${cashRows} cash`);
    parts.push(`values in ${view.currency}`);
    setText(ui.holdingsMeta, parts.join(" · "));
    for (const node of ui.currencyHeads) setText(node, view.currency);
    ui.emptyRows.hidden = rows.length > 0;
    ui.scroller.hidden = rows.length === 0;
  }

  // ---- charts

  function renderCharts(view) {
    const cur = view.currency;
    ui.valueChart.setData(view.series, {
      value: (n) => formatMoney(n.toFixed(2), cur),
      tick: (n, step) => formatAxisMoney(n, cur, step),
      time: (ts) => formatClock(ts, { seconds: false }),
      change: (abs, pct, since) =>
        `${formatMoney(abs.toFixed(2), cur, { signed: true })}${pct === null ? "" : ` (${formatPercent(pct.toFixed(2))})`} since ${formatClock(since, { seconds: false })}`,
    });
    ui.allocationChart.setData(view.allocation, {
      scope: view.id,
      value: (v) => formatMoney(v, cur),
      weight: (w) => formatPercent(Number(w).toFixed(2), { signed: false }),
      total: view.totals.total_value ?? null,
      totalLabel: "Total value",
    });
  }

  // ---- the selected view

  function renderSelected({ animate }) {
    const view = views.get(selectedId);
    if (!view) return;
    const same = shown.viewId === view.id;
    ui.panel.dataset.viewId = view.id;
    renderTotals(view, { animate: animate && same });
    renderRows(view, { animate: animate && same });
    renderCharts(view);
    shown.viewId = view.id;
  }

  // ---- frames

  function renderSnapshot(frame) {
    const list = Array.isArray(frame.portfolios) ? frame.portfolios : [];
    viewCurrencies = Array.isArray(frame.view_currencies) ? frame.view_currencies.map(String) : [];
    combinedCurrency = frame.combined_currency || null;
    views.clear();
    order = [];
    if (frame.combined) {
      const combined = viewModel({ name: "All portfolios", ...frame.combined, id: COMBINED }, combinedCurrency);
      views.set(COMBINED, combined);
      order.push(COMBINED);
    }
    for (const raw of list) {
      const view = viewModel(raw);
      views.set(view.id, view);
      order.push(view.id);
    }
    root.setAttribute("aria-busy", "false");
    if (emptyState) emptyState.hidden = list.length > 0;
    if (list.length === 0) {
      selectedId = null;
      shown.viewId = null;
      shown.rows.clear();
      root.replaceChildren();
      return;
    }
    ensureUi();
    syncCurrency(frame);
    if (!views.has(selectedId)) selectedId = defaultView();
    renderTabs();
    renderCurrencyBox();
    // A snapshot of the view already on screen (a ledger change) flashes what moved.
    renderSelected({ animate: shown.viewId === selectedId });
  }

  function mergeView(view, patch, at) {
    if (patch.totals) view.totals = { ...view.totals, ...patch.totals };
    if (patch.allocation) view.allocation = patch.allocation;
    for (const row of Array.isArray(patch.rows) ? patch.rows : []) {
      const key = String(row.key);
      view.rows.set(key, { ...(view.rows.get(key) || {}), ...row });
    }
    syncWeights(view);
    if (patch.totals) pushLivePoint(view, at);
  }

  function applyUpdate(frame) {
    const at = now();
    const patches = [...(Array.isArray(frame.portfolios) ? frame.portfolios : [])];
    if (frame.combined) patches.push({ ...frame.combined, id: COMBINED });
    let selectedChanged = false;
    for (const patch of patches) {
      const view = views.get(String(patch.id));
      if (!view) continue; // not in our snapshot; the next snapshot will bring it
      mergeView(view, patch, at);
      if (view.id === selectedId) selectedChanged = true;
    }
    if (selectedChanged && ui) renderSelected({ animate: true });
  }

  function handleError(frame) {
    if (frame.code === "unknown_currency") {
      pendingCurrency = null;
      storageSet(STORAGE_KEYS.currency, null);
      if (ui) renderCurrencyBox();
    }
    console.warn(`Livefolio server error ${frame.code}: ${frame.message}`);
  }

  /** "Replay" beside the connection status while any price shown comes from a replayed session. */
  function renderReplayBadge() {
    const badge = document.getElementById("replay-badge");
    if (!badge) return;
    badge.hidden = ![...views.values()].some((view) => [...view.rows.values()].some((row) => row.price_replay === true));
  }

  /** Apply one decoded server frame. */
  function applyFrame(frame) {
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "snapshot":
        lastFrameAt = now();
        renderSnapshot(frame);
        renderIndicator();
        renderReplayBadge();
        break;
      case "update":
        lastFrameAt = now();
        applyUpdate(frame);
        renderIndicator();
        renderReplayBadge();
        break;
      case "pong":
        break;
      case "error":
        handleError(frame);
        break;
      default:
        console.warn("Livefolio: unknown frame type", frame.type);
    }
  }

  /** Once a second: price ages, the stale check and the reconnect countdown. */
  function tick() {
    for (const entry of shown.rows.values()) refreshPriceAge(entry.cells.price);
    renderIndicator();
  }

  function handleSocketState({ state, retryAt: at }) {
    if (state === "unauthenticated") {
      setConnectionState(state);
      window.location.assign(loginUrl);
      return;
    }
    setConnectionState(state, { retryAt: at ?? null });
  }

  renderIndicator();

  return {
    applyFrame,
    setConnectionState,
    handleSocketState,
    tick,
    selectView: (id) => selectView(String(id)),
    chooseCurrency,
    get state() {
      return indicatorView().state;
    },
    get selectedView() {
      return selectedId;
    },
    get views() {
      return views;
    },
  };
}

// ---------------------------------------------------------------- page bootstrap

function readConfig() {
  const node = document.getElementById("live-config");
  if (!node) return null;
  try {
    return JSON.parse(node.textContent);
  } catch (err) {
    console.warn("Livefolio: bad #live-config", err);
    return null;
  }
}

export function boot() {
  const root = document.getElementById("portfolios");
  if (!root) return null;
  const config = readConfig() || {};
  let socket = null;
  const dashboard = createDashboard({
    root,
    indicator: document.getElementById("connection-status"),
    emptyState: document.getElementById("empty-state"),
    loginUrl: root.dataset.loginUrl || DEFAULT_LOGIN_URL,
    config,
    send: (message) => (socket ? socket.send(message) : false),
  });
  setInterval(dashboard.tick, 1000);

  if (config.url) {
    socket = new LiveSocket(config.url, {
      onState: dashboard.handleSocketState,
      onMessage: dashboard.applyFrame,
    });
    socket.start();
  }
  dashboard.socket = socket;
  dashboard.config = config;
  window.livefolioDashboard = dashboard;
  return dashboard;
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", boot, { once: true });
} else {
  boot();
}
