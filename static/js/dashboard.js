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
//
// This module applies the frames and wires the parts of the page, one module each in
// dashboard/: tabs.js (the view bar), totals.js, chart-cards.js, holdings.js and
// status.js (the Replay badge; ../staleness.js draws the connection badge); model.js keeps the views' data;
// format.js, dom.js and storage.js are the helpers they share.

import { LiveSocket } from "./livesocket.js";
import { createChartCards } from "./dashboard/chart-cards.js";
import { el } from "./dashboard/dom.js";
import { createHoldings } from "./dashboard/holdings.js";
import { COMBINED, mergeView, viewModel } from "./dashboard/model.js";
import { anyReplayPrice, renderReplayBadge } from "./dashboard/status.js";
import { createConnectionStatus, pageStaleAfterMs } from "./staleness.js";
import { createViewBar } from "./dashboard/tabs.js";
import { createAlerts } from "./dashboard/alerts.js";
import { createToasts } from "./dashboard/toast.js";
import { createWatchlist } from "./dashboard/watchlist.js";
import { createTotals } from "./dashboard/totals.js";

const DEFAULT_LOGIN_URL = "/accounts/login/?next=/";

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
  // One threshold for every live page (staleness.js): <body data-stale-after-ms>, from LIVE_STALE_AFTER_MS.
  const staleAfterMs = Number(config.staleAfterMs) || pageStaleAfterMs();

  const state = {
    /** id → view model (see viewModel); tab order in `order`. */
    views: new Map(),
    order: [],
    selectedId: null,
    viewCurrencies: [],
    combinedCurrency: null,
    currencySyncDue: true, // after (re)connecting, the first snapshot re-asks for the remembered currency
    pendingCurrency: null,
  };
  let ui = null;
  /** Which view is on screen (its totals and rows are kept by their parts). */
  let shownViewId = null;

  const status = createConnectionStatus({
    root,
    indicator,
    now,
    staleAfterMs,
    onLive: () => {
      state.currencySyncDue = true;
    },
  });
  const viewBar = createViewBar({ state, send, onSwitch: () => renderSelected({ animate: false }) });

  // ---- page skeleton (built on the first snapshot with a portfolio)

  function buildUi() {
    const totals = createTotals();
    const charts = createChartCards();
    const holdings = createHoldings({ now, staleAfterMs });
    const panel = el("section", { class: "view", id: "view-panel", role: "tabpanel", "data-testid": "view-panel" }, ...totals.nodes, charts.node, holdings.card);
    const dashboardNode = el("div", { class: "dashboard" }, viewBar.build(panel), panel);
    return { dashboardNode, panel, totals, charts, holdings };
  }

  function ensureUi() {
    if (!ui) ui = buildUi();
    if (ui.dashboardNode.parentNode !== root) root.replaceChildren(ui.dashboardNode);
    return ui;
  }

  // ---- the selected view

  function renderSelected({ animate }) {
    const view = state.views.get(state.selectedId);
    if (!view) return;
    const same = shownViewId === view.id;
    ui.panel.dataset.viewId = view.id;
    ui.totals.render(view, { animate: animate && same });
    ui.holdings.render(view, { animate: animate && same, sameView: same });
    ui.charts.render(view);
    shownViewId = view.id;
  }

  // ---- frames

  function renderSnapshot(frame) {
    const list = Array.isArray(frame.portfolios) ? frame.portfolios : [];
    state.viewCurrencies = Array.isArray(frame.view_currencies) ? frame.view_currencies.map(String) : [];
    state.combinedCurrency = frame.combined_currency || null;
    state.views.clear();
    state.order = [];
    if (frame.combined) {
      const combined = viewModel({ name: "All portfolios", ...frame.combined, id: COMBINED }, state.combinedCurrency);
      state.views.set(COMBINED, combined);
      state.order.push(COMBINED);
    }
    for (const raw of list) {
      const view = viewModel(raw);
      state.views.set(view.id, view);
      state.order.push(view.id);
    }
    root.setAttribute("aria-busy", "false");
    if (emptyState) emptyState.hidden = list.length > 0;
    if (list.length === 0) {
      state.selectedId = null;
      shownViewId = null;
      ui?.holdings.forget();
      root.replaceChildren();
      return;
    }
    ensureUi();
    viewBar.syncCurrency(frame);
    if (!state.views.has(state.selectedId)) state.selectedId = viewBar.defaultView();
    viewBar.render();
    // A snapshot follows a (re)connect or a ledger change: ranges fetched before may be out of date.
    ui.charts.performance.invalidate();
    // A snapshot of the view already on screen (a ledger change) flashes what moved.
    renderSelected({ animate: shownViewId === state.selectedId });
  }

  function applyUpdate(frame) {
    const at = now();
    const patches = [...(Array.isArray(frame.portfolios) ? frame.portfolios : [])];
    if (frame.combined) patches.push({ ...frame.combined, id: COMBINED });
    let selectedChanged = false;
    for (const patch of patches) {
      const view = state.views.get(String(patch.id));
      if (!view) continue; // not in our snapshot; the next snapshot will bring it
      mergeView(view, patch, at);
      if (view.id === state.selectedId) selectedChanged = true;
    }
    if (selectedChanged && ui) renderSelected({ animate: true });
  }

  function handleError(frame) {
    if (frame.code === "unknown_currency") viewBar.rejectCurrency();
    console.warn(`Livefolio server error ${frame.code}: ${frame.message}`);
  }

  /** Apply one decoded server frame. */
  function applyFrame(frame) {
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "snapshot":
        renderSnapshot(frame);
        status.pricesArrived({ replay: anyReplayPrice(state.views) });
        status.render();
        renderReplayBadge(state.views);
        break;
      case "update":
        applyUpdate(frame);
        status.pricesArrived({ replay: anyReplayPrice(state.views) });
        status.render();
        renderReplayBadge(state.views);
        break;
      case "pong":
      case "alert": // alerts.js shows it
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
    ui?.holdings.refreshPriceAges();
    status.render();
  }

  function handleSocketState({ state: socketState, retryAt: at }) {
    if (socketState === "unauthenticated") {
      status.setConnectionState(socketState);
      window.location.assign(loginUrl);
      return;
    }
    status.setConnectionState(socketState, { retryAt: at ?? null });
  }

  status.render();

  return {
    applyFrame,
    setConnectionState: status.setConnectionState,
    handleSocketState,
    tick,
    selectView: (id) => viewBar.selectView(String(id)),
    chooseCurrency: viewBar.chooseCurrency,
    get state() {
      return status.view().state;
    },
    get selectedView() {
      return state.selectedId;
    },
    get views() {
      return state.views;
    },
    /** The value chart's range controls (tests and debugging). */
    get performance() {
      return ui ? ui.charts.performance : null;
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

  // The watchlist and alerts cards read the same stream (dashboard/watchlist.js, dashboard/alerts.js).
  const watchlist = createWatchlist(document.getElementById("watchlist"));
  const alerts = createAlerts({
    toasts: createToasts(document.getElementById("toasts")),
    list: document.getElementById("notification-list"),
    permissionButton: document.getElementById("notify-permission"),
    alertsCard: document.getElementById("alerts"),
  });
  const onFrame = (frame) => {
    dashboard.applyFrame(frame);
    watchlist.applyFrame(frame);
    alerts.applyFrame(frame);
  };

  if (config.url) {
    socket = new LiveSocket(config.url, {
      onState: dashboard.handleSocketState,
      onMessage: onFrame,
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
