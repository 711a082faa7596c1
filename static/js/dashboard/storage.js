// What the dashboard remembers in localStorage between visits, and safe access to it.

export const STORAGE_KEYS = {
  view: "livefolio.view",
  currency: "livefolio.combinedCurrency",
  allocation: "livefolio.allocationMode",
  // Per tab: "livefolio.range.<view id>" and "livefolio.benchmark.<view id>".
  range: "livefolio.range",
  benchmark: "livefolio.benchmark",
  // The holdings table's sort, "<field>:<ascending|descending>" (dashboard/sort.js).
  holdingsSort: "livefolio.holdingsSort",
};

export function storageGet(key) {
  try {
    return window.localStorage.getItem(key);
  } catch (err) {
    return null; // storage disabled: nothing is remembered, nothing breaks
  }
}

export function storageSet(key, value) {
  try {
    if (value === null || value === undefined) window.localStorage.removeItem(key);
    else window.localStorage.setItem(key, String(value));
  } catch (err) {
    /* storage disabled or full */
  }
}
