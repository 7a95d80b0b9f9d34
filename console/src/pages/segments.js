// Segments: every segmentation version with its sizes, a per-segment feature
// profile chart (centroids on the scaled axis, so features are comparable),
// and activation (admin; confirmed; the server refuses viewers).

import { api } from '../api.js';
import { el, fmt, time, table, confirmDialog, message } from '../ui.js';
import { barChart } from '../charts.js';

export function segmentsPage(ctx) {
  const status = el('p', { class: 'msg', role: 'status', 'aria-live': 'polite', id: 'segments-status' });
  const list = el('div', { id: 'segments-list' });
  const detail = el('div', { id: 'segment-detail' });
  const root = el('section', { 'aria-labelledby': 'seg-title' }, el('h1', { id: 'seg-title', text: 'Segments' }), status, list, detail);
  let charts = [];
  let data = null;

  function destroyCharts() {
    charts.forEach((c) => c.destroy());
    charts = [];
  }

  function showVersion(v) {
    destroyCharts();
    const segs = v.segments || [];
    const sizeCanvas = el('canvas', { role: 'img', 'aria-label': `Segment sizes of version ${v.version}` });
    const profCanvas = el('canvas', { role: 'img', 'aria-label': `Feature profile per segment of version ${v.version}` });
    const features = segs.length ? Object.keys(segs[0].centroid || {}) : [];
    detail.replaceChildren(
      el('h2', { text: `Version ${v.version}${v.active ? ' (active)' : ''}` }),
      v.problem ? el('p', { class: 'msg error', text: v.problem }) : null,
      el(
        'div',
        { class: 'grid2' },
        el('figure', { class: 'chart' }, el('figcaption', { text: 'Segment sizes (at segmentation / live)' }), el('div', { class: 'canvas-box' }, sizeCanvas)),
        el('section', {}, table(
          [
            ['Segment', (s) => s.name],
            ['Size', (s) => s.size],
            ['Live', (s) => s.live_size ?? '—'],
            ['Defining features', (s) => (s.defining || []).slice(0, 3).map((d) => `${d.feature} ${d.z > 0 ? '↑' : '↓'}`).join(', ')],
          ],
          segs,
        )),
      ),
      el('figure', { class: 'chart tall' }, el('figcaption', { text: 'Feature profile per segment (scaled centroid)' }), el('div', { class: 'canvas-box' }, profCanvas)),
    );
    charts.push(
      barChart(sizeCanvas, segs.map((s) => s.name), [
        { label: 'at segmentation', data: segs.map((s) => s.size) },
        { label: 'live', data: segs.map((s) => s.live_size ?? 0) },
      ]),
    );
    charts.push(barChart(profCanvas, features, segs.map((s) => ({ label: s.name, data: features.map((f) => s.centroid[f]) })), { yTitle: 'scaled value' }));
  }

  function render() {
    const rows = data.segmentations || [];
    if (!rows.length) {
      list.replaceChildren(el('p', { class: 'muted', text: 'No segmentation yet: run `cartpulse segment`.' }));
      return;
    }
    list.replaceChildren(
      el('div', { class: 'scroll' }, table(
        [
          ['Version', (r) => el('button', { type: 'button', class: 'link', text: `v${r.version}`, onclick: () => showVersion(r), 'aria-label': `Show version ${r.version}` })],
          ['Active', (r) => (r.active ? 'yes' : '')],
          ['Created', (r) => time(r.created_at)],
          ['k', (r) => r.k],
          ['Customers', (r) => r.n_customers],
          ['Silhouette', (r) => (r.silhouette === null || r.silhouette === undefined ? '—' : fmt(r.silhouette, 3))],
          ['', (r) =>
            r.active
              ? ''
              : el('button', {
                  type: 'button',
                  class: 'admin-only',
                  text: 'Activate',
                  disabled: !ctx.isAdmin(),
                  title: ctx.isAdmin() ? null : 'Viewers cannot change anything',
                  'aria-label': `Activate version ${r.version}`,
                  onclick: () => activate(r.version),
                })],
        ],
        rows,
        'Segmentation versions, newest first',
      )),
    );
    showVersion(rows.find((r) => r.active) || rows[0]);
  }

  async function activate(version) {
    if (!(await confirmDialog(`Activate segmentation v${version}?`, 'Live customers will be reassigned to its segments.'))) return;
    try {
      await api.post(`/v1/segments/${version}/activate`);
      message(status, `Version ${version} is active.`, 'ok');
      await load();
    } catch (e) {
      message(status, `Activation refused: ${e.message}`, 'error');
    }
  }

  async function load() {
    try {
      data = await api.get('/v1/segments');
      render();
    } catch (e) {
      message(status, `Cannot list segmentations: ${e.message}`, 'error');
    }
  }
  load();
  return { root, destroy: destroyCharts };
}
