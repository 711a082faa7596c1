// Toasts: short messages stacked in #toasts (role="status", aria-live="polite", so screen readers read them),
// each with a close button; they leave by themselves after `ttlMs` unless the pointer or focus is on them.

import { el } from "./dom.js";

export function createToasts(container, { ttlMs = 15_000 } = {}) {
  function show({ title, body = "", kind = "info" }) {
    if (!container) return null;
    const close = el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", text: "×" });
    const toast = el(
      "div",
      { class: `toast toast-${kind}`, "data-testid": "toast" },
      el("div", { class: "toast-text" }, el("strong", { class: "toast-title", text: title }), body ? el("span", { class: "toast-body", text: body }) : null),
      close,
    );
    let timer = null;
    const dismiss = () => {
      clearTimeout(timer);
      toast.remove();
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(dismiss, ttlMs);
    };
    close.addEventListener("click", dismiss);
    toast.addEventListener("mouseenter", () => clearTimeout(timer));
    toast.addEventListener("mouseleave", arm);
    toast.addEventListener("focusin", () => clearTimeout(timer));
    toast.addEventListener("focusout", arm);
    container.append(toast);
    arm();
    return toast;
  }
  return { show };
}
