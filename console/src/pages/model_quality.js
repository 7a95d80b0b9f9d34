// The Models page's live figures: how the served versions do on the shop's
// traffic. Per active (and shadow) version: its live evaluation
// (/v1/models/{version}/evaluation) as figures, AUC per day and a
// reliability diagram, and its drift (/v1/models/{version}/drift). With two
// active versions, the A/B analysis (/v1/models/compare): who is ahead and
// whether it is significant.

import { api } from '../api.js';
import { el, fmt } from '../ui.js';
import { Chart, COLORS } from '../charts.js';

const safeId = (v) => v.replace(/[^A-Za-z0-9_-]/g, '_');

function aucChart(canvas, days) {
  return new Chart(canvas, {
    type: 'line',
    data: {
      labels: days.map((d) => d.date),
      datasets: [
        { label: 'AUC', data: days.map((d) => d.auc), borderColor: COLORS[0], backgroundColor: COLORS[0], spanGaps: true, pointRadius: 2, borderWidth: 1.5 },
      ],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      scales: { x: { ticks: { maxTicksLimit: 6, maxRotation: 0 } }, y: { min: 0.5, max: 1, title: { display: true, text: 'AUC (day of session end)' } } },
      plugins: { legend: { display: false } },
    },
  });
}

function reliabilityChart(canvas, bins) {
  const points = bins.filter((b) => b.sessions > 0).map((b) => ({ x: b.mean_score, y: b.purchase_rate, n: b.sessions }));
  return new Chart(canvas, {
    type: 'line',
    data: {
      datasets: [
        { label: 'Perfect calibration', data: [{ x: 0, y: 0 }, { x: 1, y: 1 }], borderColor: '#8b949e', borderDash: [4, 4], pointRadius: 0, borderWidth: 1 },
        { label: 'Sessions by score bin', data: points, borderColor: COLORS[1], backgroundColor: COLORS[1], pointRadius: 3, borderWidth: 1.5 },
      ],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      parsing: false,
      scales: {
        x: { type: 'linear', min: 0, max: 1, title: { display: true, text: 'mean score' } },
        y: { min: 0, max: 1, title: { display: true, text: 'purchase rate' } },
      },
      plugins: {
        legend: { display: true, labels: { boxWidth: 10 } },
        tooltip: { callbacks: { label: (c) => (c.raw.n ? `${c.raw.n} sessions: score ${fmt(c.raw.x, 3)}, bought ${fmt(c.raw.y, 3)}` : '') } },
      },
    },
  });
}

function versionPanel(version, status, evaluation, drift, charts) {
  const id = safeId(version);
  const o = evaluation.overall;
  const figures = el(
    'p',
    { class: 'figures-line', id: `live-figures-${id}`, 'data-sessions': o.sessions },
    `${fmt(o.sessions)} scored sessions, ${fmt(o.positives)} purchases · accuracy ${fmt(o.accuracy, 4)} · AUC ${fmt(o.auc, 4)} · Brier ${fmt(o.brier, 4)}`,
  );
  let driftLine;
  if (!drift) driftLine = el('p', { class: 'muted', text: 'Drift: this version has no training distribution (trained before drift was recorded).' });
  else if (drift.sessions < drift.min_sessions)
    driftLine = el('p', { class: 'muted', text: `Drift: ${fmt(drift.sessions)} sessions in the last ${fmt(drift.window_s / 3600, 1)} h, fewer than the ${drift.min_sessions} needed.` });
  else if (drift.flagged.length)
    driftLine = el('p', { class: 'msg error', id: `drift-${id}` }, `Drift (PSI > ${drift.alert_threshold}) on: ${drift.flagged.join(', ')}.`);
  else driftLine = el('p', { class: 'msg ok', id: `drift-${id}`, text: `No drift over ${fmt(drift.sessions)} sessions of the last ${fmt(drift.window_s / 3600, 1)} h.` });
  const panel = el(
    'div',
    { class: 'live-version', 'data-version': version },
    el('h3', {}, el('span', { class: 'mono', text: version }), ' ', el('span', { class: `badge ${status}`, text: status })),
    figures,
    driftLine,
  );
  if (o.sessions === 0) {
    panel.append(el('p', { class: 'muted', text: 'No closed session scored by this version yet.' }));
    return panel;
  }
  const auc = el('canvas', { id: `auc-${id}`, role: 'img', 'aria-label': `AUC per day of ${version}` });
  const rel = el('canvas', { id: `reliability-${id}`, role: 'img', 'aria-label': `Reliability diagram of ${version}` });
  panel.append(
    el(
      'div',
      { class: 'grid2' },
      el('figure', { class: 'chart' }, el('figcaption', { text: 'AUC per day' }), el('div', { class: 'canvas-box' }, auc)),
      el('figure', { class: 'chart' }, el('figcaption', { text: 'Reliability: purchase rate by score' }), el('div', { class: 'canvas-box' }, rel)),
    ),
  );
  charts.push(aucChart(auc, evaluation.days), reliabilityChart(rel, o.calibration));
  panel.append(ageTable(id, evaluation.by_age || []));
  return panel;
}

// The scores sessions got while still open, by pages seen, against what
// they did: is the live score of a young session worth showing?
function ageTable(id, ages) {
  const rows = ages.map((a) => {
    const mean = a.sessions ? a.calibration.reduce((s, b) => s + (b.mean_score || 0) * b.sessions, 0) / a.sessions : null;
    return el(
      'tr',
      { 'data-pages': a.pages },
      el('td', { text: `after ${a.pages} page${a.pages === 1 ? '' : 's'}` }),
      el('td', { text: fmt(a.sessions) }),
      el('td', { text: fmt(a.auc, 4) }),
      el('td', { text: fmt(a.brier, 4) }),
      el('td', { text: fmt(mean, 3) }),
      el('td', { text: fmt(a.positive_rate, 3) }),
    );
  });
  return el(
    'table',
    { class: 'compact', id: `by-age-${id}` },
    el('caption', { text: 'Open-session scores by session age' }),
    el(
      'thead',
      {},
      el('tr', {}, ...['Age', 'Sessions', 'AUC', 'Brier', 'Mean score', 'Purchase rate'].map((h) => el('th', { text: h }))),
    ),
    el('tbody', {}, rows),
  );
}

function abPanel(c) {
  const pv = (p) => (p === null || p === undefined ? '—' : p < 0.001 ? '< 0.001' : fmt(p, 3));
  const ci = (d) => (d.ci_low === null ? '—' : `[${fmt(d.ci_low, 4)}, ${fmt(d.ci_high, 4)}]`);
  const significant = c.differences.find((d) => d.metric === 'auc')?.significant;
  return el(
    'div',
    { class: 'ab', id: 'models-ab' },
    el('h3', { text: `A/B: ${c.a.version} (A) against ${c.b.version} (B)` }),
    el('p', { class: `msg ${significant ? 'ok' : 'info'}`, id: 'models-ab-verdict', text: c.verdict }),
    el(
      'table',
      {},
      el('caption', { text: 'B − A with 95 % confidence intervals' }),
      el('thead', {}, el('tr', {}, ['figure', 'A', 'B', 'B − A', '95 % CI', 'p', 'ahead'].map((h) => el('th', { scope: 'col', text: h })))),
      el(
        'tbody',
        {},
        c.differences.map((d) =>
          el(
            'tr',
            { class: d.significant ? 'significant' : '' },
            el('th', { scope: 'row', text: d.metric }),
            el('td', { text: fmt(d.a, 4) }),
            el('td', { text: fmt(d.b, 4) }),
            el('td', { text: fmt(d.difference, 4) }),
            el('td', { text: ci(d) }),
            el('td', { text: pv(d.p_value) }),
            el('td', { class: 'mono', text: d.ahead ? `${d.ahead}${d.significant ? ' (significant)' : ''}` : '—' }),
          ),
        ),
      ),
    ),
  );
}

/// Renders the live section for `models` (the registry list) into `root`;
/// returns the charts, to destroy before the next render.
export async function renderLive(root, models) {
  const charts = [];
  const served = models.filter((m) => m.status === 'active' || m.status === 'shadow');
  const heading = el('h2', { id: 'models-live-title', text: 'Live evaluation' });
  if (!served.length) {
    root.replaceChildren(heading, el('p', { class: 'muted', text: 'No version is active.' }));
    return charts;
  }
  const panels = await Promise.all(
    served.map(async (m) => {
      const path = `/v1/models/${encodeURIComponent(m.version)}`;
      const [evaluation, drift] = await Promise.all([api.get(`${path}/evaluation`), api.get(`${path}/drift`).catch(() => null)]);
      return versionPanel(m.version, m.status, evaluation, drift, charts);
    }),
  );
  const active = served.filter((m) => m.status === 'active');
  const ab = active.length === 2 ? abPanel(await api.get('/v1/models/compare')) : null;
  root.replaceChildren(
    heading,
    el('p', { class: 'muted', text: 'Final scores of closed sessions against what the sessions did (purchase or not), per served version.' }),
    ab,
    ...panels,
  );
  return charts;
}
