// Small DOM helpers every part of the dashboard builds and updates its elements with.

import { isMissing, signOf } from "./format.js";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "scope" || key === "title" || key === "type") {
      node.setAttribute(key, value);
    } else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

export function setSignClass(node, value) {
  const sign = signOf(value);
  node.classList.toggle("pos", sign === 1);
  node.classList.toggle("neg", sign === -1);
}

export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// A mark shows for FLASH_MS; then the cell rests 1.5–3.5 s (random, so cells that tick together drift
// apart instead of flashing in step) before it can be marked again. At four ticks a second a price
// gets a short mark every few seconds rather than a tint that never goes away.
const FLASH_MS = 1000;
const REST_MS = [1500, 3500];
const flashTimers = new WeakMap();

/** Whether changed values flash: the user's setting (prefs.js) and the OS's reduced-motion wish. */
export function flashEnabled() {
  const prefs = window.livefolioPrefs;
  if (prefs) return prefs.flashEnabled();
  return !(window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches);
}

/**
 * Mark `node` as changed, tinted by the direction of ITS change (`flash-up` / `flash-down`), when what it
 * shows changed: `textBefore` is its text before this render, so a value that moved by less than its
 * last shown digit does not flash. The mark is a faint tint and an edge line (app.css) that leave the
 * text's own colour (its sign) alone. A cell still marked or resting (REST_MS) is not marked again.
 */
export function flash(node, oldValue, newValue, textBefore = null) {
  if (isMissing(oldValue) || isMissing(newValue)) return;
  if (textBefore !== null && node.textContent === textBefore) return;
  const before = Number(oldValue);
  const after = Number(newValue);
  if (Number.isNaN(before) || Number.isNaN(after) || before === after) return;
  if (!flashEnabled() || flashTimers.has(node)) return;
  node.classList.add(after > before ? "flash-up" : "flash-down");
  // A timer rather than animationend: that event never fires in hidden tabs or with
  // animations disabled, and a leftover class would swallow the next flash.
  flashTimers.set(
    node,
    setTimeout(() => {
      node.classList.remove("flash-up", "flash-down");
      flashTimers.set(
        node,
        setTimeout(() => flashTimers.delete(node), REST_MS[0] + Math.random() * (REST_MS[1] - REST_MS[0])),
      );
    }, FLASH_MS),
  );
}
