// System: health, readiness, connected stream clients, ingest and runtime
// figures, and every metric /metrics exposes (filterable). Refreshed every 5 s.

import { api } from '../api.js';
import { el, fmt } from '../ui.js';

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

const KEY = [
  ['Replicas / roles', () => '1 · all roles (single process)'],
  ['Stream clients', (m) => fmt(sum(m, 'cartpulse_stream_clients'))],
  ['Events ingested', (m) => fmt(sum(m, 'cartpulse_events_ingested_total'))],
  ['Events rejected', (m) => fmt(sum(m, 'cartpulse_events_rejected_total'))],
  ['Ingest queue (lag)', (m) => fmt(sum(m, 'cartpulse_ingest_queue_events'))],
  ['Active actors', (m) => fmt(sum(m, 'cartpulse_actors_active'))],
  ['Models serving', (m) => fmt(sum(m, 'cartpulse_models_serving'))],
  ['Stream msgs dropped', (m) => fmt(sum(m, 'cartpulse_stream_messages_dropped_total'))],
  ['Runtime errors', (m) => fmt(sum(m, 'cartpulse_runtime_errors_total'))],
];

export function systemPage(ctx) {
  const health = el('output', { class: 'value small', id: 'sys-health', text: '…' });
  const ready = el('output', { class: 'value small', id: 'sys-ready', text: '…' });
  const link = el('output', { class: 'value small', id: 'sys-stream', text: '…' });
  const keyTiles = KEY.map(([label]) => el('output', { class: 'value small', text: '…', 'data-label': label }));
  const filter = el('input', { id: 'metric-filter', type: 'search', placeholder: 'e.g. stream', autocomplete: 'off' });
  const metricsBox = el('div', { class: 'scroll tallbox', id: 'metrics-table' });
  const root = el(
    'section',
    { 'aria-labelledby': 'sys-title' },
    el('h1', { id: 'sys-title', text: 'System' }),
    el(
      'div',
      { class: 'tiles' },
      el('div', { class: 'tile' }, el('span', { class: 'label', text: 'Process (/healthz)' }), health),
      el('div', { class: 'tile' }, el('span', { class: 'label', text: 'Database (/readyz)' }), ready),
      el('div', { class: 'tile' }, el('span', { class: 'label', text: 'This console\'s stream' }), link),
      KEY.map(([label], i) => el('div', { class: 'tile' }, el('span', { class: 'label', text: label }), keyTiles[i])),
    ),
    el('h2', { text: 'All metrics' }),
    el('div', { class: 'inline' }, el('label', { for: 'metric-filter', text: 'Filter' }), filter),
    metricsBox,
  );
  let metrics = [];
  const renderTable = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = metrics.filter((m) => !q || m.name.includes(q) || m.labels.toLowerCase().includes(q)).slice(0, 500);
    metricsBox.replaceChildren(
      el('table', {},
        el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Metric' }), el('th', { scope: 'col', text: 'Labels' }), el('th', { scope: 'col', text: 'Value' }))),
        el('tbody', {}, rows.map((m) => el('tr', {}, el('td', { class: 'mono', text: m.name }), el('td', { class: 'mono', text: m.labels }), el('td', { text: fmt(m.value, 4) }))))),
    );
  };
  filter.addEventListener('input', renderTable);

  async function refresh() {
    const [h, r, m] = await Promise.all([api.text('/healthz'), api.text('/readyz'), api.text('/metrics')]);
    health.textContent = h.status === 200 ? 'up' : `down (${h.status})`;
    ready.textContent = r.status === 200 ? 'ready' : `not ready (${r.status})`;
    ready.dataset.ok = String(r.status === 200);
    const s = ctx.stream.stats;
    link.textContent = `${ctx.stream.state || '—'} · ${s.received} msgs · ${s.dropped} dropped · ${s.reconnects} reconnects`;
    metrics = parseMetrics(m.text);
    KEY.forEach(([, f], i) => (keyTiles[i].textContent = f(metrics)));
    renderTable();
  }
  refresh().catch(() => {});
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return { root, destroy: () => clearInterval(timer) };
}
