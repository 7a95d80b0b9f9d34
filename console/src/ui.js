// Small DOM helpers. Text always goes in as text (never as HTML), so data
// from the API cannot inject markup.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, '');
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function fmt(v, digits = 2) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return v.toLocaleString('en-US');
    return v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function pct(v) {
  return v === null || v === undefined ? '—' : `${(v * 100).toFixed(1)} %`;
}

export function time(t) {
  if (!t) return '—';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace('T', ' ').slice(0, 19);
}

/// A key/value table from an object.
export function kvTable(obj, caption) {
  const rows = Object.entries(obj || {}).map(([k, v]) => el('tr', {}, el('th', { scope: 'row', text: k }), el('td', { text: fmt(v, 4) })));
  return el('table', { class: 'kv' }, caption ? el('caption', { text: caption }) : null, el('tbody', {}, rows));
}

/// A table with a header row; `cols` are [label, row => value or Node].
export function table(cols, rows, caption) {
  return el(
    'table',
    {},
    caption ? el('caption', { text: caption }) : null,
    el('thead', {}, el('tr', {}, cols.map(([label]) => el('th', { scope: 'col', text: label })))),
    el(
      'tbody',
      {},
      rows.map((r) =>
        el(
          'tr',
          {},
          cols.map(([, f]) => {
            const v = f(r);
            return el('td', {}, v instanceof Node ? v : fmt(v, 4));
          }),
        ),
      ),
    ),
  );
}

const dialog = () => document.getElementById('confirm');

/// Asks for confirmation in a modal dialog (keyboard: Esc cancels, focus starts on Cancel).
export function confirmDialog(title, text) {
  const d = dialog();
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  d.returnValue = '';
  d.showModal();
  document.getElementById('confirm-cancel').focus();
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
  });
}

export function message(node, text, kind = 'info') {
  node.textContent = text;
  node.className = `msg ${kind}`;
}
