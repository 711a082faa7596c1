// The holdings table: one row per position, then cash rows, with a column for each field.
// Rows are kept by key and only the cells whose data changed are re-rendered, so a price
// update flashes the cells that moved instead of rebuilding the table.
// Each column header is a sort button (sort.js: by the numbers, remembered, re-sorted calmly);
// on a phone (app.css, below 700 px) each row is drawn as a card and a select sorts instead.

import { el, flash, setSignClass, setText } from "./dom.js";
import { assetClassLabel, currencyName, formatAge, formatClock, formatMoney, formatPercent, formatQuantity, isMissing, toNumber } from "./format.js";
import { orderedRows } from "./model.js";
import { RESORT_MS, SORT_KEYS, loadSort, nextSort, saveSort, sortRows } from "./sort.js";

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
    short: "P&L",
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

/** The holdings card; `render(view)` brings its table in line with the view. */
export function createHoldings({ now, staleAfterMs }) {
  /** What is on screen: key → {tr, cells, data}. */
  const shownRows = new Map();

  /** The sort on screen (null: the server's order), and the keys in the order last worked out. */
  let sort = loadSort();
  let order = null;
  let resortDue = true;
  let lastView = null;

  const headRow = el("tr");
  const currencyHeads = [];
  const sortHeads = new Map(); // field → th
  for (const col of COLUMNS) {
    const th = el("th", { scope: "col", class: col.numeric ? `num col-${col.field}` : `col-${col.field}` });
    const button = el("button", { type: "button", class: "sort-btn", "data-sort": col.field, "data-testid": `sort-${col.field}` }, el("span", { text: col.label }));
    if (col.currencyHeader) {
      const ccy = el("span", { class: "th-ccy" });
      button.append(ccy);
      currencyHeads.push(ccy);
    }
    button.append(el("span", { class: "sort-icon", "aria-hidden": "true" }));
    button.addEventListener("click", () => chooseSort(nextSort(sort, col.field)));
    th.append(button);
    sortHeads.set(col.field, th);
    headRow.append(th);
  }
  // Phones have no header row to tap (each row is a card): the same sort, from a select.
  const sortSelect = el(
    "select",
    { class: "select", id: "holdings-sort", "data-testid": "holdings-sort" },
    el("option", { value: "", text: "Default order" }),
    ...COLUMNS.flatMap((col) => {
      const words = SORT_KEYS[col.field].text ? ["A–Z", "Z–A"] : ["high to low", "low to high"];
      return [
        el("option", { value: `${col.field}:${SORT_KEYS[col.field].text ? "ascending" : "descending"}`, text: `${col.label}, ${words[0]}` }),
        el("option", { value: `${col.field}:${SORT_KEYS[col.field].text ? "descending" : "ascending"}`, text: `${col.label}, ${words[1]}` }),
      ];
    }),
  );
  sortSelect.addEventListener("change", () => {
    const [field, direction] = sortSelect.value.split(":");
    chooseSort(field ? { field, direction } : null);
  });
  const sortBox = el("label", { class: "holdings-sort", htmlFor: "holdings-sort" }, el("span", { text: "Sort" }), sortSelect);
  const tbody = el("tbody");
  const table = el("table", { class: "holdings", "data-testid": "holdings" }, el("thead", {}, headRow), tbody);
  const scroller = el("div", { class: "table-scroll", tabIndex: 0, role: "region", "aria-label": "Holdings" }, table);
  const holdingsMeta = el("span", { class: "card-meta" });
  const emptyRows = el("p", { class: "holdings-empty", text: "No holdings yet.", hidden: true });
  const card = el(
    "section",
    { class: "card holdings-card", "aria-labelledby": "holdings-title" },
    el("header", { class: "card-head" }, el("h2", { class: "card-title", id: "holdings-title", text: "Holdings" }), holdingsMeta, sortBox),
    scroller,
    emptyRows,
  );

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
        "data-label": isHead ? undefined : col.short || col.label, // the label of a phone card's figure (app.css)
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
      const cell = entry.cells[col.field];
      const textBefore = cell.textContent;
      col.render(cell, row, ctx);
      // Only a cell whose shown value changed, by the direction of its own change.
      if (animate && col.flash) flash(cell, entry.data[col.flash], row[col.flash], textBefore);
    }
    entry.tr.dataset.status = row.status || "ok";
    entry.data = { ...row };
  }

  /** Bring the table in line with the view: update, add, remove and order rows by key. */
  function render(view, { animate, sameView }) {
    const ctx = rowContext(view);
    lastView = view;
    if (!sameView) {
      shownRows.clear();
      tbody.replaceChildren();
      resortDue = true;
    }
    const rows = rowsInOrder(view);
    const seen = new Set();
    const nodes = [];
    for (const row of rows) {
      const key = String(row.key);
      seen.add(key);
      let entry = shownRows.get(key);
      if (entry && entry.data.kind !== row.kind) {
        entry.tr.remove();
        entry = null;
      }
      if (entry) updateRow(entry, row, ctx, { animate });
      else {
        entry = buildRow(row, ctx);
        shownRows.set(key, entry);
      }
      nodes.push(entry.tr);
    }
    for (const [key, entry] of shownRows) {
      if (!seen.has(key)) {
        entry.tr.remove();
        shownRows.delete(key);
      }
    }
    const current = tbody.children;
    if (nodes.length !== current.length || nodes.some((node, i) => current[i] !== node)) tbody.replaceChildren(...nodes);
    for (const tr of nodes) tr.classList.remove("row-cash-first");
    const firstCash = nodes.find((tr) => tr.dataset.kind === "cash");
    if (firstCash && firstCash !== nodes[0]) firstCash.classList.add("row-cash-first");

    const holdings = rows.filter((r) => r.kind !== "cash").length;
    const cashRows = rows.length - holdings;
    const parts = [`${holdings} ${holdings === 1 ? "position" : "positions"}`];
    if (cashRows) parts.push(`${cashRows} cash`);
    parts.push(`values in ${view.currency}`);
    setText(holdingsMeta, parts.join(" · "));
    for (const node of currencyHeads) setText(node, view.currency);
    emptyRows.hidden = rows.length > 0;
    scroller.hidden = rows.length === 0;
  }

  /** The view's rows in the order to show: the server's, or the sort's as last worked out (sort.js says when). */
  function rowsInOrder(view) {
    const rows = orderedRows(view);
    if (!sort) {
      order = null;
      return rows;
    }
    const keys = new Set(rows.map((row) => String(row.key)));
    const sameRows = order !== null && order.length === keys.size && order.every((key) => keys.has(key));
    if (resortDue || !sameRows) {
      order = sortRows(rows, sort).map((row) => String(row.key));
      resortDue = false;
    }
    return order.map((key) => view.rows.get(key));
  }

  function renderSortState() {
    for (const [field, th] of sortHeads) {
      if (sort && sort.field === field) th.setAttribute("aria-sort", sort.direction);
      else th.removeAttribute("aria-sort");
    }
    sortSelect.value = sort ? `${sort.field}:${sort.direction}` : "";
  }

  function chooseSort(next) {
    sort = next;
    saveSort(sort);
    resortDue = true;
    renderSortState();
    if (lastView) render(lastView, { animate: false, sameView: true });
  }

  // The calm re-sort: values drift, so the order is worked out again now and then, but never while the
  // user's pointer or focus is on the table (a row must not move away from under them).
  setInterval(() => {
    if (!sort || !lastView || table.matches(":hover") || table.contains(document.activeElement)) return;
    resortDue = true;
    render(lastView, { animate: false, sameView: true });
  }, RESORT_MS);
  renderSortState();

  /** Once a second: each shown price's age tooltip and stale mark. */
  function refreshPriceAges() {
    for (const entry of shownRows.values()) refreshPriceAge(entry.cells.price);
  }

  return {
    card,
    render,
    refreshPriceAges,
    forget: () => shownRows.clear(),
    get sort() {
      return sort;
    },
  };
}
