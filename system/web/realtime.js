// The realtime WebSocket (/v1/realtime on this origin): authenticate, subscribe to every channel
// from the last seq this client has seen, and come back after any loss. The server backfills
// everything after that seq before live events, so a reconnect misses nothing and repeats
// nothing the store has not already dropped by seq.

const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;
const BACKOFF_MS = [250, 1000, 2000, 4000, 8000];

export class Realtime {
  /**
   * token(): the current access token; refresh(): a promise of a new one;
   * lastSeq(channelId): the highest seq the client has of that channel;
   * onEvent(frame), onState("connecting" | "live" | "offline" | "reconnecting").
   */
  constructor({ token, refresh, lastSeq, onEvent, onState }) {
    Object.assign(this, { token, refresh, lastSeq, onEvent, onState });
    this.channels = new Set();
    this.ws = null;
    this.live = false;
    this.stopped = true;
    this.attempt = 0;
    this.timers = { reconnect: null, ping: null, pong: null };
    this.onOnline = () => this.connectNow();
    this.onOffline = () => this.drop("offline");
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    if (navigator.onLine === false) this.setState("offline");
    else this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    this.clearTimers();
    if (this.ws) this.ws.close(1000, "signed out");
    this.ws = null;
  }

  subscribe(channelId) {
    this.channels.add(channelId);
    if (this.live) this.sendSubscribe(channelId);
  }

  typing(channelId) {
    if (this.live) this.send({ type: "typing", channel_id: channelId });
  }

  // -- the connection --------------------------------------------------------------------------

  setState(state) {
    this.onState(state);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  sendSubscribe(channelId) {
    const after = this.lastSeq(channelId);
    const frame = { type: "subscribe", channel_id: channelId };
    if (Number.isInteger(after) && after >= 0) frame.after_seq = after;
    this.send(frame);
  }

  connect() {
    if (this.stopped || this.ws) return;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const ws = new WebSocket(`wss://${location.host}/v1/realtime`);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: this.token() }));
    ws.onmessage = (message) => this.receive(ws, message.data);
    ws.onclose = (event) => this.closed(ws, event.code);
  }

  connectNow() {
    clearTimeout(this.timers.reconnect);
    this.attempt = 0;
    this.connect();
  }

  receive(ws, data) {
    if (ws !== this.ws) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "authenticated") {
      this.live = true;
      this.attempt = 0;
      this.setState("live");
      for (const channelId of this.channels) this.sendSubscribe(channelId);
      this.heartbeat();
      return;
    }
    if (frame.type === "pong") {
      clearTimeout(this.timers.pong);
      return;
    }
    this.onEvent(frame);
  }

  heartbeat() {
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => {
      this.send({ type: "ping" });
      clearTimeout(this.timers.pong);
      // No pong in time: the connection is dead even if the socket has not noticed.
      this.timers.pong = setTimeout(() => this.drop("reconnecting"), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  clearTimers() {
    clearTimeout(this.timers.reconnect);
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
  }

  /** Give up the current socket (offline, or silent); reconnect unless offline. */
  drop(state) {
    const ws = this.ws;
    this.ws = null;
    this.live = false;
    this.clearTimers();
    if (ws) ws.close(1000, state);
    this.setState(state);
    if (state !== "offline") this.scheduleReconnect();
  }

  async closed(ws, code) {
    if (ws !== this.ws) return; // already replaced (drop)
    this.ws = null;
    this.live = false;
    this.clearTimers();
    if (this.stopped) return;
    if (navigator.onLine === false) {
      this.setState("offline");
      return;
    }
    if (code === 4401) {
      // The access token expired or was revoked: a refresh tells which.
      try {
        await this.refresh();
      } catch {
        return; // signed out
      }
    }
    this.setState("reconnecting");
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    clearTimeout(this.timers.reconnect);
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    const jitter = Math.random() * base * 0.3;
    this.timers.reconnect = setTimeout(() => this.connect(), base + jitter);
  }
}
