// The totals: the total value, day change and unrealised P&L cards, the figures below them
// (realised P&L, dividends & interest, fees, cash, net deposits), the note naming
// what the server left out of the totals and, in the combined view, the note naming
// past figures converted at today's rate for want of FX history.

import { el, flash, setSignClass, setText } from "./dom.js";
import { addDecimals, formatMoney, formatPercent, isMissing, signOf } from "./format.js";

const MISSING_REASONS = { no_rate: "no FX rate", no_price: "no price", no_reference: "no previous close" };

function kpi(label, testid, { hero = false, withPct = false } = {}) {
  const value = el("div", { class: "kpi-value num", "data-testid": testid });
  const pct = withPct ? el("span", { class: "chip num", "data-testid": `${testid}-pct` }) : null;
  const sub = el("div", { class: "kpi-sub" }, pct);
  const card = el("div", { class: `kpi card${hero ? " kpi-hero" : ""}` }, el("div", { class: "kpi-label", text: label }), value, sub);
  return { card, value, pct, sub };
}

function figure(label, testid) {
  const value = el("dd", { class: "figure-value num", "data-testid": testid });
  const sub = el("span", { class: "figure-sub" });
  const box = el("div", { class: "figure" }, el("dt", { class: "figure-label", text: label }), value, sub);
  return { box, value, sub };
}

/** The totals' elements (`nodes`, in page order); `render(view)` fills them in. */
export function createTotals() {
  const total = kpi("Total value", "total-value", { hero: true });
  const dayChange = kpi("Day change", "day-change", { withPct: true });
  const unrealised = kpi("Unrealised P&L", "unrealised-pnl", { withPct: true });
  const kpis = el("div", { class: "kpis" }, total.card, dayChange.card, unrealised.card);

  const realised = figure("Realised P&L", "realised-pnl");
  const dividends = figure("Dividends & interest", "dividends");
  const fees = figure("Fees", "fees");
  const cash = figure("Cash", "cash-total");
  const deposits = figure("Net deposits", "net-deposits");
  const figures = el("dl", { class: "figures card" }, realised.box, dividends.box, fees.box, cash.box, deposits.box);
  const missing = el("p", { class: "totals-note", "data-testid": "totals-missing", role: "note", hidden: true });
  const pastFx = el("p", { class: "totals-note", "data-testid": "past-fx-note", role: "note", hidden: true });

  /** The totals on screen, to flash what moved. */
  let shown = null;

  function render(view, { animate }) {
    const t = view.totals || {};
    const prev = animate && shown ? shown : {};
    const cur = view.currency;
    const money = (value, opts) => formatMoney(value, cur, opts);
    const id = view.id;

    for (const node of [total.value, dayChange.value, unrealised.value, realised.value, dividends.value, fees.value, cash.value, deposits.value]) {
      node.dataset.portfolioId = id;
    }
    // What each flashing figure showed before: only a figure whose shown text changes flashes.
    const textBefore = new Map([total.value, dayChange.value, unrealised.value, realised.value, cash.value].map((node) => [node, node.textContent]));

    setText(total.value, money(t.total_value));
    setText(
      total.sub,
      isMissing(t.market_value) && isMissing(t.cost) ? "" : `Holdings ${money(t.market_value)} · Cost ${money(t.cost)}`,
    );

    for (const [card, abs, pct] of [
      [dayChange, "day_change", "day_change_pct"],
      [unrealised, "unrealised_pnl", "unrealised_pnl_pct"],
    ]) {
      setText(card.value, money(t[abs], { signed: true }));
      setSignClass(card.value, t[abs]);
      setText(card.pct, formatPercent(t[pct]));
      setSignClass(card.pct, t[pct]);
      card.pct.hidden = isMissing(t[pct]);
    }

    setText(realised.value, money(t.realised_pnl, { signed: true }));
    setSignClass(realised.value, t.realised_pnl);

    // Unknown dividends stay unknown; unknown interest is left out rather than guessed as 0.
    const income = isMissing(t.interest) ? t.dividends : addDecimals(t.dividends, t.interest);
    setText(dividends.value, money(income));
    setText(dividends.sub, signOf(t.interest) ? `incl. ${money(t.interest)} interest` : "");
    dividends.value.title = `Dividends ${money(t.dividends)} · interest ${money(t.interest)}`;

    setText(fees.value, money(t.fees));
    setText(cash.value, money(t.cash));
    setText(deposits.value, money(t.net_deposits));

    if (animate) {
      flash(total.value, prev.total_value, t.total_value, textBefore.get(total.value));
      flash(dayChange.value, prev.day_change, t.day_change, textBefore.get(dayChange.value));
      flash(unrealised.value, prev.unrealised_pnl, t.unrealised_pnl, textBefore.get(unrealised.value));
      flash(realised.value, prev.realised_pnl, t.realised_pnl, textBefore.get(realised.value));
      flash(cash.value, prev.cash, t.cash, textBefore.get(cash.value));
    }

    const reasons = Array.isArray(t.missing) ? t.missing : [];
    missing.hidden = reasons.length === 0;
    const parts = reasons.map((m) => {
      const row = view.rows.get(String(m.key));
      const label = row && row.kind === "cash" ? `Cash ${row.currency}` : row?.symbol || String(m.key);
      return `${label} (${MISSING_REASONS[m.reason] || String(m.reason || "unknown").replace(/_/g, " ")})`;
    });
    setText(missing, parts.length ? `Left out of totals: ${parts.join(", ")}` : "");

    const notes = Array.isArray(view.pastFx) ? view.pastFx : [];
    pastFx.hidden = notes.length === 0;
    setText(pastFx, notes.map((n) => `Past figures of ${n.name || `portfolio ${n.portfolio}`} ${n.message}.`).join(" "));
    shown = { ...t };
  }

  return { nodes: [kpis, figures, missing, pastFx], render };
}
