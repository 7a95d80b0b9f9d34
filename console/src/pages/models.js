// Models: the registry with its cross-validation figures and the report
// images published with each version (ROC, calibration, confusion matrix;
// served same-origin by /v1/models/{version}/report/{name}); promote (with
// an A/B traffic share), roll back, put a version in shadow (scored alongside,
// never served) or end the shadow. Admin only, each behind a confirmation;
// the buttons are disabled for viewers, and the server refuses them anyway.
// Below, the served versions' live evaluation, drift and A/B analysis
// (model_quality.js).

import { api } from '../api.js';
import { el, fmt, time, table, confirmDialog, message } from '../ui.js';
import { renderLive } from './model_quality.js';

export function modelsPage(ctx) {
  const status = el('p', { class: 'msg', role: 'status', 'aria-live': 'polite', id: 'models-status' });
  const list = el('div', { id: 'models-list' });
  const reports = el('section', { class: 'reports', id: 'models-reports', 'aria-labelledby': 'models-reports-title' });
  const live = el('section', { class: 'live-quality', id: 'models-live', 'aria-labelledby': 'models-live-title' });
  let liveCharts = [];
  // Which versions' reports are open (kept across reloads after a promotion).
  let open = null;
  const admin = ctx.isAdmin();
  const rollback = el('button', {
    type: 'button',
    id: 'models-rollback',
    class: 'secondary',
    text: 'Roll back last promotion',
    disabled: !admin,
    onclick: () => doRollback(),
  });
  const root = el(
    'section',
    { 'aria-labelledby': 'models-title' },
    el('h1', { id: 'models-title', text: 'Models' }),
    admin ? null : el('p', { class: 'msg info', id: 'models-readonly', text: 'You are a viewer: the registry is read-only for you.' }),
    status,
    list,
    el('div', { class: 'row' }, rollback),
    live,
    reports,
  );

  function share(v) {
    return v === null || v === undefined ? '—' : `${Math.round(v * 100)} %`;
  }

  function promoteControls(m) {
    const id = `traffic-${m.version}`;
    const input = el('input', { id, type: 'number', min: 1, max: 100, step: 1, value: 100, class: 'narrow', disabled: !admin });
    const btn = el('button', {
      type: 'button',
      text: 'Promote',
      'data-version': m.version,
      class: 'promote',
      disabled: !admin,
      'aria-label': `Promote ${m.version}`,
      onclick: () => promote(m.version, Number(input.value)),
    });
    return el('span', { class: 'inline' }, el('label', { for: id, text: 'share %' }), input, btn);
  }

  async function promote(version, percent) {
    if (!(percent > 0 && percent <= 100)) {
      message(status, 'The traffic share must be between 1 and 100 %.', 'error');
      return;
    }
    const partial = percent < 100;
    const text = partial
      ? `${version} will score ${percent} % of customers (A/B split by customer); the active version keeps the rest.`
      : `${version} will score every customer; the active version is retired.`;
    if (!(await confirmDialog(`Promote ${version}?`, text))) return;
    try {
      const r = await api.post(`/v1/models/${encodeURIComponent(version)}/promote`, partial ? { traffic: percent / 100 } : undefined);
      message(status, `Promoted ${version}: active ${r.active.map((s) => `${s.version} ${share(s.traffic_share)}`).join(', ')}.`, 'ok');
      await load();
    } catch (e) {
      message(status, `Promotion refused (${e.status}): ${e.message}`, 'error');
    }
  }

  function shadowControls(m) {
    if (m.status === 'active') return el('span', { class: 'muted', text: '—' });
    const inShadow = m.status === 'shadow';
    return el('button', {
      type: 'button',
      class: inShadow ? 'secondary unshadow' : 'secondary shadow',
      text: inShadow ? 'End shadow' : 'Shadow',
      'data-version': m.version,
      disabled: !admin,
      'aria-label': inShadow ? `End the shadow deployment of ${m.version}` : `Put ${m.version} in shadow`,
      onclick: () => (inShadow ? unshadow(m.version) : shadow(m.version)),
    });
  }

  async function shadow(version) {
    const text = `${version} will also score every served batch, after the replies are sent; its scores are only compared (metrics), never served. A previous shadow goes back to candidate.`;
    if (!(await confirmDialog(`Shadow ${version}?`, text))) return;
    try {
      const r = await api.post(`/v1/models/${encodeURIComponent(version)}/shadow`);
      const released = r.released ? ` ${r.released.version} is ${r.released.status} again.` : '';
      message(status, r.changed ? `${version} is in shadow.${released}` : `${version} was already in shadow.`, 'ok');
      await load();
    } catch (e) {
      message(status, `Shadow refused (${e.status}): ${e.message}`, 'error');
    }
  }

  async function unshadow(version) {
    if (!(await confirmDialog(`End the shadow of ${version}?`, `${version} stops being scored alongside and goes back to its previous status.`))) return;
    try {
      const r = await api.post('/v1/models/shadow/clear');
      message(status, r.released ? `Shadow ended: ${r.released.version} is ${r.released.status} again.` : 'No version was in shadow.', 'ok');
      await load();
    } catch (e) {
      message(status, `Ending the shadow refused (${e.status}): ${e.message}`, 'error');
    }
  }

  async function doRollback() {
    if (!(await confirmDialog('Roll back?', 'The versions active before the last promotion are restored.'))) return;
    try {
      const r = await api.post('/v1/models/rollback');
      message(status, `Rolled back ${r.version}: active ${r.active.map((s) => `${s.version} ${share(s.traffic_share)}`).join(', ') || 'none'}.`, 'ok');
      await load();
    } catch (e) {
      message(status, `Rollback refused (${e.status}): ${e.message}`, 'error');
    }
  }

  const FIGURES = {
    'roc.png': 'ROC curve',
    'calibration.png': 'Calibration plot',
    'confusion.png': 'Confusion matrix',
  };
  const figureName = (name) => FIGURES[name] || name.replace(/\.png$/, '').replace(/[-_]+/g, ' ');
  const reportId = (version) => `report-${version}`;
  // ROC first, then calibration, confusion, then any others by name.
  const order = Object.keys(FIGURES);
  const rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
  const byFigure = (images) => [...images].sort((a, b) => rank(a.name) - rank(b.name) || a.name.localeCompare(b.name));

  function reportButton(m) {
    if (!m.report?.length) return el('span', { class: 'muted', text: 'none' });
    return el('button', {
      type: 'button',
      class: 'link',
      text: `${m.report.length} image${m.report.length === 1 ? '' : 's'}`,
      'aria-controls': reportId(m.version),
      'aria-label': `Show the report images of ${m.version}`,
      onclick: () => {
        const d = document.getElementById(reportId(m.version));
        if (!d) return;
        d.open = true;
        d.scrollIntoView({ block: 'start' });
        d.querySelector('summary')?.focus();
      },
    });
  }

  function renderReports(models) {
    const withReport = models.filter((m) => m.report?.length);
    if (open === null) {
      // At first the active versions' reports (or the newest one's) are open.
      const active = withReport.filter((m) => m.status === 'active').map((m) => m.version);
      open = new Set(active.length ? active : withReport.slice(0, 1).map((m) => m.version));
    }
    reports.replaceChildren(
      el('h2', { id: 'models-reports-title', text: 'Evaluation reports' }),
      withReport.length
        ? el('p', { class: 'muted', text: 'Out-of-fold figures of the cross-validation, stored with each version when it was published.' })
        : el('p', { class: 'muted', text: 'No version has report images: publish one trained with `cartpulse train --report DIR/report`.' }),
      ...withReport.map((m) => {
        const d = el(
          'details',
          { id: reportId(m.version), open: open.has(m.version), 'data-version': m.version },
          el('summary', {}, el('span', { class: 'mono', text: m.version }), ' ', el('span', { class: `badge ${m.status}`, text: m.status })),
          el(
            'div',
            { class: 'figures' },
            byFigure(m.report).map((r) =>
              el(
                'figure',
                {},
                el(
                  'a',
                  { href: r.url, target: '_blank', rel: 'noopener', 'aria-label': `${figureName(r.name)} of ${m.version}, full size` },
                  el('img', {
                    src: r.url,
                    alt: `${figureName(r.name)} of model ${m.version} (out-of-fold cross-validation scores)`,
                    loading: 'lazy',
                    decoding: 'async',
                    'data-name': r.name,
                    onerror: (e) => e.target.replaceWith(el('p', { class: 'error', text: `${r.name} could not be loaded.` })),
                  }),
                ),
                el('figcaption', { text: figureName(r.name) }),
              ),
            ),
          ),
        );
        d.addEventListener('toggle', () => (d.open ? open.add(m.version) : open.delete(m.version)));
        return d;
      }),
    );
  }

  async function load() {
    try {
      const { models } = await api.get('/console/api/models');
      if (!models.length) {
        list.replaceChildren(el('p', { class: 'muted', text: 'No model published yet: `cartpulse models publish DIR`.' }));
        return;
      }
      list.replaceChildren(
        el('div', { class: 'scroll' }, table(
          [
            ['Version', (m) => el('span', { class: 'mono', text: m.version })],
            ['Status', (m) => el('span', { class: `badge ${m.status}`, text: m.status })],
            ['Traffic', (m) => (m.status === 'active' ? share(m.traffic_share) : '—')],
            ['Accuracy', (m) => (m.metrics?.accuracy === undefined ? '—' : fmt(m.metrics.accuracy, 4))],
            ['AUC', (m) => (m.metrics?.auc === undefined ? '—' : fmt(m.metrics.auc, 4))],
            ['F1', (m) => (m.metrics?.f1 === undefined ? '—' : fmt(m.metrics.f1, 4))],
            ['Folds', (m) => m.metrics?.folds ?? '—'],
            ['Published', (m) => time(m.published_at)],
            ['Report', (m) => reportButton(m)],
            ['Promote', (m) => promoteControls(m)],
            ['Shadow', (m) => shadowControls(m)],
          ],
          models,
          'Published models, newest first',
        )),
      );
      renderReports(models);
      liveCharts.forEach((c) => c.destroy());
      liveCharts = [];
      try {
        liveCharts = await renderLive(live, models);
      } catch (e) {
        live.replaceChildren(el('p', { class: 'error', text: `Cannot read the live evaluation: ${e.message}` }));
      }
    } catch (e) {
      message(status, `Cannot list models: ${e.message}`, 'error');
    }
  }
  load();
  return {
    root,
    destroy() {
      liveCharts.forEach((c) => c.destroy());
    },
  };
}
