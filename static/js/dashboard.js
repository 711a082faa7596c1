// Renders the /ws/portfolio/ stream into #portfolios and drives #connection-status.
//
// Rendering does not need a socket: `createDashboard(...)` returns an object whose
// `applyFrame(frame)` takes protocol frames directly. The page instance is also
// exposed as `window.livefolioDashboard` for tests and debugging.

import { LiveSocket } from "./livesocket.js";

const DEFAULT_LOGIN_URL = "/accounts/login/?next=/";
const FLASH_FIELDS = ["price", "market_value", "pnl", "pnl_pct"];
const TOTAL_FLASH_FIELDS = ["market_value", "pnl", "pnl_pct"];

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
export function formatMoney(value, currency, { keepPrecision = false, signed = false, precisionOf = null } = {}) {
  if (isMissing(value)) return "—";
  const std = currencyDigits(currency);
  const source = isMissing(precisionOf) ? value : precisionOf;
  const digits = keepPrecision ? Math.min(20, Math.max(std, decimalsOf(source))) : std;
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

export function formatQuantity(value) {
  if (isMissing(value)) return "—";
  const fmt = cachedFormatter("qty", () => new Intl.NumberFormat(undefined, { maximumFractionDigits: 8 }));
  return fmt.format(fmtInput(value));
}

export function formatPercent(value) {
  if (isMissing(value)) return "—";
  const fmt = cachedFormatter("pct", () =>
    new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: "exceptZero" }),
  );
  return `${fmt.format(fmtInput(value))} %`;
}

export function formatClock(ts) {
  const fmt = cachedFormatter("clock", () =>
    new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }),
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

/** -1, 0 or 1 for a decimal string; null when there is no value. */
function signOf(value) {
  if (isMissing(value)) return null;
  const n = Number(value);
  if (Number.isNaN(n)) return null;
  return n > 0 ? 1 : n < 0 ? -1 : 0;
}

// ---------------------------------------------------------------- DOM helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "scope" || key === "title") {
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

// ---------------------------------------------------------------- rendering

const COLUMNS = [
  { field: "symbol", label: "Symbol", numeric: false },
  { field: "quantity", label: "Quantity", numeric: true },
  { field: "average_cost", label: "Avg cost", numeric: true },
  { field: "price", label: "Last price", numeric: true },
  { field: "market_value", label: "Market value", numeric: true },
  { field: "pnl", label: "Unrealised P&L", numeric: true },
  { field: "pnl_pct", label: "P&L %", numeric: true },
  { field: "price_ts", label: "Price time", numeric: true },
];

export function createDashboard({ root, indicator, config = {}, loginUrl = DEFAULT_LOGIN_URL, emptyState = null, now = () => Date.now() }) {
  const staleAfterMs = Number(config.staleAfterMs) || 10_000;
  /** id → { id, section, totals: {field: node}, totalsData, note, tbody, rows: Map(symbol → {tr, cells, data}) } */
  const portfolios = new Map();

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
    if (state === "live") lastFrameAt = now(); // the stale clock starts at open
    renderIndicator();
  }

  // ---- price-time cells

  function renderPriceTime(cell, ts) {
    cell.replaceChildren();
    cell.classList.remove("is-stale");
    if (isMissing(ts)) {
      cell.textContent = "—";
      cell.dataset.ts = "";
      return;
    }
    cell.dataset.ts = String(ts);
    const time = el("time", { class: "clock", dateTime: new Date(ts).toISOString(), text: formatClock(ts) });
    const age = el("span", { class: "age" });
    cell.append(time, age);
    refreshAge(cell);
  }

  function refreshAge(cell) {
    const ts = Number(cell.dataset.ts);
    if (!cell.dataset.ts || Number.isNaN(ts)) return;
    const ageMs = now() - ts;
    const age = cell.querySelector(".age");
    const text = formatAge(ageMs);
    if (age && age.textContent !== text) age.textContent = text;
    cell.classList.toggle("is-stale", ageMs > staleAfterMs);
  }

  // ---- rows

  function fillRowCell(cells, field, row) {
    const cell = cells[field];
    switch (field) {
      case "quantity":
        cell.textContent = formatQuantity(row.quantity);
        break;
      case "average_cost":
        cell.textContent = formatMoney(row.average_cost, row.currency, { keepPrecision: true, precisionOf: row.price });
        break;
      case "price":
        cell.textContent = formatMoney(row.price, row.currency, { keepPrecision: true });
        break;
      case "market_value":
        cell.textContent = formatMoney(row.market_value, row.currency);
        break;
      case "pnl":
        cell.textContent = formatMoney(row.pnl, row.currency, { signed: true });
        setSignClass(cell, row.pnl);
        break;
      case "pnl_pct":
        cell.textContent = formatPercent(row.pnl_pct);
        setSignClass(cell, row.pnl_pct);
        break;
      case "price_ts":
        renderPriceTime(cell, row.price_ts);
        break;
      default:
        break;
    }
  }

  function buildRow(row) {
    const tr = el("tr", { "data-symbol": row.symbol });
    const cells = {};
    for (const col of COLUMNS) {
      const td = el(col.field === "symbol" ? "th" : "td", {
        class: col.numeric ? `num col-${col.field}` : `col-${col.field}`,
        "data-field": col.field,
        scope: col.field === "symbol" ? "row" : undefined,
      });
      cells[col.field] = td;
      tr.append(td);
    }
    cells.symbol.append(
      el("span", { class: "symbol", text: row.symbol }),
      el("span", { class: "instrument-name", text: row.name || "" }),
    );
    for (const col of COLUMNS) if (col.field !== "symbol") fillRowCell(cells, col.field, row);
    return { tr, cells, data: { ...row } };
  }

  function updateRow(entry, row) {
    const merged = { ...entry.data, ...row };
    for (const col of COLUMNS) {
      if (col.field === "symbol") continue;
      const before = entry.data[col.field];
      const after = merged[col.field];
      const currencyChanged = merged.currency !== entry.data.currency;
      if (before === after && !currencyChanged) continue;
      fillRowCell(entry.cells, col.field, merged);
      if (FLASH_FIELDS.includes(col.field)) flash(entry.cells[col.field], before, after);
    }
    if (row.name !== undefined && row.name !== entry.data.name) {
      entry.cells.symbol.querySelector(".instrument-name").textContent = row.name || "";
    }
    entry.data = merged;
  }

  // ---- totals

  function buildTotals(p) {
    const id = String(p.id);
    const stat = (label, field, testid) => {
      const value = el("dd", { class: "stat-value num", "data-testid": testid, "data-portfolio-id": id, "data-field": field });
      const box = el("div", { class: `stat stat-${field}` }, el("dt", { class: "stat-label", text: label }), value);
      return { box, value };
    };
    const mv = stat("Market value", "market_value", "total-value");
    const cost = stat("Cost", "cost", "total-cost");
    const pnl = stat("Unrealised P&L", "pnl", "total-pnl");
    const pct = stat("Return", "pnl_pct", "total-pnl-pct");
    const strip = el("dl", { class: "totals" }, mv.box, cost.box, pnl.box, pct.box);
    const note = el("p", { class: "totals-note", "data-testid": "totals-excluded", "data-portfolio-id": id, hidden: true });
    return { strip, note, nodes: { market_value: mv.value, cost: cost.value, pnl: pnl.value, pnl_pct: pct.value } };
  }

  function fillTotals(entry, totals, { animate }) {
    const prev = entry.totalsData || {};
    const cur = totals.currency || entry.currency;
    const text = {
      market_value: formatMoney(totals.market_value, cur),
      cost: formatMoney(totals.cost, cur),
      pnl: formatMoney(totals.pnl, cur, { signed: true }),
      pnl_pct: formatPercent(totals.pnl_pct),
    };
    for (const [field, node] of Object.entries(entry.totals)) {
      node.textContent = text[field];
      if (field === "pnl" || field === "pnl_pct") setSignClass(node, totals[field]);
      if (animate && TOTAL_FLASH_FIELDS.includes(field)) flash(node, prev[field], totals[field]);
    }
    const excluded = Array.isArray(totals.excluded) ? totals.excluded : [];
    entry.note.hidden = excluded.length === 0;
    entry.note.textContent = excluded.length ? `Totals exclude: ${excluded.join(", ")} (no price or no FX rate)` : "";
    entry.totalsData = { ...totals };
  }

  // ---- portfolio sections

  function buildPortfolio(p) {
    const id = String(p.id);
    const headingId = `portfolio-${id}-title`;
    const heading = el(
      "header",
      { class: "portfolio-header" },
      el("h2", { id: headingId, class: "portfolio-name", text: p.name }),
      el("span", { class: "currency-badge", title: "Base currency", text: p.base_currency }),
    );
    const totals = buildTotals(p);
    const tbody = el("tbody");
    const headRow = el("tr");
    for (const col of COLUMNS) {
      headRow.append(el("th", { scope: "col", class: col.numeric ? `num col-${col.field}` : `col-${col.field}`, text: col.label }));
    }
    const table = el("table", { class: "holdings" }, el("thead", {}, headRow), tbody);
    const emptyRows = el("p", { class: "holdings-empty", text: "No holdings yet.", hidden: true });
    const scroller = el("div", { class: "table-scroll", tabIndex: 0, role: "region", "aria-label": `Holdings in ${p.name}` }, table);
    const section = el(
      "section",
      { class: "portfolio card", "data-portfolio-id": id, "aria-labelledby": headingId },
      heading,
      totals.strip,
      totals.note,
      scroller,
      emptyRows,
    );
    const entry = {
      id,
      currency: p.base_currency,
      section,
      totals: totals.nodes,
      note: totals.note,
      totalsData: null,
      tbody,
      table,
      emptyRows,
      rows: new Map(),
    };
    for (const row of p.rows || []) {
      const r = buildRow(row);
      entry.rows.set(row.symbol, r);
      tbody.append(r.tr);
    }
    syncEmptyRows(entry);
    fillTotals(entry, p.totals || {}, { animate: false });
    return entry;
  }

  function syncEmptyRows(entry) {
    const none = entry.rows.size === 0;
    entry.emptyRows.hidden = !none;
    entry.table.parentElement.hidden = none;
  }

  function renderSnapshot(frame) {
    portfolios.clear();
    const list = Array.isArray(frame.portfolios) ? frame.portfolios : [];
    const sections = [];
    for (const p of list) {
      const entry = buildPortfolio(p);
      portfolios.set(entry.id, entry);
      sections.push(entry.section);
    }
    root.replaceChildren(...sections);
    root.setAttribute("aria-busy", "false");
    if (emptyState) emptyState.hidden = list.length > 0;
  }

  function applyUpdate(frame) {
    for (const p of frame.portfolios || []) {
      const entry = portfolios.get(String(p.id));
      if (!entry) continue; // not in our snapshot; the next snapshot will bring it
      for (const row of p.rows || []) {
        const existing = entry.rows.get(row.symbol);
        if (existing) {
          updateRow(existing, row);
        } else {
          const r = buildRow(row);
          entry.rows.set(row.symbol, r);
          entry.tbody.append(r.tr);
          syncEmptyRows(entry);
        }
      }
      if (p.totals) fillTotals(entry, p.totals, { animate: true });
    }
  }

  /** Apply one decoded server frame. */
  function applyFrame(frame) {
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "snapshot":
        lastFrameAt = now();
        renderSnapshot(frame);
        renderIndicator();
        break;
      case "update":
        lastFrameAt = now();
        applyUpdate(frame);
        renderIndicator();
        break;
      case "pong":
        break;
      case "error":
        console.warn(`Livefolio server error ${frame.code}: ${frame.message}`);
        break;
      default:
        console.warn("Livefolio: unknown frame type", frame.type);
    }
  }

  /** Once a second: ages, the stale check and the reconnect countdown. */
  function tick() {
    for (const entry of portfolios.values()) {
      for (const r of entry.rows.values()) refreshAge(r.cells.price_ts);
    }
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
    get state() {
      return indicatorView().state;
    },
    get portfolios() {
      return portfolios;
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
  const dashboard = createDashboard({
    root,
    indicator: document.getElementById("connection-status"),
    emptyState: document.getElementById("empty-state"),
    loginUrl: root.dataset.loginUrl || DEFAULT_LOGIN_URL,
    config,
  });
  setInterval(dashboard.tick, 1000);

  let socket = null;
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
