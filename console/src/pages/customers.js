// Customers: look one up by id; profile features, segment, open session and
// recent sessions with their scores. While shown, the `customer:{id}` topic
// triggers a (throttled) re-read, so the page follows the customer live.

import { api } from '../api.js';
import { el, fmt, kvTable, table, time, message } from '../ui.js';

export function customersPage(ctx, param) {
  const input = el('input', { id: 'customer-id', name: 'customer', autocomplete: 'off', placeholder: 'e.g. osi-c1', required: true, spellcheck: 'false' });
  const status = el('p', { id: 'customer-status', class: 'msg', role: 'status', 'aria-live': 'polite' });
  const out = el('div', { id: 'customer-view' });
  const form = el(
    'form',
    { class: 'inline', role: 'search', 'aria-label': 'Customer lookup' },
    el('label', { for: 'customer-id', text: 'Customer id' }),
    input,
    el('button', { type: 'submit', id: 'customer-lookup', text: 'Look up' }),
  );
  const root = el('section', { 'aria-labelledby': 'cust-title' }, el('h1', { id: 'cust-title', text: 'Customers' }), form, status, out);

  let current = null;
  let unsub = null;
  let pending = null;
  let lastLoad = 0;
  let liveUpdates = 0;

  async function load(id, quiet) {
    lastLoad = Date.now();
    try {
      const c = await api.get(`/v1/customers/${encodeURIComponent(id)}`);
      if (id !== current) return;
      render(c);
      if (!quiet) message(status, `Showing ${id}; following live updates.`);
    } catch (e) {
      if (id !== current) return;
      out.replaceChildren();
      message(status, e.status === 404 ? `No customer ${id}.` : `Lookup failed: ${e.message}`, 'error');
    }
  }

  function follow(id) {
    if (unsub) unsub();
    liveUpdates = 0;
    unsub = ctx.stream.on(`customer:${id}`, () => {
      liveUpdates += 1;
      // At most one re-read a second however fast the customer's events come.
      if (pending) return;
      const wait = Math.max(0, 1000 - (Date.now() - lastLoad));
      pending = setTimeout(() => {
        pending = null;
        load(id, true);
      }, wait);
    });
  }

  function sessionCols() {
    return [
      ['Session', (s) => el('span', { class: 'mono', text: s.session_id })],
      ['Status', (s) => s.status],
      ['Started', (s) => time(s.started_at)],
      ['Events', (s) => s.n_events],
      ['Purchased', (s) => (s.purchased ? 'yes' : 'no')],
      ['Intent', (s) => (s.score === null || s.score === undefined ? '—' : Number(s.score).toFixed(3))],
      ['Model', (s) => s.model_version ?? '—'],
      ['Closed by', (s) => s.close_reason ?? '—'],
    ];
  }

  function render(c) {
    const seg = c.segment;
    const open = c.open_session;
    out.replaceChildren(
      el(
        'div',
        { class: 'tiles' },
        el('div', { class: 'tile' }, el('span', { class: 'label', text: 'Customer' }), el('output', { class: 'value small', id: 'customer-shown', text: c.customer_id })),
        el('div', { class: 'tile' }, el('span', { class: 'label', text: 'Segment' }), el('output', { class: 'value small', text: seg ? `${seg.name ?? seg.segment} (v${seg.version ?? '?'})` : '—' })),
        el('div', { class: 'tile' }, el('span', { class: 'label', text: 'First seen' }), el('output', { class: 'value small', text: time(c.first_seen) })),
        el('div', { class: 'tile' }, el('span', { class: 'label', text: 'Last seen' }), el('output', { class: 'value small', text: time(c.last_seen) })),
        el('div', { class: 'tile' }, el('span', { class: 'label', text: 'Live updates' }), el('output', { class: 'value small', id: 'customer-live', text: fmt(liveUpdates) })),
      ),
      el(
        'div',
        { class: 'grid2' },
        el('section', { 'aria-labelledby': 'open-title' },
          el('h2', { id: 'open-title', text: 'Open session' }),
          open ? table(sessionCols(), [open]) : el('p', { class: 'muted', text: 'No open session.' }),
          open ? kvTable(open.features, 'Session features (UCI columns)') : null),
        el('section', { 'aria-labelledby': 'profile-title' }, el('h2', { id: 'profile-title', text: 'Profile features' }), kvTable(c.profile)),
      ),
      el('section', { 'aria-labelledby': 'recent-title' },
        el('h2', { id: 'recent-title', text: 'Recent sessions' }),
        c.recent_sessions?.length ? el('div', { class: 'scroll' }, table(sessionCols(), c.recent_sessions)) : el('p', { class: 'muted', text: 'None yet.' })),
    );
  }

  function lookup(id) {
    id = id.trim();
    if (!id) {
      message(status, 'Enter a customer id.', 'error');
      input.focus();
      return;
    }
    current = id;
    input.value = id;
    message(status, `Looking up ${id}…`);
    follow(id);
    load(id, false);
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = input.value.trim();
    // The id goes into the URL so a lookup can be bookmarked and shared.
    if (location.hash !== `#/customers/${encodeURIComponent(id)}`) location.hash = `#/customers/${encodeURIComponent(id)}`;
    else lookup(id);
  });
  if (param) lookup(decodeURIComponent(param));
  else queueMicrotask(() => input.focus());

  return {
    root,
    destroy() {
      if (unsub) unsub();
      clearTimeout(pending);
    },
  };
}
