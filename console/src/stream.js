// The live stream client (docs/stream.md): gets a short-lived token with the
// session cookie, connects, (re)subscribes with `since` so a reconnect
// replays what was missed, and reconnects with backoff. Counts received
// messages and sequence gaps (dropped updates) per topic for the perf script.

import { api, ApiError } from './api.js';

const STALE_MS = 10_000; // kpis arrive every second; this much silence means a dead link

export class Stream {
  constructor({ onStatus, onAuthLost }) {
    this.onStatus = onStatus;
    this.onAuthLost = onAuthLost;
    this.handlers = new Map(); // topic -> Set<fn>
    this.lastSeq = {}; // topic -> last seq seen
    this.stats = { received: 0, dropped: 0, gaps: 0, reconnects: 0, connectedAt: null };
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
    this.lastMessageAt = 0;
    this.watchdog = setInterval(() => this.checkStale(), 2000);
  }

  on(topic, fn) {
    if (!this.handlers.has(topic)) {
      this.handlers.set(topic, new Set());
      this.send({ type: 'subscribe', topics: [topic], since: this.sinceFor([topic]) });
    }
    this.handlers.get(topic).add(fn);
    return () => this.off(topic, fn);
  }

  off(topic, fn) {
    const set = this.handlers.get(topic);
    if (!set) return;
    set.delete(fn);
    if (set.size === 0) {
      this.handlers.delete(topic);
      delete this.lastSeq[topic];
      this.send({ type: 'unsubscribe', topics: [topic] });
    }
  }

  sinceFor(topics) {
    const since = {};
    for (const t of topics) if (this.lastSeq[t]) since[t] = this.lastSeq[t];
    return since;
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.ready) this.ws.send(JSON.stringify(msg));
  }

  status(state, text) {
    this.state = state;
    this.onStatus(state, text);
  }

  async connect() {
    if (this.stopped) return;
    this.status(this.attempt ? 'reconnecting' : 'connecting', this.attempt ? 'reconnecting…' : 'connecting…');
    let token;
    try {
      token = (await api.post('/v1/stream/token')).token;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.stop();
        this.onAuthLost();
        return;
      }
      this.scheduleReconnect();
      return;
    }
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/v1/stream?token=${encodeURIComponent(token)}`);
    this.ws = ws;
    this.ready = false;
    ws.onopen = () => {
      this.ready = true;
      this.attempt = 0;
      this.lastMessageAt = Date.now();
      this.stats.connectedAt = Date.now();
      this.status('live', 'live');
      const topics = [...this.handlers.keys()];
      if (topics.length) ws.send(JSON.stringify({ type: 'subscribe', topics, since: this.sinceFor(topics) }));
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      if (this.stopped) return;
      const why = ev.code === 4008 ? 'too slow' : ev.code === 4001 ? 'token expired' : `closed (${ev.code})`;
      this.status('reconnecting', `disconnected: ${why}; reconnecting…`);
      this.scheduleReconnect();
    };
    ws.onerror = () => {};
  }

  scheduleReconnect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.attempt += 1;
    this.stats.reconnects += 1;
    // 0.5 s, 1 s, 2 s … capped at 15 s, with jitter so replicas are not hit in step.
    const delay = Math.min(15_000, 500 * 2 ** Math.min(this.attempt - 1, 5)) * (0.75 + Math.random() / 2);
    this.status('reconnecting', `disconnected; retrying in ${Math.ceil(delay / 1000)} s…`);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  checkStale() {
    if (this.ws && this.ready && Date.now() - this.lastMessageAt > STALE_MS) {
      // Half-open connection: no close frame will ever come.
      const ws = this.ws;
      this.ws = null;
      ws.close();
      this.status('reconnecting', 'no data for 10 s; reconnecting…');
      this.scheduleReconnect();
    } else if (this.ws && this.ready && Date.now() - this.lastMessageAt > STALE_MS / 2) {
      this.send({ type: 'ping' });
    }
  }

  receive(raw) {
    this.lastMessageAt = Date.now();
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    const { topic, seq } = msg;
    if (topic === '_control') {
      if (msg.data && msg.data.type === 'gap') {
        // History no longer reaches back: count what we cannot get back.
        const t = msg.data.topic;
        const missed = Math.max(0, (msg.data.oldest || 0) - (this.lastSeq[t] || 0) - 1);
        this.stats.dropped += missed;
        this.stats.gaps += 1;
        this.lastSeq[t] = Math.max(0, (msg.data.oldest || 1) - 1);
      }
      return;
    }
    if (topic === '_error') {
      console.warn('stream error', msg.data);
      return;
    }
    this.stats.received += 1;
    const last = this.lastSeq[topic];
    if (typeof seq === 'number') {
      if (last && seq <= last) return; // a replayed duplicate
      if (last && seq > last + 1) {
        this.stats.dropped += seq - last - 1;
        this.stats.gaps += 1;
      }
      this.lastSeq[topic] = seq;
    }
    const set = this.handlers.get(topic);
    if (set) for (const fn of set) fn(msg.data, msg);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}
