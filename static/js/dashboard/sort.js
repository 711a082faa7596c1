// The holdings table's sort: which column, which way, remembered in localStorage, and the order it
// gives. Sorting is by the numbers the server sent (decimal strings → numbers), never by the formatted
// text ("$1,200" < "$900" as strings). Cash rows stay together below the positions, sorted among
// themselves; a row with no value for the column (no price, no rate) goes last either way.
//
// When the order is worked out (holdings.js): when the user picks a sort, when rows come or go (a
// snapshot, a ledger change, another tab), and every RESORT_MS while the pointer is not over the table
// and focus is not in it. Price ticks alone never move rows: a row does not jump away under a finger
// or a reading eye, and the order is never more than half a minute behind the values.

import { toNumber } from "./format.js";
import { STORAGE_KEYS, storageGet, storageSet } from "./storage.js";

export const RESORT_MS = 30_000;

/** What each sortable column sorts by, and its first direction (numbers: largest first). */
export const SORT_KEYS = {
  instrument: { value: (row) => String(row.kind === "cash" ? row.currency || row.symbol || "" : row.symbol || row.key || ""), first: "ascending", text: true },
  quantity: { value: (row) => toNumber(row.quantity), first: "descending" },
  average_cost: { value: (row) => toNumber(row.average_cost), first: "descending" },
  price: { value: (row) => toNumber(row.price), first: "descending" },
  market_value: { value: (row) => toNumber(row.market_value), first: "descending" },
  day_change: { value: (row) => toNumber(row.day_change), first: "descending" },
  unrealised_pnl: { value: (row) => toNumber(row.unrealised_pnl), first: "descending" },
  weight: { value: (row) => toNumber(row.weight), first: "descending" },
};

const DIRECTIONS = new Set(["ascending", "descending"]);

/** The remembered sort, or null (the server's order: positions, then cash). */
export function loadSort() {
  const raw = storageGet(STORAGE_KEYS.holdingsSort);
  if (!raw) return null;
  const [field, direction] = raw.split(":");
  return SORT_KEYS[field] && DIRECTIONS.has(direction) ? { field, direction } : null;
}

export function saveSort(sort) {
  storageSet(STORAGE_KEYS.holdingsSort, sort ? `${sort.field}:${sort.direction}` : null);
}

/** A header clicked: its first direction, then the other, then back to the server's order. */
export function nextSort(current, field) {
  const first = SORT_KEYS[field].first;
  if (!current || current.field !== field) return { field, direction: first };
  if (current.direction === first) return { field, direction: first === "ascending" ? "descending" : "ascending" };
  return null;
}

function compare(a, b, key, sign) {
  const x = key.value(a);
  const y = key.value(b);
  const missingX = x === null || x === "";
  const missingY = y === null || y === "";
  if (missingX || missingY) return missingX === missingY ? 0 : missingX ? 1 : -1;
  const order = key.text ? x.localeCompare(y, undefined, { sensitivity: "base" }) : x - y;
  return order * sign;
}

/** `rows` (server order) sorted by `sort`: positions first, then cash; ties keep the server's order. */
export function sortRows(rows, sort) {
  const positions = rows.filter((r) => r.kind !== "cash");
  const cash = rows.filter((r) => r.kind === "cash");
  if (!sort) return [...positions, ...cash];
  const key = SORT_KEYS[sort.field];
  const sign = sort.direction === "ascending" ? 1 : -1;
  const byKey = (list) =>
    list
      .map((row, index) => ({ row, index }))
      .sort((a, b) => compare(a.row, b.row, key, sign) || a.index - b.index)
      .map((entry) => entry.row);
  return [...byKey(positions), ...byKey(cash)];
}
