// The view bar above the panel: one tab per view (a portfolio, or "combined") and, on the
// combined view, the "Show in" currency select. Switching shows another view's data at
// once; the combined currency is asked of the server, which answers with a new snapshot.

import { el, setText } from "./dom.js";
import { COMBINED } from "./model.js";
import { STORAGE_KEYS, storageGet, storageSet } from "./storage.js";

/**
 * `state` is the dashboard's (see createDashboard): the bar draws its views, tab `order`
 * and currencies, sets `selectedId` when a tab is chosen, and keeps `pendingCurrency`
 * and `currencySyncDue` while it asks the server for a currency. `onSwitch()` renders
 * the newly selected view.
 */
export function createViewBar({ state, send, onSwitch }) {
  /** The bar's elements, and the panel the tabs control; null until built. */
  let ui = null;

  function build(panel) {
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

    tabs.addEventListener("click", (event) => {
      const tab = event.target.closest("[data-view-id]");
      if (tab) selectView(tab.dataset.viewId, { focus: false });
    });
    tabs.addEventListener("keydown", onTabKey);
    // Tabs that do not fit scroll sideways; the edge with more tabs behind it fades (app.css).
    tabs.addEventListener("scroll", updateOverflow, { passive: true });
    if (window.ResizeObserver) new ResizeObserver(updateOverflow).observe(tabs);
    currencySelect.addEventListener("change", () => chooseCurrency(currencySelect.value));

    ui = { tabs, panel, currencyBox, currencySelect, currencyHint };
    return bar;
  }

  // ---- tabs

  function updateOverflow() {
    if (!ui) return;
    const { tabs } = ui;
    const room = tabs.scrollWidth - tabs.clientWidth;
    const left = room > 1 && tabs.scrollLeft > 1;
    const right = room > 1 && tabs.scrollLeft < room - 1;
    if (tabs.dataset.moreLeft !== String(left)) tabs.dataset.moreLeft = String(left);
    if (tabs.dataset.moreRight !== String(right)) tabs.dataset.moreRight = String(right);
  }

  /** The selected tab, scrolled into the rail's view when the rail scrolls. */
  function revealSelected() {
    const tab = document.getElementById(`view-tab-${state.selectedId}`);
    if (!tab || !ui) return;
    const { tabs } = ui;
    if (tab.offsetLeft < tabs.scrollLeft) tabs.scrollLeft = tab.offsetLeft - 8;
    else if (tab.offsetLeft + tab.offsetWidth > tabs.scrollLeft + tabs.clientWidth) tabs.scrollLeft = tab.offsetLeft + tab.offsetWidth - tabs.clientWidth + 8;
    updateOverflow();
  }

  function renderTabs() {
    const nodes = state.order.map((id) => {
      const view = state.views.get(id);
      const selected = id === state.selectedId;
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
    ui.panel.setAttribute("aria-labelledby", `view-tab-${state.selectedId}`);
    revealSelected();
  }

  function onTabKey(event) {
    const keys = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: "first", End: "last" };
    const move = keys[event.key];
    if (move === undefined) return;
    event.preventDefault();
    const order = state.order;
    const index = order.indexOf(state.selectedId);
    const next = move === "first" ? 0 : move === "last" ? order.length - 1 : (index + move + order.length) % order.length;
    selectView(order[next], { focus: true });
  }

  function renderCurrencyBox() {
    const { viewCurrencies, pendingCurrency, combinedCurrency } = state;
    const show = state.selectedId === COMBINED && viewCurrencies.length > 0;
    ui.currencyBox.hidden = !show;
    if (!show) return;
    const options = viewCurrencies.map((code) => el("option", { value: code, text: code }));
    const same = ui.currencySelect.options.length === options.length && options.every((o, i) => ui.currencySelect.options[i].value === o.value);
    if (!same) ui.currencySelect.replaceChildren(...options);
    ui.currencySelect.value = pendingCurrency || combinedCurrency || viewCurrencies[0];
    ui.currencyBox.classList.toggle("is-pending", pendingCurrency !== null);
    setText(ui.currencyHint, pendingCurrency ? `Switching to ${pendingCurrency}…` : "");
  }

  /** Both halves of the bar, after a snapshot. */
  function render() {
    renderTabs();
    renderCurrencyBox();
  }

  function selectView(id, { focus = false } = {}) {
    if (!state.views.has(id)) return;
    const changed = id !== state.selectedId;
    state.selectedId = id;
    storageSet(STORAGE_KEYS.view, id);
    renderTabs();
    renderCurrencyBox();
    if (changed) onSwitch();
    if (focus) document.getElementById(`view-tab-${id}`)?.focus();
  }

  function defaultView() {
    const remembered = storageGet(STORAGE_KEYS.view);
    if (remembered && state.views.has(remembered)) return remembered;
    return state.order[0] || null;
  }

  // ---- combined currency

  function requestCurrency(code) {
    const ok = Boolean(send({ type: "view", currency: code }));
    state.pendingCurrency = ok ? code : null;
    return ok;
  }

  function chooseCurrency(code) {
    if (!state.viewCurrencies.includes(code)) return;
    storageSet(STORAGE_KEYS.currency, code);
    if (code === state.combinedCurrency) {
      state.pendingCurrency = null;
    } else if (!requestCurrency(code)) {
      state.currencySyncDue = true; // offline: asked for again after the next connect's snapshot
    }
    renderCurrencyBox();
  }

  function syncCurrency(frame) {
    if (state.pendingCurrency !== null && frame.combined_currency === state.pendingCurrency) state.pendingCurrency = null;
    if (!state.currencySyncDue || !frame.combined) return;
    state.currencySyncDue = false;
    const wanted = storageGet(STORAGE_KEYS.currency);
    if (wanted && wanted !== frame.combined_currency && state.viewCurrencies.includes(wanted) && !requestCurrency(wanted)) {
      state.currencySyncDue = true;
    }
  }

  /** The server did not know the currency asked for: forget it. */
  function rejectCurrency() {
    state.pendingCurrency = null;
    storageSet(STORAGE_KEYS.currency, null);
    if (ui) renderCurrencyBox();
  }

  return { build, render, selectView, defaultView, chooseCurrency, syncCurrency, rejectCurrency };
}
