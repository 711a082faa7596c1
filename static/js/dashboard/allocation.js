// The allocation donut and its legend: hand-written SVG (lightweight-charts draws time series, not shares of a
// whole). It keeps its nodes and only rewrites attributes, so a live update moves the picture without
// re-creating anything.

import { htmlEl } from "../charts.js";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  return node;
}

const round1 = (n) => Math.round(n * 10) / 10;

const ALLOCATION_MODES = [
  ["instrument", "Instrument"],
  ["asset_class", "Asset class"],
  ["currency", "Currency"],
];
const PALETTE_SIZE = 10;
const R_OUTER = 96;
const R_INNER = 64;
const TAU = Math.PI * 2;

function polar(r, a) {
  return `${round1(100 + r * Math.sin(a))},${round1(100 - r * Math.cos(a))}`;
}

/** An annulus sector from angle a0 to a1 (radians, clockwise from 12 o'clock). */
function sectorPath(a0, a1) {
  if (a1 - a0 >= TAU - 1e-6) return `${sectorPath(0, Math.PI)}${sectorPath(Math.PI, TAU - 1e-9)}`;
  const large = a1 - a0 > Math.PI ? 1 : 0;
  return (
    `M${polar(R_OUTER, a0)}A${R_OUTER},${R_OUTER} 0 ${large} 1 ${polar(R_OUTER, a1)}` +
    `L${polar(R_INNER, a1)}A${R_INNER},${R_INNER} 0 ${large} 0 ${polar(R_INNER, a0)}Z`
  );
}

function toNumber(value) {
  if (value === null || value === undefined || value === "") return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

/**
 * Allocation donut + legend, switchable between the allocation's groupings.
 * `setData(allocation, { formatValue, formatWeight, total, totalLabel })`.
 */
export function createAllocationChart({ title = "Allocation", mode = "instrument", onModeChange = null, maxSlices = 8 } = {}) {
  let current = ALLOCATION_MODES.some(([key]) => key === mode) ? mode : "instrument";
  let allocation = {};
  let format = { value: (v) => String(v), weight: (w) => `${w} %`, total: null, totalLabel: "Total" };
  let items = [];
  let active = null;
  let scope = "";
  const colours = new Map(); // "scope|mode" → Map(key → palette slot)
  const slices = new Map(); // key → path
  const legendRows = new Map(); // key → { li, label, value, weight }

  const buttons = ALLOCATION_MODES.map(([key, label]) =>
    htmlEl("button", { type: "button", class: "segment", "data-mode": key, "aria-pressed": String(key === current), text: label }),
  );
  const toggle = htmlEl("div", { class: "segmented segmented-sm", role: "group", "aria-label": "Group allocation by" }, ...buttons);
  const head = htmlEl("header", { class: "chart-head" }, htmlEl("h2", { class: "chart-title", text: title }), toggle);

  const svg = svgEl("svg", { class: "alloc-svg", viewBox: "0 0 200 200", role: "img", "aria-label": title });
  const track = svgEl("circle", { class: "alloc-track", cx: "100", cy: "100", r: String((R_OUTER + R_INNER) / 2), "stroke-width": String(R_OUTER - R_INNER) });
  const sliceGroup = svgEl("g", { class: "alloc-slices" });
  svg.append(track, sliceGroup);
  const centerValue = htmlEl("span", { class: "alloc-center-value" });
  const centerLabel = htmlEl("span", { class: "alloc-center-label" });
  const center = htmlEl("div", { class: "alloc-center", "aria-hidden": "true" }, centerValue, centerLabel);
  const figure = htmlEl("div", { class: "alloc-figure" }, svg, center);
  const legend = htmlEl("ul", { class: "alloc-legend", "aria-label": "Allocation legend" });
  const empty = htmlEl("p", { class: "alloc-empty", text: "Nothing allocated yet", hidden: "" });
  const body = htmlEl("div", { class: "alloc-body" }, figure, legend);
  const root = htmlEl("div", { class: "alloc-chart", "data-testid": "allocation-chart", "data-mode": current }, head, body, empty);

  /**
   * Colours per view and grouping: on first sight the largest slice gets the first
   * palette colour; after that a key keeps its colour while weights move, and a new key
   * takes the first colour no visible slice is using. Cash is grey, "Other" beige.
   */
  function assignColours(list) {
    const id = `${scope}|${current}`;
    let slots = colours.get(id);
    if (!slots) {
      slots = new Map();
      colours.set(id, slots);
    }
    const isCash = (key) => key === "cash" || key.startsWith("cash:");
    const taken = { main: new Set(), cash: new Set() };
    for (const item of list) {
      if (slots.has(item.key)) taken[isCash(item.key) ? "cash" : "main"].add(slots.get(item.key));
    }
    for (const item of list) {
      if (item.key === "other") {
        item.colour = "var(--chart-other)";
        continue;
      }
      const kind = isCash(item.key) ? "cash" : "main";
      const size = kind === "cash" ? 3 : PALETTE_SIZE;
      if (!slots.has(item.key)) {
        let slot = 0;
        while (taken[kind].has(slot) && slot < size) slot += 1;
        slot = slot < size ? slot : slots.size % size;
        slots.set(item.key, slot);
        taken[kind].add(slot);
      }
      const slot = slots.get(item.key);
      item.colour = kind === "cash" ? (slot ? `var(--chart-cash-${slot + 1})` : "var(--chart-cash)") : `var(--chart-${slot + 1})`;
    }
  }

  function computeItems() {
    const raw = (Array.isArray(allocation[current]) ? allocation[current] : [])
      .map((item) => ({
        key: String(item.key),
        label: item.label || String(item.key),
        value: item.value,
        weight: toNumber(item.weight),
      }))
      .filter((item) => item.weight !== null);
    const positive = raw.filter((item) => item.weight > 0).sort((a, b) => b.weight - a.weight);
    const rest = raw.filter((item) => item.weight <= 0); // negative cash etc.: legend only
    let shown = positive;
    if (positive.length > maxSlices) {
      shown = positive.slice(0, maxSlices - 1);
      const tail = positive.slice(maxSlices - 1);
      const sum = (field) => tail.reduce((acc, item) => acc + (toNumber(item[field]) || 0), 0);
      shown.push({ key: "other", label: `Other (${tail.length})`, value: sum("value").toFixed(2), weight: sum("weight") });
    }
    const total = shown.reduce((acc, item) => acc + item.weight, 0);
    let angle = 0;
    for (const item of shown) {
      item.a0 = angle;
      angle += (item.weight / total) * TAU;
      item.a1 = angle;
    }
    const all = [...shown, ...rest.map((item) => ({ ...item, legendOnly: true }))];
    assignColours(all);
    return all;
  }

  function renderCenter() {
    const item = active && items.find((i) => i.key === active);
    if (item) {
      centerValue.textContent = format.weight(item.weight);
      centerLabel.textContent = item.label;
    } else {
      centerValue.textContent = format.total === null || format.total === undefined ? "" : format.value(format.total);
      centerLabel.textContent = format.totalLabel;
    }
  }

  function setActive(key) {
    active = key;
    root.classList.toggle("has-active", key !== null);
    for (const [k, path] of slices) path.classList.toggle("is-active", k === key);
    for (const [k, row] of legendRows) row.li.classList.toggle("is-active", k === key);
    renderCenter();
  }

  function legendRow(key) {
    let row = legendRows.get(key);
    if (!row) {
      const swatch = htmlEl("span", { class: "alloc-swatch", "aria-hidden": "true" });
      const label = htmlEl("span", { class: "alloc-label" });
      const value = htmlEl("span", { class: "alloc-value" });
      const weight = htmlEl("span", { class: "alloc-weight" });
      const li = htmlEl("li", { class: "alloc-item", "data-key": key }, swatch, label, value, weight);
      li.addEventListener("pointerenter", () => setActive(key));
      li.addEventListener("pointerleave", () => setActive(null));
      row = { li, swatch, label, value, weight };
      legendRows.set(key, row);
    }
    return row;
  }

  function render() {
    items = computeItems();
    root.dataset.mode = current;
    const seen = new Set();
    const orderedSlices = [];
    const orderedRows = [];
    for (const item of items) {
      seen.add(item.key);
      const colour = item.colour;
      if (!item.legendOnly) {
        let path = slices.get(item.key);
        if (!path) {
          path = svgEl("path", { class: "alloc-slice", "data-key": item.key });
          path.addEventListener("pointerenter", () => setActive(item.key));
          path.addEventListener("pointerleave", () => setActive(null));
          slices.set(item.key, path);
        }
        path.setAttribute("d", sectorPath(item.a0, item.a1));
        path.style.fill = colour;
        orderedSlices.push(path);
      } else if (slices.has(item.key)) {
        slices.get(item.key).remove();
        slices.delete(item.key);
      }
      const row = legendRow(item.key);
      row.li.classList.toggle("is-legend-only", Boolean(item.legendOnly));
      row.swatch.style.background = item.legendOnly ? "transparent" : colour;
      row.swatch.style.borderColor = colour;
      if (row.label.textContent !== item.label) {
        row.label.textContent = item.label;
        row.label.title = item.label;
      }
      row.value.textContent = format.value(item.value);
      row.weight.textContent = format.weight(item.weight);
      orderedRows.push(row.li);
    }
    for (const [key, path] of slices) {
      if (!seen.has(key)) {
        path.remove();
        slices.delete(key);
      }
    }
    for (const [key, row] of legendRows) {
      if (!seen.has(key)) {
        row.li.remove();
        legendRows.delete(key);
      }
    }
    // Re-order only when needed: moving nodes restarts their transitions.
    const sameOrder = (parent, nodes) => nodes.length === parent.children.length && nodes.every((node, i) => parent.children[i] === node);
    if (!sameOrder(sliceGroup, orderedSlices)) sliceGroup.replaceChildren(...orderedSlices);
    if (!sameOrder(legend, orderedRows)) legend.replaceChildren(...orderedRows);

    const drawn = items.filter((item) => !item.legendOnly);
    empty.hidden = drawn.length > 0;
    body.hidden = items.length === 0;
    const modeLabel = ALLOCATION_MODES.find(([key]) => key === current)[1].toLowerCase();
    const summary = drawn.map((item) => `${item.label} ${format.weight(item.weight)}`).join(", ");
    svg.setAttribute("aria-label", drawn.length ? `${title} by ${modeLabel}: ${summary}` : `${title}: nothing allocated yet`);
    if (active && !seen.has(active)) active = null;
    setActive(active);
  }

  function setMode(next, { notify = true } = {}) {
    if (next === current || !ALLOCATION_MODES.some(([key]) => key === next)) return;
    current = next;
    for (const button of buttons) button.setAttribute("aria-pressed", String(button.dataset.mode === current));
    active = null;
    render();
    if (notify && onModeChange) onModeChange(current);
  }

  toggle.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-mode]");
    if (button) setMode(button.dataset.mode);
  });

  return {
    root,
    /**
     * New allocation; formats: value(v), weight(w), total, totalLabel, and `scope`
     * (e.g. the view id) under which slice colours are remembered.
     */
    setData(next, { scope: nextScope, ...formats } = {}) {
      allocation = next && typeof next === "object" ? next : {};
      format = { ...format, ...formats };
      if (nextScope !== undefined) scope = String(nextScope);
      render();
    },
    setMode,
    get mode() {
      return current;
    },
  };
}

