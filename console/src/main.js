// The console's shell: login, the page router (hash routes, so the server
// serves one HTML file), the shared live-stream connection and its status
// indicator.

import './style.css';
import { api, setCsrf, ApiError } from './api.js';
import { Stream } from './stream.js';

// Pages (and Chart.js with them) load after login, so the login screen's
// first load is the small shell only.
const PAGES = {
  live: () => import('./pages/live.js').then((m) => m.livePage),
  customers: () => import('./pages/customers.js').then((m) => m.customersPage),
  segments: () => import('./pages/segments.js').then((m) => m.segmentsPage),
  models: () => import('./pages/models.js').then((m) => m.modelsPage),
  system: () => import('./pages/system.js').then((m) => m.systemPage),
  api: () => import('./pages/reference.js').then((m) => m.referencePage),
};
let routing = 0;

const $ = (id) => document.getElementById(id);
const ctx = { me: null, stream: null, isAdmin: () => ctx.me?.role === 'admin' };
let page = null;

function setConn(state, text) {
  const c = $('conn');
  c.dataset.state = state;
  $('conn-text').textContent = text;
}

function showLogin(msg) {
  ctx.me = null;
  if (ctx.stream) ctx.stream.stop();
  ctx.stream = null;
  if (page) page.destroy();
  page = null;
  $('page').replaceChildren();
  $('top').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = msg || '';
  $('login-name').focus();
}

function startSession(me) {
  ctx.me = me;
  setCsrf(me.csrf_token);
  $('login').hidden = true;
  $('top').hidden = false;
  $('who').textContent = `${me.name} · ${me.role}`;
  document.body.dataset.role = me.role;
  ctx.stream = new Stream({ onStatus: setConn, onAuthLost: () => showLogin('Your session ended; log in again.') });
  window.__cartpulse = { stream: ctx.stream };
  ctx.stream.connect();
  route();
}

async function route() {
  if (!ctx.me) return;
  const [, name = 'live', param] = location.hash.match(/^#\/([a-z]+)(?:\/(.+))?$/) || [];
  const turn = ++routing;
  const make = await (PAGES[name] || PAGES.live)();
  // A later navigation (or a logout) won while this page's code was loading.
  if (turn !== routing || !ctx.me) return;
  if (page) page.destroy();
  page = make(ctx, param);
  $('page').replaceChildren(page.root);
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === (PAGES[name] ? name : 'live')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${page.root.querySelector('h1')?.textContent || 'cartpulse'} · cartpulse console`;
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('login-name').value.trim();
  const password = $('login-password').value;
  if (!name || !password) {
    $('login-error').textContent = 'Enter your name and password.';
    return;
  }
  $('login-submit').disabled = true;
  try {
    const me = await api.post('/console/login', { name, password });
    $('login-password').value = '';
    startSession(me);
  } catch (err) {
    $('login-error').textContent =
      err instanceof ApiError && err.status === 429 ? 'Too many failed attempts; wait a minute.' : err.message;
  } finally {
    $('login-submit').disabled = false;
  }
});

$('logout').addEventListener('click', async () => {
  try {
    await api.post('/console/logout');
  } catch {
    // Logged out either way: the cookie is gone or the session already was.
  }
  ctx.me = null;
  setCsrf(null);
  showLogin('Logged out.');
});

window.addEventListener('hashchange', route);

(async () => {
  try {
    startSession(await api.get('/console/me'));
  } catch {
    showLogin();
  }
})();
