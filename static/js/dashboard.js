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
import { el, flash, setSignClass, setText } from "./dashboard/dom.js";
import { addDecimals, assetClassLabel, currencyName, formatAge, formatAxisMoney, formatClock, formatMoney, formatPercent, formatQuantity, isMissing, signOf, toNumber } from "./dashboard/format.js";
import { COMBINED, mergeView, orderedRows, viewModel } from "./dashboard/model.js";
import { STORAGE_KEYS, storageGet, storageSet } from "./dashboard/storage.js";
import { LiveSocket } from "./livesocket.js";

const DEFAULT_LOGIN_URL = "/accounts/login/?next=/";
const MISSING_REASONS = { no_rate: "no FX rate", no_price: "no price", no_reference: "no previous close" };

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
