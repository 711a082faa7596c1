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

const FLASH_MS = 1000;
const flashTimers = new WeakMap();

/** Restart the flash animation on `node` if the value moved. */
export function flash(node, oldValue, newValue) {
  if (isMissing(oldValue) || isMissing(newValue)) return;
  const before = Number(oldValue);
  const after = Number(newValue);
  if (Number.isNaN(before) || Number.isNaN(after) || before === after) return;
  node.classList.remove("flash-up", "flash-down");
  void node.offsetWidth; // reflow, so re-adding the class replays the animation
  node.classList.add(after > before ? "flash-up" : "flash-down");
  // A timer rather than animationend: that event never fires in hidden tabs or with
  // animations disabled, and a leftover class would swallow the next flash.
  clearTimeout(flashTimers.get(node));
  flashTimers.set(node, setTimeout(() => node.classList.remove("flash-up", "flash-down"), FLASH_MS + 50));
}
