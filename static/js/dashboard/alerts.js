// Alerts that fire: the `alert` frames of /ws/portfolio/ become a toast, a new first line in the notifications
// list (#notification-list), and — once the user allowed it with the "Browser notifications" button, never
// asked on load — a system notification through the browser's Notification API.

import { el } from "./dom.js";

const PORTFOLIO_KINDS = new Set(["portfolio_value_above", "portfolio_value_below", "day_change_pct"]);

/** Epoch ms as the page lists notifications: "2026-01-05 14:30:00 UTC". */
function utcStamp(ms) {
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return "";
  return `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

export function createAlerts({ toasts, list, permissionButton, alertsCard = null, NotificationImpl = window.Notification }) {
  const supported = typeof NotificationImpl === "function";

  // The form shows what the chosen kind needs: an instrument or a portfolio; a window for moves only.
  const kind = alertsCard?.querySelector("#alert_kind");
  const windowField = alertsCard?.querySelector("#alert_window_minutes")?.closest(".field");
  const instrumentField = alertsCard?.querySelector('[data-for="instrument"]');
  const portfolioField = alertsCard?.querySelector('[data-for="portfolio"]');
  if (kind) {
    const sync = () => {
      const onPortfolio = PORTFOLIO_KINDS.has(kind.value);
      if (windowField) windowField.hidden = kind.value !== "move_pct";
      if (instrumentField) instrumentField.hidden = onPortfolio;
      if (portfolioField) portfolioField.hidden = !onPortfolio;
    };
    kind.addEventListener("change", sync);
    sync();
  }

  /** The alert's line in the Alerts card says it fired (until the page is loaded again). */
  function markFired(note) {
    const state = alertsCard?.querySelector(`[data-alert-id="${Number(note.alert_id)}"] .alert-state`);
    if (state) state.textContent = state.textContent.replace(/^(Armed|Fired)/, "Fired");
  }

  function renderPermission() {
    if (!permissionButton) return;
    // Offered only while the browser can still ask; "denied" can be undone in the browser's settings only.
    permissionButton.hidden = !supported || NotificationImpl.permission !== "default";
  }

  permissionButton?.addEventListener("click", async () => {
    if (!supported) return;
    try {
      await NotificationImpl.requestPermission();
    } catch (err) {
      console.warn("Livefolio: notification permission", err);
    }
    renderPermission();
  });
  renderPermission();

  function addToList(note) {
    if (!list) return;
    list.querySelector(".notification-none")?.remove();
    const item = el(
      "li",
      { class: "notification is-unread is-new", "data-testid": "notification" },
      el("span", { class: "notification-message", text: note.message }),
      el("time", { class: "notification-time", text: utcStamp(note.fired_at) }),
    );
    if (Number.isFinite(note.fired_at)) item.querySelector("time").setAttribute("datetime", new Date(note.fired_at).toISOString());
    list.prepend(item);
  }

  function notifyBrowser(note) {
    if (!supported || NotificationImpl.permission !== "granted") return;
    try {
      new NotificationImpl(`Livefolio: ${note.symbol || "alert"}`, { body: note.message, tag: `livefolio-alert-${note.id}` });
    } catch (err) {
      console.warn("Livefolio: could not show a browser notification", err);
    }
  }

  return {
    applyFrame(frame) {
      if (!frame || frame.type !== "alert" || !frame.notification) return;
      const note = frame.notification;
      toasts.show({ title: "Alert", body: note.message, kind: "alert" });
      addToList(note);
      markFired(note);
      notifyBrowser(note);
    },
  };
}
