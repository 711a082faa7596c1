// The two chart cards: the view's value over time (live, or over a range: performance.js) and its
// allocation donut. The charts themselves (value-chart.js, allocation.js) know numbers, not money; this passes
// them the view's formatting.

import { createAllocationChart } from "./allocation.js";
import { el } from "./dom.js";
import { formatAxisMoney, formatClock, formatMoney, formatPercent } from "./format.js";
import { createPerformance } from "./performance.js";
import { STORAGE_KEYS, storageGet, storageSet } from "./storage.js";
import { createValueChart } from "./value-chart.js";

export function createChartCards() {
  const valueChart = createValueChart({ title: "Value" });
  const performance = createPerformance({ liveChart: valueChart });
  const allocationChart = createAllocationChart({
    title: "Allocation",
    mode: storageGet(STORAGE_KEYS.allocation) || "instrument",
    onModeChange: (mode) => storageSet(STORAGE_KEYS.allocation, mode),
  });
  const node = el(
    "div",
    { class: "charts" },
    performance.node,
    el("section", { class: "card chart-card chart-card-alloc", "aria-label": "Allocation" }, allocationChart.root),
  );

  function render(view) {
    const cur = view.currency;
    valueChart.setData(view.series, {
      value: (n) => formatMoney(n.toFixed(2), cur),
      tick: (n, step) => formatAxisMoney(n, cur, step),
      time: (ts) => formatClock(ts, { seconds: false }),
      change: (abs, pct, since) =>
        `${formatMoney(abs.toFixed(2), cur, { signed: true })}${pct === null ? "" : ` (${formatPercent(pct.toFixed(2))})`} since ${formatClock(since, { seconds: false })}`,
    });
    performance.show(view);
    allocationChart.setData(view.allocation, {
      scope: view.id,
      value: (v) => formatMoney(v, cur),
      weight: (w) => formatPercent(Number(w).toFixed(2), { signed: false }),
      total: view.totals.total_value ?? null,
      totalLabel: "Total value",
    });
  }

  return { node, render, performance };
}
