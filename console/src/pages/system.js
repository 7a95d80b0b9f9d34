// System: the replicas and their roles, database / Redis / model store
// health, connected stream clients, ingest backlog (per partition with Redis
// Streams) and dead letters from GET /v1/system; process health and
// readiness; runtime figures and every metric /metrics exposes (filterable).
// Refreshed every 5 s.

import { api } from '../api.js';
import { el, fmt, time } from '../ui.js';

/// Parses Prometheus text into [{name, labels, value}].
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m) out.push({ name: m[1], labels: m[2] ? m[2].slice(1, -1) : '', value: Number(m[3]) });
  }
  return out;
}

function sum(metrics, name) {
  return metrics.filter((m) => m.name === name).reduce((a, m) => a + m.value, 0);
}

// Runtime figures of this replica, from /metrics.
const KEY = [
  ['Events ingested', (m) => fmt(sum(m, 'cartpulse_events_ingested_total'))],
  ['Events rejected', (m) => fmt(sum(m, 'cartpulse_events_rejected_total'))],
  ['Active actors', (m) => fmt(sum(m, 'cartpulse_actors_active'))],
  ['Models serving', (m) => fmt(sum(m, 'cartpulse_models_serving'))],
  ['Stream msgs dropped', (m) => fmt(sum(m, 'cartpulse_stream_messages_dropped_total'))],
  ['Runtime errors', (m) => fmt(sum(m, 'cartpulse_runtime_errors_total'))],
];

/// A tile: a label and an <output> named by it. `state` (ok / bad / warn / idle)
/// adds a coloured edge; the text always says the same in words.
function tile(id, label) {
  const out = el('output', { class: 'value small', id, text: '…', 'aria-labelledby': `${id}-label` });
  const detail = el('span', { class: 'detail muted', id: `${id}-detail` });
  const box = el('div', { class: 'tile' }, el('span', { class: 'label', id: `${id}-label`, text: label }), out, detail);
  const set = (text, state, more = '') => {
    out.textContent = text;
    detail.textContent = more;
    if (state) box.dataset.state = state;
    else delete box.dataset.state;
  };
  return { box, out, set };
}

const stateOf = (s) => (s === 'ok' ? 'ok' : s === 'not used' ? 'idle' : s === 'down' ? 'bad' : 'warn');

/// "12 s ago", "3 min ago".
function ago(t, now) {
  const s = Math.max(0, Math.round((now - new Date(t).getTime()) / 1000));
  if (!Number.isFinite(s)) return '';
  return s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

/// A scrollable region a keyboard user can reach and scroll (phone width).
const region = (id, label, ...children) =>
  el('div', { class: 'scroll', id, role: 'region', 'aria-label': label, tabindex: 0 }, ...children);

export function systemPage(ctx) {
  const status = el('p', { class: 'msg', role: 'status', 'aria-live': 'polite', id: 'sys-status' });
  const t = {
    health: tile('sys-health', 'Process (/healthz)'),
    ready: tile('sys-ready', 'Readiness (/readyz)'),
    database: tile('sys-database', 'Database'),
    redis: tile('sys-redis', 'Redis'),
    store: tile('sys-store', 'Model store'),
    clients: tile('sys-clients', 'Stream clients'),
    backlog: tile('sys-backlog', 'Ingest backlog (events)'),
    dead: tile('sys-dead', 'Dead letters'),
    link: tile('sys-stream', "This console's stream"),
  };
  const keyTiles = KEY.map(([label], i) => tile(`sys-key-${i}`, label));
  const replicasBox = region('sys-replicas', 'Replicas table', el('p', { class: 'muted', text: 'Loading…' }));
  const partitionsBox = el('div', { id: 'sys-partitions' });
  const filter = el('input', { id: 'metric-filter', type: 'search', placeholder: 'e.g. stream', autocomplete: 'off' });
  const metricsBox = el('div', {
    class: 'scroll tallbox',
    id: 'metrics-table',
    role: 'region',
    'aria-label': 'Metrics table',
    tabindex: 0,
  });
  const root = el(
    'section',
    { 'aria-labelledby': 'sys-title' },
    el('h1', { id: 'sys-title', text: 'System' }),
    status,
    el(
      'section',
      { 'aria-labelledby': 'sys-health-title' },
      el('h2', { id: 'sys-health-title', text: 'Health' }),
      el('div', { class: 'tiles' }, Object.values(t).map((x) => x.box)),
    ),
    el(
      'section',
      { 'aria-labelledby': 'sys-replicas-title' },
      el('h2', { id: 'sys-replicas-title', text: 'Replicas' }),
      replicasBox,
    ),
    el(
      'section',
      { 'aria-labelledby': 'sys-ingest-title' },
      el('h2', { id: 'sys-ingest-title', text: 'Ingest' }),
      partitionsBox,
    ),
    el(
      'section',
      { 'aria-labelledby': 'sys-runtime-title' },
      el('h2', { id: 'sys-runtime-title', text: 'This replica' }),
      el('div', { class: 'tiles' }, keyTiles.map((x) => x.box)),
    ),
    el(
      'section',
      { 'aria-labelledby': 'sys-metrics-title' },
      el('h2', { id: 'sys-metrics-title', text: 'All metrics' }),
      el('div', { class: 'inline' }, el('label', { for: 'metric-filter', text: 'Filter' }), filter),
      metricsBox,
    ),
  );

  let metrics = [];
  const renderTable = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = metrics.filter((m) => !q || m.name.includes(q) || m.labels.toLowerCase().includes(q)).slice(0, 500);
    metricsBox.replaceChildren(
      el(
        'table',
        {},
        el('caption', { text: q ? `Metrics matching “${q}” (${rows.length})` : `Every metric of /metrics (${rows.length})` }),
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            el('th', { scope: 'col', text: 'Metric' }),
            el('th', { scope: 'col', text: 'Labels' }),
            el('th', { scope: 'col', text: 'Value' }),
          ),
        ),
        el(
          'tbody',
          {},
          rows.map((m) =>
            el(
              'tr',
              {},
              el('td', { class: 'mono', text: m.name }),
              el('td', { class: 'mono', text: m.labels }),
              el('td', { text: fmt(m.value, 4) }),
            ),
          ),
        ),
      ),
    );
  };
  filter.addEventListener('input', renderTable);

  function renderReplicas(sys) {
    const now = Date.now();
    const replicas = sys.replicas?.length ? sys.replicas : [sys.this];
    const cols = ['ID', 'Role', 'Address', 'Partitions', 'Clients', 'Started', 'Last seen'];
    replicasBox.replaceChildren(
      el(
        'table',
        { id: 'replicas-table' },
        el('caption', {
          text: `${replicas.length} live replica${replicas.length === 1 ? '' : 's'}, by role`,
        }),
        el('thead', {}, el('tr', {}, cols.map((c) => el('th', { scope: 'col', text: c })))),
        el(
          'tbody',
          {},
          replicas.map((r) =>
            el(
              'tr',
              { 'data-role': r.role, 'aria-current': r.id === sys.this?.id ? 'true' : null },
              el(
                'th',
                { scope: 'row', class: 'mono' },
                r.id,
                r.id === sys.this?.id ? el('span', { class: 'badge', text: 'this one' }) : null,
              ),
              el('td', {}, el('span', { class: `badge role-${r.role}`, text: r.role })),
              el('td', { class: 'mono', text: r.listen }),
              el('td', { text: r.partitions ?? (r.role === 'gateway' ? 'none (gateway)' : 'all') }),
              el('td', { text: fmt(r.clients) }),
              el('td', { text: time(r.started_at) }),
              el('td', {}, el('time', { datetime: r.seen_at, text: ago(r.seen_at, now) || time(r.seen_at) })),
            ),
          ),
        ),
      ),
    );
  }

  function renderIngest(ing) {
    const mode = ing?.mode || 'unknown';
    const parts = ing?.backlog_per_partition || [];
    const children = [
      el('p', {}, 'Mode: ', el('strong', { id: 'sys-ingest-mode', text: mode }),
        mode === 'direct' ? ' — events go straight to the session actors of this process.' : ' — gateways append to partitioned Redis Streams; processors consume them.'),
    ];
    if (mode === 'redis streams') {
      children.push(
        region(
          'sys-partitions-table',
          'Backlog per partition',
          el(
            'table',
            { class: 'compact' },
            el('caption', { text: `Backlog per partition (${parts.length} partitions)` }),
            el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Partition' }), el('th', { scope: 'col', text: 'Events waiting' }))),
            el(
              'tbody',
              {},
              parts.map((n, i) =>
                el('tr', { 'data-state': n > 0 ? 'warn' : null }, el('th', { scope: 'row', text: String(i) }), el('td', { text: fmt(n) })),
              ),
            ),
          ),
        ),
      );
    }
    partitionsBox.replaceChildren(...children);
  }

  function renderSystem(sys) {
    t.database.set(sys.database, stateOf(sys.database));
    const redis = sys.redis || {};
    t.redis.set(redis.status || '—', stateOf(redis.status), redis.server || (redis.status === 'not used' ? 'single process, in-process bus' : ''));
    const store = sys.store || {};
    t.store.set(store.status || '—', store.status === 'ok' ? 'ok' : store.status === 'down' ? 'bad' : 'warn', store.location || '');
    const replicas = sys.replicas?.length ? sys.replicas : [sys.this];
    const total = replicas.reduce((a, r) => a + (r.clients || 0), 0);
    t.clients.set(fmt(total), null, replicas.length > 1 ? `${fmt(sys.stream_clients)} on this replica` : 'on this replica');
    const ing = sys.ingest || {};
    t.backlog.set(fmt(ing.backlog_events ?? null), (ing.backlog_events || 0) > 0 ? 'warn' : 'ok', ing.mode || '');
    if (ing.mode === 'redis streams') {
      t.dead.set(fmt(ing.dead_letters ?? 0), (ing.dead_letters || 0) > 0 ? 'bad' : 'ok', 'poison entries set aside');
    } else {
      t.dead.set('none', 'idle', 'direct ingest has no dead-letter stream');
    }
    renderReplicas(sys);
    renderIngest(ing);
  }

  async function refresh() {
    const [h, r, m, sys] = await Promise.all([
      api.text('/healthz'),
      api.text('/readyz'),
      api.text('/metrics'),
      api.get('/v1/system').then(
        (v) => ({ ok: v }),
        (e) => ({ error: e }),
      ),
    ]);
    t.health.set(h.status === 200 ? 'up' : `down (${h.status})`, h.status === 200 ? 'ok' : 'bad');
    t.ready.set(r.status === 200 ? 'ready' : `not ready (${r.status})`, r.status === 200 ? 'ok' : 'bad');
    t.ready.out.dataset.ok = String(r.status === 200);
    const s = ctx.stream.stats;
    t.link.set(ctx.stream.state || '—', ctx.stream.state === 'live' ? 'ok' : 'warn', `${s.received} msgs · ${s.dropped} dropped · ${s.reconnects} reconnects`);
    if (sys.ok) {
      renderSystem(sys.ok);
      if (status.textContent) status.textContent = '';
    } else {
      status.textContent = `Cannot read /v1/system: ${sys.error.message}`;
      status.className = 'msg error';
    }
    metrics = parseMetrics(m.text);
    KEY.forEach(([, f], i) => keyTiles[i].set(f(metrics)));
    renderTable();
  }
  refresh().catch((e) => {
    status.textContent = `Refresh failed: ${e.message}`;
    status.className = 'msg error';
  });
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return { root, destroy: () => clearInterval(timer) };
}
