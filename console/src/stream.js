// The live stream client (docs/stream.md): gets a short-lived token with the
// session cookie, opens `/v1/stream` with no query string (load balancer
// access logs keep query strings, so the token never goes in the URL),
// authenticates with its first message `{"type":"auth","token":…}`, and only
// once the server answers `{"type":"authenticated"}` on `_control`
// (re)subscribes with `since` so a reconnect replays what was missed. It
// reconnects with backoff. Counts received messages and sequence gaps
// (dropped updates) per topic for the perf script.
//
// Close codes handled (anything else: reconnect with backoff):
//   4001  authentication refused, not sent within 5 s, or the credential
//         behind the connection was revoked / the console session logged out
//         or expired: fetch a fresh token at once and reconnect; if the token
//         request answers 401 (session gone), show the login screen.
//   4008  slow consumer: reconnect with backoff, `since` replays the rest.
//   4002  idle, 1001 server going away, 1006 dropped link: reconnect with backoff.

import { api, ApiError } from './api.js';

const STALE_MS = 10_000; // kpis arrive every second; this much silence means a dead link
const AUTH_CLOSE = 4001;

export class Stream {
  constructor({ onStatus, onAuthLost }) {
    this.onStatus = onStatus;
    this.onAuthLost = onAuthLost;
    this.handlers = new Map(); // topic -> Set<fn>
    this.lastSeq = {}; // topic -> last seq seen
    this.stats = { received: 0, dropped: 0, gaps: 0, reconnects: 0, connectedAt: null };
    this.ws = null;
    this.attempt = 0;
    this.authFailures = 0; // 4001 closes in a row without an accepted auth
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
    clearTimeout(this.timer);
    this.status(this.attempt ? 'reconnecting' : 'connecting', this.attempt ? 'reconnecting…' : 'connecting…');
    let token;
    try {
      token = (await api.post('/v1/stream/token')).token;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        // The console session is gone: no token will come; log in again.
        this.stop();
        this.onAuthLost();
        return;
      }
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // No query string: the token goes in the first message.
    const ws = new WebSocket(`${proto}//${location.host}/v1/stream`);
    this.ws = ws;
    this.ready = false;
    this.openedAt = 0;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.openedAt = Date.now();
      this.lastMessageAt = Date.now();
      this.status(this.attempt ? 'reconnecting' : 'connecting', 'authenticating…');
      ws.send(JSON.stringify({ type: 'auth', token }));
    };
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      if (this.stopped) return;
      if (ev.code === AUTH_CLOSE) {
        // Refused, expired, revoked or logged out: a fresh token tells which.
        // The first time at once; again in a row, with backoff (a server
        // that keeps refusing good tokens must not be hammered).
        this.authFailures += 1;
        if (this.authFailures === 1) {
          this.attempt += 1;
          this.stats.reconnects += 1;
          this.status('reconnecting', 'disconnected: authentication ended; getting a new token…');
          this.connect();
          return;
        }
      }
      const why = ev.code === 4008 ? 'too slow' : ev.code === AUTH_CLOSE ? 'authentication refused' : `closed (${ev.code})`;
      this.status('reconnecting', `disconnected: ${why}; reconnecting…`);
      this.scheduleReconnect();
    };
    ws.onerror = () => {};
  }

  /// The server accepted the `auth` message: now subscribe.
  authenticated() {
    const ws = this.ws;
    if (!ws || this.ready) return;
    this.ready = true;
    this.attempt = 0;
    this.authFailures = 0;
    this.stats.connectedAt = Date.now();
    this.status('live', 'live');
    const topics = [...this.handlers.keys()];
    if (topics.length) ws.send(JSON.stringify({ type: 'subscribe', topics, since: this.sinceFor(topics) }));
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
    if (this.ws && !this.ready && this.openedAt && Date.now() - this.openedAt > STALE_MS) {
      // Open but never authenticated (the server closes after 5 s itself).
      const ws = this.ws;
      this.ws = null;
      ws.close();
      this.status('reconnecting', 'no answer to authentication; reconnecting…');
      this.scheduleReconnect();
    } else if (this.ws && this.ready && Date.now() - this.lastMessageAt > STALE_MS) {
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
      if (msg.data && msg.data.type === 'authenticated') {
        this.authenticated();
      } else if (msg.data && msg.data.type === 'gap') {
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
