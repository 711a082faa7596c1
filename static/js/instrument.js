// The instrument page (/market/<symbol>/): one instrument, live, over /ws/v1/market.
//
// Four channels of the market-data API v1, each throttled to `throttleMs` (250 ms: at most
// four frames a second per channel, and the latest value always arrives):
//   ticker:SYM          last price, bid/ask, day change → the header
//   candles:SYM@1m      the last 120 closed minutes and the open one → the candlestick chart (candle-chart.js), which
//                       adds them up into the chosen timeframe after the stored history it fetches
//   trades:SYM          the last 50 trades, then every trade → the tape
//   book:SYM@depth=N    the top N levels, then changed levels + checksum → the depth view; the book's
//                       state (synced | out_of_sync | none) and the source's update id → its notice and footer
// With `config.session` (the page's ?session=NAME) the four are that replay session's channels
// (`ticker:SYM?session=NAME`, ...) and nothing live: the server badges the page "Replay session NAME".
// MarketClient (market-api.js) keeps every channel whole: it resumes after a reconnect,
// closes gaps, checks the book's checksum. This file only draws what it hands over.
//
// Rendering is batched to one animation frame; the page object is `window.livefolioInstrument`.

import { createCandleChart } from "./candle-chart.js";
import { htmlEl as el } from "./charts.js";
import { flash, flashEnabled } from "./dashboard/dom.js";
import { addDecimals, formatClock, formatMoney, formatPercent } from "./dashboard/format.js";
import { MarketClient } from "./market-api.js";
import { createConnectionStatus } from "./staleness.js";

const DEFAULT_LOGIN_URL = "/accounts/login/";
const TAPE_LENGTH = 50;
// Closed candles kept (the snapshot brings 120), plus the open one.
const CANDLES_KEPT = 240;
const BOOK_STATES = new Set(["synced", "out_of_sync", "none"]);
const BOOK_OUT_OF_SYNC = "Book out of sync with the exchange — waiting for a fresh snapshot";
const BOOK_BACK_IN_SYNC = "Order book back in sync with the exchange.";
const BOOK_NO_DATA = "No depth data for this instrument yet: the order book appears with the first depth data.";
const BOOK_EMPTY = "The order book is empty: no bids or asks right now.";

// ---------------------------------------------------------------- formatting

function isMissing(value) {
  return value === null || value === undefined || value === "";
}

function decimalsOf(value) {
  const match = /\.(\d+)/.exec(String(value ?? ""));
  return match ? match[1].length : 0;
}

const numberFormats = new Map();

/** A plain number with exactly `digits` decimals (book and tape columns line up). */
function formatFixed(value, digits) {
  if (isMissing(value)) return "—";
  let fmt = numberFormats.get(digits);
  if (!fmt) {
    fmt = new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
    numberFormats.set(digits, fmt);
  }
  // Intl formats decimal strings exactly.
  return fmt.format(String(value));
}

/** Decimals to show a column with: as many as its most precise value, within [min, max]. */
function columnDigits(values, min, max) {
  let digits = min;
  for (const value of values) digits = Math.max(digits, decimalsOf(value));
  return Math.min(digits, max);
}

function signOf(value) {
  if (isMissing(value)) return null;
  const n = Number(value);
  if (Number.isNaN(n)) return null;
  return n > 0 ? 1 : n < 0 ? -1 : 0;
}

function setSignClass(node, value) {
  const sign = signOf(value);
  node.classList.toggle("pos", sign === 1);
  node.classList.toggle("neg", sign === -1);
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

const flashTimers = new WeakMap();

/** A neutral highlight: this value changed (a level's size; green and red already mean bid and ask). */
function pulse(node) {
  if (!flashEnabled()) return;
  node.classList.remove("is-changed");
  void node.offsetWidth;
  node.classList.add("is-changed");
  clearTimeout(flashTimers.get(node));
  flashTimers.set(node, setTimeout(() => node.classList.remove("is-changed"), 700));
}

/**
 * A book message's state. A message from before the server sent states (an old history entry) has
 * none: its book is in sync if it has levels, else there is no depth data.
 */
function bookStateOf(data, book) {
  if (data && BOOK_STATES.has(data.state)) return data.state;
  return book && (book.bids.length || book.asks.length) ? "synced" : "none";
}

function negate(value) {
  const text = String(value);
  return text.startsWith("-") ? text.slice(1) : `-${text}`;
}

/** a − b of decimal strings, exactly (null when either is missing). */
function subtract(a, b) {
  return isMissing(a) || isMissing(b) ? null : addDecimals(a, negate(b));
}

/** The stored quote the page opens on, shaped as ticker data (the change worked out as the server would). */
function storedTicker(quote) {
  if (!quote) return null;
  const change = subtract(quote.last, quote.ref);
  const pct = change !== null && Number(quote.ref) !== 0 ? ((Number(change) / Number(quote.ref)) * 100).toFixed(2) : null;
  return { last: quote.last, bid: quote.bid, ask: quote.ask, ref: quote.ref, change, change_pct: pct };
}

// ---------------------------------------------------------------- the page

export function createInstrumentPage({ root, indicator, config, now = () => Date.now() }) {
  const symbol = config.symbol;
  const currency = config.currency;
  const depth = Number(config.depth) || 10;
  const session = config.session ? `?session=${config.session}` : "";
  const names = {
    ticker: `ticker:${symbol}${session}`,
    trades: `trades:${symbol}${session}`,
    candles: `candles:${symbol}@1m${session}`,
    book: `book:${symbol}@depth=${depth}${session}`,
  };
  const money = (value, opts = {}) => formatMoney(value, currency, { keepPrecision: true, ...opts });

  // ---- state, as the channels left it

  const stored = config.quote || null;
  let ticker = storedTicker(stored);
  let tickerTs = stored ? stored.ts : null;
  let trades = []; // newest first
  let candles = []; // oldest first; the last may be open
  let book = null; // the client's OrderBook
  let bookChecked = null; // whether the last book frame's checksum matched
  let bookState = "none"; // as the last book frame said: synced | out_of_sync | none
  let bookUpdateId = null; // the source's id of the latest update the book reflects (Binance `u`), or null
  let bookStatus = ""; // what the book's live region says: "" | "out_of_sync" | "resynced" (to screen readers only)
  const dirty = new Set(["ticker", "trades", "candles", "book"]);
  let frameRequested = false;

  // ---- DOM

  const q = (testid) => root.querySelector(`[data-testid="${testid}"]`);
  const ui = {
    notice: q("instrument-notice"),
    last: q("last-price"),
    change: q("day-change"),
    changePct: q("day-change-pct"),
    bid: q("bid"),
    ask: q("ask"),
    spread: q("spread"),
    reference: q("reference"),
    time: q("price-time"),
    book: q("book"),
    bookEmpty: q("book-empty"),
    bookStatus: q("book-status"),
    bookFoot: q("book-update-id"),
    bookSpread: root.querySelector(".book-spread-value"),
    asks: root.querySelector(".book-asks"),
    bids: root.querySelector(".book-bids"),
    tape: root.querySelector('[data-testid="trades"] tbody'),
    tapeEmpty: q("trades-empty"),
  };
  const chart = createCandleChart({
    symbol,
    session: config.session || null,
    formats: {
      price: (v) => formatFixed(v, columnDigits([v], 2, 8)),
      axis: (n, digits) => formatFixed(n.toFixed(digits), digits),
      volume: (v) => formatFixed(v, Math.min(4, Math.max(0, decimalsOf(v)))),
    },
  });
  root.querySelector("#candle-card").append(chart.root);

  // One row per level, made once: asks from the worst shown down to the best, then bids from the best.
  function levelRow(side) {
    const price = el("span", { class: "book-price num", role: "cell" });
    const size = el("span", { class: "book-size num", role: "cell" });
    const total = el("span", { class: "book-total num", role: "cell" });
    const row = el("div", { class: "book-row book-level", role: "row", "data-side": side }, price, size, total);
    return { row, price, size, total };
  }
  const askRows = Array.from({ length: depth }, () => levelRow("ask"));
  const bidRows = Array.from({ length: depth }, () => levelRow("bid"));
  ui.asks.replaceChildren(...askRows.map((r) => r.row));
  ui.bids.replaceChildren(...bidRows.map((r) => r.row));

  // ---- rendering

  function schedule(part) {
    dirty.add(part);
    if (frameRequested) return;
    frameRequested = true;
    const run = () => {
      frameRequested = false;
      render();
    };
    // Hidden tabs get no animation frames: state keeps up, the DOM catches up on return.
    if (document.visibilityState === "hidden") setTimeout(run, 1000);
    else requestAnimationFrame(run);
  }

  function render() {
    if (dirty.has("ticker")) renderTicker();
    if (dirty.has("candles")) renderCandles();
    if (dirty.has("trades")) renderTrades();
    if (dirty.has("book")) renderBook();
    dirty.clear();
  }

  let shownLast = null;

  function renderTicker() {
    const t = ticker || {};
    const lastBefore = ui.last.textContent;
    setText(ui.last, money(t.last));
    ui.last.dataset.value = t.last ?? "";
    flash(ui.last, shownLast, t.last, lastBefore);
    shownLast = t.last ?? null;
    setText(ui.change, isMissing(t.change) ? "—" : money(t.change, { signed: true }));
    setSignClass(ui.change, t.change);
    ui.changePct.hidden = isMissing(t.change_pct);
    setText(ui.changePct, formatPercent(t.change_pct));
    setSignClass(ui.changePct, t.change_pct);
    setText(ui.bid, money(t.bid));
    setText(ui.ask, money(t.ask));
    if (!isMissing(t.bid) && !isMissing(t.ask)) {
      const spread = subtract(t.ask, t.bid);
      setText(ui.spread, formatFixed(spread, Math.max(decimalsOf(t.bid), decimalsOf(t.ask), 2)));
    } else setText(ui.spread, "—");
    setText(ui.reference, money(t.ref));
    setText(ui.time, tickerTs ? formatClock(tickerTs) : "—");
    if (tickerTs) ui.time.title = new Date(tickerTs).toISOString();
    const badge = document.getElementById("replay-badge");
    // A session page wears its own badge: this one says that live prices come from a replay on the live path.
    if (badge) badge.hidden = session !== "" || t.replay !== true;
  }

  function renderCandles() {
    chart.render();
  }

  function renderTrades() {
    ui.tapeEmpty.hidden = trades.length > 0;
    ui.tape.closest("table").hidden = trades.length === 0;
    const priceDigits = columnDigits(
      trades.map((t) => t.price),
      2,
      8,
    );
    const sizeDigits = columnDigits(
      trades.map((t) => t.size),
      0,
      8,
    );
    // Rows are keyed by the trade object: new ones go on top, the oldest fall off the end.
    const existing = new Map([...ui.tape.children].map((tr) => [tr._trade, tr]));
    const rows = trades.map((trade, index) => {
      let tr = existing.get(trade);
      if (!tr) {
        // New rows light up briefly; in a burst only the top few, not a wall of colour.
        tr = el(
          "tr",
          { class: index < 6 && flashEnabled() ? "tape-row is-new" : "tape-row", "data-side": trade.side || "unknown" },
          el("td", { class: "tape-time num", text: formatClock(trade.ts), title: new Date(trade.ts).toISOString() }),
          el("td", { class: "tape-price num" }),
          el("td", { class: "tape-size num" }),
        );
        tr._trade = trade;
        setTimeout(() => tr.classList.remove("is-new"), 900);
      }
      setText(tr.children[1], formatFixed(trade.price, priceDigits));
      setText(tr.children[2], formatFixed(trade.size, sizeDigits));
      return tr;
    });
    const current = ui.tape.children;
    if (rows.length !== current.length || rows.some((tr, i) => current[i] !== tr)) ui.tape.replaceChildren(...rows);
    if (trades.length) ui.tape.closest("table").dataset.newest = `${trades[0].ts}:${trades[0].price}:${trades[0].size}`;
  }

  function renderBookState(count) {
    const outOfSync = bookState === "out_of_sync";
    ui.book.dataset.state = bookState;
    ui.book.dataset.updateId = bookUpdateId ?? "";
    ui.bookEmpty.hidden = outOfSync || count > 0;
    setText(ui.bookEmpty, bookState === "synced" ? BOOK_EMPTY : BOOK_NO_DATA);
    // The live region keeps its node and only its content changes: that is what screen readers announce.
    const status = outOfSync ? "out_of_sync" : bookStatus !== "" && bookState === "synced" ? "resynced" : "";
    if (status !== bookStatus) {
      bookStatus = status;
      if (status === "out_of_sync") {
        ui.bookStatus.replaceChildren(el("p", { class: "book-notice", "data-testid": "book-out-of-sync", text: BOOK_OUT_OF_SYNC }));
      } else if (status === "resynced") {
        ui.bookStatus.replaceChildren(el("span", { class: "visually-hidden", text: BOOK_BACK_IN_SYNC }));
      } else ui.bookStatus.replaceChildren();
    }
    // The id users compare with the exchange's data: as sent, no grouping.
    ui.bookFoot.hidden = bookUpdateId === null;
    setText(ui.bookFoot, bookUpdateId === null ? "" : `${outOfSync ? "Last synced update" : "Update"} ${bookUpdateId}`);
  }

  function renderBook() {
    const bids = book ? book.bids.slice(0, depth) : [];
    const asks = book ? book.asks.slice(0, depth) : [];
    const count = bids.length + asks.length;
    ui.book.dataset.levels = String(count);
    ui.book.dataset.bids = String(bids.length);
    ui.book.dataset.asks = String(asks.length);
    ui.book.dataset.checksum = bookChecked === null ? "" : bookChecked ? "ok" : "mismatch";
    ui.book.hidden = count === 0;
    renderBookState(count);
    if (!count) return;
    const priceDigits = columnDigits([...bids, ...asks].map(([p]) => p), 2, 8);
    const sizeDigits = columnDigits([...bids, ...asks].map(([, qty]) => qty), 0, 8);
    let maxQty = 0;
    for (const [, qty] of [...bids, ...asks]) maxQty = Math.max(maxQty, Number(qty));

    const fill = (rows, levels) => {
      let total = "0";
      rows.forEach((r, i) => {
        const level = levels[i];
        r.row.classList.toggle("is-empty", !level);
        if (!level) {
          setText(r.price, "");
          setText(r.size, "");
          setText(r.total, "");
          r.row.style.setProperty("--depth", "0%");
          delete r.row.dataset.price;
          return;
        }
        const [price, qty] = level;
        total = addDecimals(total, qty);
        if (r.row.dataset.price === price && r.row.dataset.qty !== qty) pulse(r.size);
        r.row.dataset.price = price;
        r.row.dataset.qty = qty;
        setText(r.price, formatFixed(price, priceDigits));
        setText(r.size, formatFixed(qty, sizeDigits));
        setText(r.total, formatFixed(total, sizeDigits));
        r.row.style.setProperty("--depth", `${maxQty > 0 ? ((Number(qty) / maxQty) * 100).toFixed(1) : 0}%`);
      });
    };
    fill(bidRows, bids);
    // Asks are drawn upside down, the best next to the spread: row i from the bottom is level i.
    fill([...askRows].reverse(), asks);

    if (bids.length && asks.length) {
      const spread = subtract(asks[0][0], bids[0][0]);
      const mid = (Number(asks[0][0]) + Number(bids[0][0])) / 2;
      const bps = mid > 0 ? (Number(spread) / mid) * 10_000 : null;
      const bpsText = bps === null ? "" : ` · ${new Intl.NumberFormat(undefined, { maximumSignificantDigits: 2 }).format(bps)} bp`;
      setText(ui.bookSpread, `${formatFixed(spread, priceDigits)}${bpsText}`);
      ui.bookSpread.dataset.value = spread;
    } else setText(ui.bookSpread, "—");
  }

  // ---- channel data

  function upsertCandle(candle) {
    const start = Number(candle.start);
    const c = { ...candle, start };
    const n = candles.length;
    if (!n || start > candles[n - 1].start) candles.push(c);
    else if (start === candles[n - 1].start) candles[n - 1] = c;
    else {
      const i = candles.findIndex((x) => x.start >= start);
      if (candles[i].start === start) candles[i] = c;
      else candles.splice(i, 0, c);
    }
    if (candles.length > CANDLES_KEPT) candles = candles.slice(-CANDLES_KEPT);
  }

  function addTrades(list, ts) {
    const fresh = (Array.isArray(list) ? list : []).map((t) => ({ ...t, ts: Number(t.ts ?? ts) }));
    trades = [...fresh.reverse(), ...trades].slice(0, TAPE_LENGTH);
  }

  /** Market data arrived: the stale clock starts again (a replayed session's prices say so in their ticker). */
  function pricesArrived() {
    status.pricesArrived({ replay: session !== "" || (ticker !== null && ticker.replay === true) });
  }

  function onSnapshot(ch, data, meta) {
    applySnapshot(ch, data, meta);
    pricesArrived();
  }

  function onUpdate(ch, data, meta) {
    applyUpdate(ch, data, meta);
    pricesArrived();
  }

  function applySnapshot(ch, data, meta) {
    switch (ch) {
      case names.ticker:
        // An empty snapshot (no data in this epoch yet) keeps the stored quote on screen.
        if (data && data.last !== undefined) {
          ticker = { ...data };
          tickerTs = meta.ts || tickerTs;
        }
        schedule("ticker");
        break;
      case names.trades:
        trades = [];
        addTrades(data.trades, meta.ts);
        schedule("trades");
        break;
      case names.candles:
        candles = [];
        for (const candle of Array.isArray(data.candles) ? data.candles : []) upsertCandle(candle);
        chart.setMinutes(candles);
        schedule("candles");
        break;
      case names.book:
        book = meta.book;
        bookChecked = meta.checksumOk;
        bookState = bookStateOf(data, book);
        bookUpdateId = data.update_id ?? null;
        schedule("book");
        break;
      default:
    }
  }

  function applyUpdate(ch, data, meta) {
    switch (ch) {
      case names.ticker:
        ticker = { ...data };
        tickerTs = meta.ts || tickerTs;
        schedule("ticker");
        break;
      case names.trades:
        addTrades(data.trades, meta.ts);
        schedule("trades");
        break;
      case names.candles:
        if (data.candle) {
          upsertCandle(data.candle);
          chart.addMinute(data.candle);
        }
        schedule("candles");
        break;
      case names.book:
        book = meta.book;
        bookChecked = meta.checksumOk;
        if (BOOK_STATES.has(data.state)) bookState = data.state;
        else if (bookState !== "out_of_sync") bookState = bookStateOf(null, book);
        if ("update_id" in data) bookUpdateId = data.update_id ?? null;
        schedule("book");
        break;
      default:
    }
  }

  function onError(frame) {
    if (["unknown_symbol", "unknown_channel", "forbidden", "subscription_limit"].includes(frame.code)) {
      ui.notice.textContent = `Live data is not available: ${frame.message}`;
      ui.notice.hidden = false;
    }
    console.warn(`Livefolio market error ${frame.code}: ${frame.message}`);
  }

  // ---- connection indicator: the rule every live page shares (staleness.js)

  let client = null;
  const status = createConnectionStatus({ root, indicator, now });

  function onState({ state, retryAt: at }) {
    status.setConnectionState(state, { retryAt: at ?? null });
    if (state === "unauthenticated") window.location.assign(root.dataset.loginUrl || DEFAULT_LOGIN_URL);
  }

  function tick() {
    status.render();
  }

  render();
  status.render();

  return {
    names,
    onSnapshot,
    onUpdate,
    onError,
    onState,
    tick,
    attach(marketClient) {
      client = marketClient;
    },
    get state() {
      return status.view().state;
    },
    /** The channel's one-minute candles (the last 240). */
    get candles() {
      return candles;
    },
    /** The price chart: its `timeframe`, `intervalMs` and the `bars` drawn. */
    chart,
    get trades() {
      return trades;
    },
    get book() {
      return book;
    },
    get ticker() {
      return ticker;
    },
    get bookState() {
      return bookState;
    },
  };
}

// ---------------------------------------------------------------- page bootstrap

function readConfig() {
  const node = document.getElementById("market-config");
  if (!node) return null;
  try {
    return JSON.parse(node.textContent);
  } catch (err) {
    console.warn("Livefolio: bad #market-config", err);
    return null;
  }
}

export function boot() {
  const root = document.getElementById("instrument");
  const config = readConfig();
  if (!root || !config) return null;
  const page = createInstrumentPage({ root, indicator: document.getElementById("connection-status"), config });
  const client = new MarketClient(config.url, {
    channels: Object.values(page.names),
    throttleMs: Number(config.throttleMs) || 0,
    onState: page.onState,
    onSnapshot: page.onSnapshot,
    onUpdate: page.onUpdate,
    onError: page.onError,
  });
  page.attach(client);
  page.client = client;
  client.start();
  setInterval(page.tick, 1000);
  window.livefolioInstrument = page;
  return page;
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", boot, { once: true });
} else {
  boot();
}
