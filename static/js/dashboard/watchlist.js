// The watchlist card (#watchlist): its rows are rendered by the page (templates/portfolio/dashboard.html);
// this module fills their price and day change from the /ws/portfolio/ stream — the snapshot's and each
// update's `watchlist` rows (docs/websocket-api.md).

import { flash, setSignClass, setText } from "./dom.js";
import { formatMoney, formatPercent } from "./format.js";

export function createWatchlist(root) {
  const rows = new Map();
  for (const tr of root ? root.querySelectorAll("tr[data-symbol]") : []) {
    rows.set(tr.dataset.symbol, {
      price: tr.querySelector('[data-field="price"]'),
      change: tr.querySelector('[data-field="day_change_pct"]'),
      last: null,
    });
  }

  function applyRow(row) {
    const cells = rows.get(row.symbol);
    if (!cells) return; // added in another tab: this page shows it after a reload
    const currency = cells.price.dataset.currency || row.currency;
    setText(cells.price, formatMoney(row.price, currency, { keepPrecision: true }));
    flash(cells.price, cells.last, row.price);
    cells.last = row.price;
    cells.price.dataset.value = row.price ?? "";
    setText(cells.change, formatPercent(row.day_change_pct));
    setSignClass(cells.change, row.day_change_pct);
  }

  return {
    /** Any frame: only `watchlist` rows matter here. */
    applyFrame(frame) {
      if (frame && Array.isArray(frame.watchlist)) frame.watchlist.forEach(applyRow);
    },
    get symbols() {
      return [...rows.keys()];
    },
  };
}
