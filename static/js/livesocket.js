// A small reconnecting WebSocket client for Livefolio's JSON streams.
//
//   const socket = new LiveSocket("/ws/portfolio/", {
//     onState: ({ state, delayMs, retryAt }) => ...,  // connecting | live | reconnecting | unauthenticated | stopped
//     onMessage: (frame) => ...,                       // parsed JSON
//   });
//   socket.start();
//
// The same notifications are dispatched as DOM events ("state" and "message",
// payload in event.detail) for code that prefers addEventListener.

export const CLOSE_NOT_AUTHENTICATED = 4401;

const DEFAULTS = {
  baseDelayMs: 500,
  maxDelayMs: 30_000,
  // An open that survives this long is "healthy": the next failure starts the backoff over.
  stableAfterMs: 5_000,
  pingIntervalMs: 25_000,
};

/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(cap, base * 2^attempt)).
 * Spreading retries over the whole window stops every tab from reconnecting in
 * lockstep after a server restart.
 */
export function backoffDelay(attempt, { baseDelayMs = DEFAULTS.baseDelayMs, maxDelayMs = DEFAULTS.maxDelayMs, random = Math.random } = {}) {
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** ws:// or wss:// URL for a path on the page's own host. */
export function socketUrl(path, loc = window.location) {
  if (/^wss?:\/\//.test(path)) return path;
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const suffix = path.startsWith("/") ? path : `/${path}`;
  return `${scheme}//${loc.host}${suffix}`;
}

export class LiveSocket extends EventTarget {
  constructor(path, options = {}) {
    super();
    const { onState, onMessage, WebSocketImpl, ...rest } = options;
    this.path = path;
    this.options = { ...DEFAULTS, ...rest };
    this.onState = onState || null;
    this.onMessage = onMessage || null;
    this.WebSocketImpl = WebSocketImpl || window.WebSocket;

    this.state = "idle";
    this.attempt = 0;
    this.ws = null;
    this.retryTimer = null;
    this.pingTimer = null;
    this.stableTimer = null;
    this.stopped = true;

    this._onOnline = () => {
      // The network came back: don't sit out the rest of a long backoff.
      if (this.state === "reconnecting") this._connectNow();
    };
  }

  start() {
    if (!this.stopped) return this;
    this.stopped = false;
    window.addEventListener("online", this._onOnline);
    this._connectNow();
    return this;
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this._onOnline);
    this._clearTimers();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "client stop");
    }
    this._setState("stopped");
  }

  /** Send a JSON-serialisable value; returns false if the socket is not open. */
  send(value) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(value));
    return true;
  }

  get isOpen() {
    return this.state === "live";
  }

  _connectNow() {
    this._clearTimers();
    if (this.stopped) return;
    this._setState("connecting");

    let ws;
    try {
      ws = new this.WebSocketImpl(socketUrl(this.path));
    } catch (err) {
      console.warn("LiveSocket: could not open", err);
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;

    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      this._setState("live");
      this.stableTimer = setTimeout(() => { this.attempt = 0; }, this.options.stableAfterMs);
      this.pingTimer = setInterval(() => this.send({ type: "ping" }), this.options.pingIntervalMs);
    });

    ws.addEventListener("message", (event) => {
      if (ws !== this.ws) return;
      // Getting data proves the server is healthy, so a later drop retries quickly.
      this.attempt = 0;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        console.warn("LiveSocket: ignoring a frame that is not JSON", event.data);
        return;
      }
      if (this.onMessage) this.onMessage(frame);
      this.dispatchEvent(new CustomEvent("message", { detail: frame }));
    });

    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this._clearTimers();
      if (this.stopped) return;
      if (event.code === CLOSE_NOT_AUTHENTICATED) {
        // Retrying cannot help until the user logs in again.
        this.stopped = true;
        window.removeEventListener("online", this._onOnline);
        this._setState("unauthenticated", { code: event.code, reason: event.reason });
        return;
      }
      this._scheduleReconnect(event);
    });
    // "error" is always followed by "close", which does the work.
  }

  _scheduleReconnect(closeEvent) {
    const delayMs = backoffDelay(this.attempt, this.options);
    this.attempt += 1;
    const retryAt = Date.now() + delayMs;
    this.retryTimer = setTimeout(() => this._connectNow(), delayMs);
    this._setState("reconnecting", {
      delayMs,
      retryAt,
      attempt: this.attempt,
      code: closeEvent ? closeEvent.code : undefined,
    });
  }

  _clearTimers() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.stableTimer);
    clearInterval(this.pingTimer);
    this.retryTimer = this.stableTimer = this.pingTimer = null;
  }

  _setState(state, extra = {}) {
    this.state = state;
    const detail = { state, ...extra };
    if (this.onState) this.onState(detail);
    this.dispatchEvent(new CustomEvent("state", { detail }));
  }
}
