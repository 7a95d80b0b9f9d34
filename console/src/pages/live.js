// Live: KPI tiles and time-series charts from the `kpis` topic (one message a
// second), and a feed of high-intent sessions from the `scores` topic.
// Charts redraw at most once per animation frame, and keep a bounded window.

import { el, fmt, pct } from '../ui.js';
import { timeSeries } from '../charts.js';

const TILES = [
  ['events_per_s', 'Events / s', (v) => fmt(v, 1)],
  ['orders_per_min', 'Orders / min', (v) => fmt(v, 1)],
  ['revenue_per_min', 'Revenue / min', (v) => fmt(v, 2)],
  ['conversion_rate', 'Conversion', pct],
  ['active_sessions', 'Active sessions', (v) => fmt(v, 0)],
  ['mean_intent', 'Mean intent', (v) => (v === null || v === undefined ? '—' : v.toFixed(3))],
  ['latency_p50', 'Latency p50', (v) => (v === null || v === undefined ? '—' : `${fmt(v, 1)} ms`)],
  ['latency_p99', 'Latency p99', (v) => (v === null || v === undefined ? '—' : `${fmt(v, 1)} ms`)],
];

const FEED_MAX = 50;

export function livePage(ctx) {
  const tiles = {};
  const tileRow = el(
    'div',
    { class: 'tiles', role: 'group', 'aria-label': 'Key figures' },
    TILES.map(([key, label]) => {
      const value = el('output', { class: 'value', id: `kpi-${key}`, 'aria-live': 'off', text: '—' });
      tiles[key] = value;
      return el('div', { class: 'tile', 'data-kpi': key }, el('span', { class: 'label', text: label }), value);
    }),
  );
  const updated = el('p', { class: 'muted', id: 'kpi-updated', text: 'waiting for the first update…' });
  const canvases = {
    events: el('canvas', { 'aria-label': 'Events per second over time', role: 'img' }),
    orders: el('canvas', { 'aria-label': 'Orders and revenue per minute over time', role: 'img' }),
    intent: el('canvas', { 'aria-label': 'Conversion and mean intent over time', role: 'img' }),
    latency: el('canvas', { 'aria-label': 'Ingest to broadcast latency over time', role: 'img' }),
  };
  const feed = el('ol', { class: 'feed', id: 'scores-feed', 'aria-label': 'High-intent sessions, newest first' });
  const feedEmpty = el('p', { class: 'muted', text: 'No high-intent sessions yet.' });
  const segTable = el('div', { id: 'live-segments' });

  const root = el(
    'section',
    { 'aria-labelledby': 'live-title' },
    el('h1', { id: 'live-title', text: 'Live' }),
    tileRow,
    updated,
    el(
      'div',
      { class: 'grid2' },
      el('figure', { class: 'chart' }, el('figcaption', { text: 'Events / s' }), el('div', { class: 'canvas-box' }, canvases.events)),
      el('figure', { class: 'chart' }, el('figcaption', { text: 'Orders and revenue / min' }), el('div', { class: 'canvas-box' }, canvases.orders)),
      el('figure', { class: 'chart' }, el('figcaption', { text: 'Conversion and mean intent' }), el('div', { class: 'canvas-box' }, canvases.intent)),
      el('figure', { class: 'chart' }, el('figcaption', { text: 'Ingest → broadcast latency (ms)' }), el('div', { class: 'canvas-box' }, canvases.latency)),
    ),
    el(
      'div',
      { class: 'grid2' },
      el('section', { 'aria-labelledby': 'feed-title' }, el('h2', { id: 'feed-title', text: 'High-intent sessions' }), feedEmpty, feed),
      el('section', { 'aria-labelledby': 'seg-live-title' }, el('h2', { id: 'seg-live-title', text: 'Segment sizes' }), segTable),
    ),
  );

  const charts = {
    events: timeSeries(canvases.events, [{ label: 'events/s' }]),
    orders: timeSeries(canvases.orders, [{ label: 'orders/min' }, { label: 'revenue/min' }]),
    intent: timeSeries(canvases.intent, [{ label: 'conversion' }, { label: 'mean intent' }]),
    latency: timeSeries(canvases.latency, [{ label: 'p50' }, { label: 'p99' }]),
  };
  let frame = 0;
  const redraw = () => {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      for (const c of Object.values(charts)) c.draw();
    });
  };

  let updates = 0;
  let lastSizes = null;
  const onKpis = (k, msg) => {
    updates += 1;
    const v = { ...k, latency_p50: k.latency_ms?.p50, latency_p99: k.latency_ms?.p99 };
    for (const [key, , f] of TILES) {
      const text = f(v[key]);
      // Untouched tiles keep their text node: no DOM churn once a second.
      if (tiles[key].textContent !== text) tiles[key].textContent = text;
    }
    const at = new Date(msg.ts || Date.now());
    const label = at.toISOString().slice(11, 19);
    updated.textContent = `updated ${label} UTC · ${updates} updates`;
    root.dataset.updates = String(updates);
    charts.events.push(label, [k.events_per_s]);
    charts.orders.push(label, [k.orders_per_min, k.revenue_per_min]);
    charts.intent.push(label, [k.conversion_rate, k.mean_intent]);
    charts.latency.push(label, [k.latency_ms?.p50, k.latency_ms?.p99]);
    redraw();
    const sizes = Object.entries(k.segment_sizes || {});
    const sizesKey = JSON.stringify(sizes);
    if (sizesKey === lastSizes) return;
    lastSizes = sizesKey;
    segTable.replaceChildren(
      sizes.length
        ? el('table', {}, el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Segment' }), el('th', { scope: 'col', text: 'Customers' }))),
            el('tbody', {}, sizes.map(([n, c]) => el('tr', {}, el('td', { text: n }), el('td', { text: fmt(c) })))))
        : el('p', { class: 'muted', text: 'No active segmentation.' }),
    );
  };
  const onScore = (s) => {
    feedEmpty.hidden = true;
    const item = el(
      'li',
      {},
      el('a', { href: `#/customers/${encodeURIComponent(s.customer_id)}`, text: s.customer_id }),
      ' · ',
      el('span', { class: 'mono', text: s.session_id }),
      ' · ',
      el('strong', { text: `intent ${Number(s.score).toFixed(3)}` }),
      el('span', { class: 'muted', text: ` (model ${s.model_version ?? '—'})` }),
    );
    feed.prepend(item);
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  };
  const offs = [ctx.stream.on('kpis', onKpis), ctx.stream.on('scores', onScore)];
  return {
    root,
    destroy() {
      offs.forEach((f) => f());
      cancelAnimationFrame(frame);
      Object.values(charts).forEach((c) => c.destroy());
    },
  };
}
