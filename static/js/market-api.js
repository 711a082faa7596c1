// A small client for Livefolio's market-data WebSocket API v1, `/ws/v1/market`
// (docs/websocket-api.md is the protocol; this file follows it section by section).
//
//   const client = new MarketClient("/ws/v1/market", {
//     channels: ["ticker:BTC-USD", "trades:BTC-USD", "candles:BTC-USD@1m", "book:BTC-USD@depth=10"],
//     throttleMs: 250,                       // or { "book:BTC-USD@depth=10": 100, default: 250 }
//     onState: ({ state }) => ...,           // connecting | live | reconnecting | unauthenticated | stopped
//     onSnapshot: (ch, data, meta) => ...,   // replace everything shown for `ch`
//     onUpdate: (ch, data, meta) => ...,     // apply one update (never a duplicate, never after a gap)
//     onError: (frame) => ...,               // an `error` frame the client could not deal with itself
//   });
//   client.start();
//
// What it does for the page:
// - Connects with the page's session (the browser sends the cookie and Origin), through
//   LiveSocket: exponential backoff with full jitter, like the dashboard.
// - On the server's `hello`, subscribes; after a reconnect, `resume`s every channel from
//   the (epoch, seq) it last applied, so the server replays exactly what was missed
//   (`recovered: true`) or sends a fresh snapshot (`recovered: false`).
// - Tracks epoch/seq per channel. An update is applied only if it continues the channel
//   (`first_seq` .. `seq` for a throttled, merged update); a duplicate is dropped; anything
//   else is a gap, closed with a `resume` of that channel on the same connection.
// - Opts in to batch frames: the frames the server makes for it in one go (a window's
//   updates, a subscribe's ack and snapshots) arrive as one `batch` frame, handled in order.
// - Heartbeats: each names the last seq the server sent per channel. A channel still
//   behind a moment later has a gap (resumed); a channel the heartbeat leaves out was
//   dropped by the server (subscribed again). No frame for two heartbeats and more: the
//   connection is dead, and it is dropped and reopened.
// - Book channels: keeps the book (`OrderBook`), applies each update's absolute level
//   quantities and checks the CRC32 checksum. A copy that drifted is subscribed again,
//   which brings a fresh snapshot. `meta.book` carries the book to the callbacks. A book
//   message's `state` and `update_id` are not the book's levels: OrderBook and the checksum
//   ignore them, and the page reads them from `data` (an out-of-sync update removes every
//   level, so its checksum, of the empty book, still matches).
//
// No third-party code; the pure parts (crc32, bookChecksum, compareDecimals, OrderBook,
// continues) are exported for tests.

import { LiveSocket } from "./livesocket.js";

const DEFAULT_HEARTBEAT_MS = 15_000;
// A gap a heartbeat suggests is acted on only if it is still there this much later: the
// heartbeat may have been written just before the update it names.
const HEARTBEAT_CONFIRM_MS = 1_000;
// Never ask for the same book's snapshot more often than this when checksums keep failing.
const CHECKSUM_RETRY_MS = 5_000;
// A refused or failed request (rate_limited, server_error) is sent again after this.
const RETRY_REQUEST_MS = 2_000;
// Codes after which asking again cannot help: the channel is given up and reported.
const FATAL_CODES = new Set(["unknown_channel", "unknown_symbol", "forbidden", "subscription_limit", "bad_request"]);

// ---------------------------------------------------------------- checksum

let crcTable = null;

/** CRC32 (IEEE, as zlib.crc32) of an ASCII/UTF-8 string, unsigned. */
export function crc32(text) {
  if (crcTable === null) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n += 1) {
      let c = n;
      for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  const bytes = new TextEncoder().encode(text);
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i += 1) crc = crcTable[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

export const CHECKSUM_LEVELS = 10;

/**
 * The book checksum of docs/websocket-api.md: CRC32 of the best 10 bids (best first) then the
 * best 10 asks (best first), each level `price:quantity` with the exact strings sent, joined by `|`.
 */
export function bookChecksum(bids, asks) {
  const levels = [...bids.slice(0, CHECKSUM_LEVELS), ...asks.slice(0, CHECKSUM_LEVELS)];
  return crc32(levels.map(([price, qty]) => `${price}:${qty}`).join("|"));
}

// ---------------------------------------------------------------- decimals

/** Exact order of two decimal strings ("87648.2" < "87648.21"): -1, 0 or 1. No float rounding. */
export function compareDecimals(a, b) {
  const sa = String(a).trim();
  const sb = String(b).trim();
  const na = sa.startsWith("-");
  const nb = sb.startsWith("-");
  if (na !== nb) return na ? -1 : 1;
  const sign = na ? -1 : 1;
  const [ia, fa = ""] = sa.replace(/^[+-]/, "").split(".");
  const [ib, fb = ""] = sb.replace(/^[+-]/, "").split(".");
  const inta = ia.replace(/^0+(?=\d)/, "");
  const intb = ib.replace(/^0+(?=\d)/, "");
  if (inta.length !== intb.length) return (inta.length < intb.length ? -1 : 1) * sign;
  if (inta !== intb) return (inta < intb ? -1 : 1) * sign;
  const width = Math.max(fa.length, fb.length);
  const fra = fa.padEnd(width, "0");
  const frb = fb.padEnd(width, "0");
  if (fra === frb) return 0;
  return (fra < frb ? -1 : 1) * sign;
}

function isZero(qty) {
  return Number(qty) === 0;
}

// ---------------------------------------------------------------- order book

/**
 * A client's copy of one `book:SYM@depth=N` channel: price string → quantity string per side.
 * Keyed by the exact strings sent (the server spells each value one way only).
 */
export class OrderBook {
  constructor(depth) {
    this.depth = depth;
    this.bidLevels = new Map();
    this.askLevels = new Map();
    this._sorted = null;
  }

  /** Replace the book with a snapshot's `{bids, asks}`. */
  load({ bids = [], asks = [] } = {}) {
    this.bidLevels.clear();
    this.askLevels.clear();
    this.apply({ bids, asks });
  }

  /** Apply an update's changed levels: absolute quantities, "0" removes the level. */
  apply({ bids = [], asks = [] } = {}) {
    for (const [side, levels] of [
      [this.bidLevels, bids],
      [this.askLevels, asks],
    ]) {
      for (const [price, qty] of levels) {
        if (isZero(qty)) side.delete(String(price));
        else side.set(String(price), String(qty));
      }
    }
    this._sorted = null;
  }

  _sort() {
    if (this._sorted === null) {
      const bids = [...this.bidLevels].sort((x, y) => compareDecimals(y[0], x[0]));
      const asks = [...this.askLevels].sort((x, y) => compareDecimals(x[0], y[0]));
      this._sorted = { bids, asks };
    }
    return this._sorted;
  }

  /** Bids, best (highest) first: [[price, qty], ...]. */
  get bids() {
    return this._sort().bids;
  }

  /** Asks, best (lowest) first. */
  get asks() {
    return this._sort().asks;
  }

  checksum() {
    return bookChecksum(this.bids, this.asks);
  }
}

// ---------------------------------------------------------------- sequencing

/**
 * Whether an update continues a channel that is at (epoch, seq): the next message of the same
 * epoch (a merged one from `first_seq`), or the first message of a channel that had none yet.
 * Returns "next", "dup" (already applied) or "gap".
 */
export function continues(position, frame) {
  const first = Number.isInteger(frame.first_seq) ? frame.first_seq : frame.seq;
  if (frame.epoch === position.epoch && frame.seq <= position.seq) return "dup";
  if (frame.epoch === position.epoch && first === position.seq + 1) return "next";
  if (position.epoch === "" && position.seq === 0 && first === 1) return "next";
  return "gap";
}

// ---------------------------------------------------------------- the client

/** LiveSocket speaks `{"type": "ping"}`; this API's ping is `{"op": "ping"}`. */
class MarketSocket extends LiveSocket {
  send(value) {
    const frame = value && value.type === "ping" && value.op === undefined ? { op: "ping" } : value;
    return super.send(frame);
  }
}

function kindOf(channel) {
  return String(channel).split(":", 1)[0];
}

function depthOf(channel) {
  const match = /@depth=(\d+)$/.exec(channel);
  return match ? Number(match[1]) : 0;
}

export class MarketClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    const { channels = [], throttleMs = 0, onState, onSnapshot, onUpdate, onError, now, WebSocketImpl, socketOptions = {} } = options;
    this.url = url;
    this.throttleMs = throttleMs;
    this.onState = onState || null;
    this.onSnapshot = onSnapshot || null;
    this.onUpdate = onUpdate || null;
    this.onError = onError || null;
    this.now = now || (() => Date.now());

    /**
     * Per channel: where it stands and what it waits for.
     *   epoch, seq  position of the last message applied
     *   ready       a snapshot (or a recovered resume) has been applied since the last (re)subscribe
     *   waiting     null, or what was asked and not yet answered: "subscribe" | "resume"
     *   generation  +1 per snapshot, so a heartbeat check can tell a fresh start from a stall
     *   book        OrderBook for book channels
     *   failed      an error code after which the channel is given up
     */
    this.channels = new Map();
    for (const name of channels) this._track(name);

    this.heartbeatMs = DEFAULT_HEARTBEAT_MS;
    this.user = null;
    this.limits = null;
    this.state = "idle";
    this.lastFrameAt = null; // any frame: heartbeats prove the connection is alive
    this.lastDataAt = null; // snapshots and updates: market data is flowing
    this.helloAt = null;
    this.stats = {
      connections: 0,
      snapshots: 0,
      updates: 0,
      duplicates: 0,
      gaps: 0,
      resumes: 0,
      recovered: 0,
      notRecovered: 0,
      checksumOk: 0,
      checksumMismatches: 0,
      resubscribes: 0,
      deadConnections: 0,
      errors: 0,
    };

    this._nextId = 1;
    this._requests = new Map(); // id → { op, channels }
    this._timers = new Set();
    this._watchdog = null;
    this._heartbeatChecks = new Map(); // channel → timer

    this.socket = new MarketSocket(url, {
      WebSocketImpl,
      ...socketOptions,
      onState: (detail) => this._socketState(detail),
      onMessage: (frame) => this._frame(frame),
    });
  }

  // ---- public

  start() {
    this.socket.start();
    this._watchdog = setInterval(() => this._checkAlive(), 1_000);
    return this;
  }

  stop() {
    clearInterval(this._watchdog);
    this._watchdog = null;
    this._clearTimers();
    this.socket.stop();
  }

  /** Where a channel stands: { epoch, seq, ready, waiting, book, failed } (undefined if unknown). */
  channel(name) {
    return this.channels.get(name);
  }

  /**
   * Drop the connection as a network failure would (for tests and debugging): the client
   * reconnects with backoff and resumes every channel.
   */
  dropConnection() {
    const ws = this.socket.ws;
    if (ws) ws.close(4000, "client dropped the connection");
  }

  // ---- channel bookkeeping

  _track(name) {
    if (!this.channels.has(name)) {
      this.channels.set(name, {
        name,
        kind: kindOf(name),
        epoch: "",
        seq: 0,
        ready: false,
        waiting: null,
        generation: 0,
        book: kindOf(name) === "book" ? new OrderBook(depthOf(name)) : null,
        failed: null,
        checksumRetryAt: 0,
      });
    }
    return this.channels.get(name);
  }

  _throttleFor(name) {
    if (typeof this.throttleMs === "number") return this.throttleMs;
    const value = this.throttleMs[name] ?? this.throttleMs[kindOf(name)] ?? this.throttleMs.default ?? 0;
    return Number(value) || 0;
  }

  /** Channels grouped by throttle: one request per group, since a request carries one throttle_ms. */
  _byThrottle(names) {
    const groups = new Map();
    for (const name of names) {
      const ms = this._throttleFor(name);
      if (!groups.has(ms)) groups.set(ms, []);
      groups.get(ms).push(name);
    }
    return groups;
  }

  _request(op, body, channels) {
    const id = this._nextId++;
    // Subscribes and resumes opt in to batch frames: a window's updates of every channel arrive as one frame.
    const batch = op === "subscribe" || op === "resume" ? { batch: true } : {};
    const sent = this.socket.send({ op, id, ...body, ...batch });
    if (sent) this._requests.set(id, { op, channels });
    return sent;
  }

  /** Ask for fresh snapshots: the channel starts over from whatever the server has now. */
  _subscribe(names) {
    const wanted = names.filter((name) => !this.channels.get(name).failed);
    for (const [throttle, group] of this._byThrottle(wanted)) {
      for (const name of group) {
        const st = this.channels.get(name);
        st.waiting = "subscribe";
        st.ready = false;
      }
      if (!this._request("subscribe", { channels: group, throttle_ms: throttle }, group)) {
        for (const name of group) this.channels.get(name).waiting = null;
      }
    }
  }

  /** Ask for everything after each channel's position: replayed if the history has it, else a snapshot. */
  _resume(names) {
    const wanted = names.filter((name) => !this.channels.get(name).failed);
    for (const [throttle, group] of this._byThrottle(wanted)) {
      const positions = {};
      for (const name of group) {
        const st = this.channels.get(name);
        positions[name] = { epoch: st.epoch, seq: st.seq };
        st.waiting = "resume";
      }
      this.stats.resumes += 1;
      if (!this._request("resume", { channels: positions, throttle_ms: throttle }, group)) {
        for (const name of group) this.channels.get(name).waiting = null;
      }
    }
  }

  _later(ms, fn) {
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      fn();
    }, ms);
    this._timers.add(timer);
    return timer;
  }

  _clearTimers() {
    for (const timer of this._timers) clearTimeout(timer);
    this._timers.clear();
    for (const timer of this._heartbeatChecks.values()) clearTimeout(timer);
    this._heartbeatChecks.clear();
  }

  // ---- socket

  _socketState(detail) {
    const { state } = detail;
    if (state === "connecting" || state === "reconnecting" || state === "stopped" || state === "unauthenticated") {
      // Whatever was asked on the old connection will not be answered.
      this._requests.clear();
      this._clearTimers();
      for (const st of this.channels.values()) st.waiting = null;
      this.helloAt = null;
    }
    // "live" is the open socket; the client is live once the server said hello.
    this._setState(state === "live" ? "connecting" : state, detail);
  }

  _setState(state, extra = {}) {
    this.state = state;
    const detail = { ...extra, state };
    if (this.onState) this.onState(detail);
    this.dispatchEvent(new CustomEvent("state", { detail }));
  }

  /** Once a second: a connection silent for two heartbeats and more is dead; drop it and reconnect. */
  _checkAlive() {
    if (this.state !== "live" || this.lastFrameAt === null) return;
    if (this.now() - this.lastFrameAt > 2 * this.heartbeatMs + 5_000) {
      // Not close(): on a half-open connection its closing handshake can take a minute to
      // time out. Abandon the socket and open another now.
      this.stats.deadConnections += 1;
      this.lastFrameAt = null;
      this.socket.stop();
      this.socket.start();
    }
  }

  _hello(frame) {
    this.stats.connections += 1;
    this.helloAt = this.now();
    this.heartbeatMs = Number(frame.heartbeat_ms) || DEFAULT_HEARTBEAT_MS;
    this.user = frame.user ?? null;
    this.limits = frame.limits || null;
    this._setState("live");
    // Channels that had a position resume from it; the others (never synced) subscribe.
    const resume = [];
    const subscribe = [];
    for (const st of this.channels.values()) {
      if (st.failed) continue;
      (st.ready ? resume : subscribe).push(st.name);
    }
    if (subscribe.length) this._subscribe(subscribe);
    if (resume.length) this._resume(resume);
  }

  // ---- frames

  _frame(frame) {
    if (!frame || typeof frame !== "object") return;
    this.lastFrameAt = this.now();
    switch (frame.type) {
      case "batch":
        for (const message of Array.isArray(frame.messages) ? frame.messages : []) this._frame(message);
        break;
      case "hello":
        this._hello(frame);
        break;
      case "ack":
        this._requests.delete(frame.id);
        break;
      case "snapshot":
        this._snapshot(frame);
        break;
      case "update":
        this._update(frame);
        break;
      case "resumed":
        this._resumed(frame);
        break;
      case "heartbeat":
        this._heartbeat(frame);
        break;
      case "unsubscribed":
      case "pong":
      case "authenticated":
        this._requests.delete(frame.id);
        break;
      case "error":
        this._error(frame);
        break;
      default:
        console.warn("MarketClient: unknown frame type", frame.type);
    }
    this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
  }

  _snapshot(frame) {
    const st = this.channels.get(frame.ch);
    if (!st) return; // not ours (an unsubscribe in flight)
    st.epoch = String(frame.epoch ?? "");
    st.seq = Number(frame.seq) || 0;
    st.ready = true;
    st.waiting = null;
    st.generation += 1;
    this.stats.snapshots += 1;
    this.lastDataAt = this.now();
    const meta = this._meta(frame, st);
    if (st.book) {
      st.book.load(frame.data || {});
      meta.checksumOk = this._verify(st, frame.data);
    }
    if (this.onSnapshot) this.onSnapshot(frame.ch, frame.data || {}, meta);
  }

  _update(frame) {
    const st = this.channels.get(frame.ch);
    if (!st || !st.ready || st.waiting) return; // superseded: a snapshot or a replay is on its way
    const verdict = continues(st, frame);
    if (verdict === "dup") {
      this.stats.duplicates += 1;
      return;
    }
    if (verdict === "gap") {
      this.stats.gaps += 1;
      this._resume([st.name]);
      return;
    }
    st.epoch = frame.epoch;
    st.seq = frame.seq;
    this.stats.updates += 1;
    this.lastDataAt = this.now();
    const meta = this._meta(frame, st);
    if (st.book) {
      st.book.apply(frame.data || {});
      meta.checksumOk = this._verify(st, frame.data);
      if (!meta.checksumOk) {
        this._resyncBook(st);
        return; // the copy is wrong: wait for the fresh snapshot rather than show it
      }
    }
    if (this.onUpdate) this.onUpdate(frame.ch, frame.data || {}, meta);
  }

  _meta(frame, st) {
    return {
      epoch: frame.epoch,
      seq: frame.seq,
      firstSeq: Number.isInteger(frame.first_seq) ? frame.first_seq : frame.seq,
      ts: frame.ts,
      book: st.book,
    };
  }

  /** Whether the book copy matches the checksum the server sent with it. */
  _verify(st, data) {
    if (!data || data.checksum === undefined || data.checksum === null) return true;
    const ok = st.book.checksum() === Number(data.checksum);
    if (ok) this.stats.checksumOk += 1;
    else {
      this.stats.checksumMismatches += 1;
      console.warn(`MarketClient: ${st.name} checksum mismatch at seq ${st.seq}; asking for a fresh snapshot`);
    }
    return ok;
  }

  _resyncBook(st) {
    const wait = Math.max(0, st.checksumRetryAt - this.now());
    st.checksumRetryAt = this.now() + wait + CHECKSUM_RETRY_MS;
    // Updates are dropped until the snapshot; after a reconnect meanwhile, a subscribe (not a
    // resume: replaying onto a wrong copy would not make it right).
    st.ready = false;
    st.waiting = "subscribe";
    this.stats.resubscribes += 1;
    this._later(wait, () => this._subscribe([st.name]));
  }

  _resumed(frame) {
    const st = this.channels.get(frame.ch);
    if (!st) return;
    if (frame.recovered) {
      // The server replays from_seq..seq as updates next: our position stays where we asked from.
      this.stats.recovered += 1;
      st.waiting = null;
      st.ready = true;
    } else {
      this.stats.notRecovered += 1;
      st.waiting = "subscribe"; // a snapshot follows
    }
  }

  _heartbeat(frame) {
    const named = frame.channels && typeof frame.channels === "object" ? frame.channels : {};
    for (const st of this.channels.values()) {
      if (!st.ready || st.waiting || st.failed) continue;
      const position = named[st.name];
      if (!position) {
        // The server no longer sends this channel (it said why in an error): subscribe again.
        this.stats.resubscribes += 1;
        this._subscribe([st.name]);
        continue;
      }
      const behind = () => position.epoch !== st.epoch || Number(position.seq) > st.seq;
      if (!behind() || this._heartbeatChecks.has(st.name)) continue;
      const generation = st.generation;
      const timer = setTimeout(() => {
        this._heartbeatChecks.delete(st.name);
        if (st.generation !== generation || st.waiting || !st.ready) return; // started over meanwhile
        if (position.epoch === st.epoch ? Number(position.seq) > st.seq : true) {
          this.stats.gaps += 1;
          this._resume([st.name]);
        }
      }, HEARTBEAT_CONFIRM_MS);
      this._heartbeatChecks.set(st.name, timer);
    }
  }

  _error(frame) {
    this.stats.errors += 1;
    const request = frame.id !== undefined ? this._requests.get(frame.id) : undefined;
    if (request) this._requests.delete(frame.id);
    const names = request ? request.channels || [] : [];
    if (frame.code === "not_authenticated" || frame.code === "auth_failed") {
      this._setState("unauthenticated", { code: frame.code });
    } else if (request && FATAL_CODES.has(frame.code)) {
      for (const name of names) {
        const st = this.channels.get(name);
        if (st) {
          st.failed = frame.code;
          st.waiting = null;
        }
      }
    } else if (request && (request.op === "subscribe" || request.op === "resume")) {
      // rate_limited, server_error: ask again a little later, for a fresh start.
      for (const name of names) {
        const st = this.channels.get(name);
        if (st) st.waiting = "subscribe";
      }
      this._later(RETRY_REQUEST_MS, () => this._subscribe(names));
    }
    if (this.onError) this.onError(frame);
    else console.warn(`MarketClient: ${frame.code}: ${frame.message}`);
  }
}
