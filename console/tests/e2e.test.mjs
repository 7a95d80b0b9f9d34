// End-to-end tests of the admin console in real headless Chromium, against a
// real `cartpulse serve` that scripts/e2e.sh starts (temp SQLite database,
// a trained model active and a second one published). Every test leaves a
// screenshot in console/test-results/. Nothing is skipped: a missing live
// stream fails the Live test loudly.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { env, launch, newPage, login, screenshot, replay, firstCustomer } from './lib.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const ADMIN = () => [env('E2E_ADMIN_NAME'), env('E2E_ADMIN_PASSWORD')];
const VIEWER = () => [env('E2E_VIEWER_NAME'), env('E2E_VIEWER_PASSWORD')];

const noProblems = (page) =>
  assert.deepEqual(page.problems.filter((p) => /Content Security Policy|Refused to|Uncaught/i.test(p)), [], 'no CSP violations or script errors');

test('log in (wrong password refused, then admin gets in)', async () => {
  const { context, page } = await newPage(browser);
  try {
    await page.goto(env('E2E_BASE') + '/');
    // Keyboard: the name field has focus on load and Tab walks the form in order.
    await page.getByLabel('Name').waitFor();
    const focused = () => page.evaluate(() => document.activeElement?.id);
    assert.equal(await focused(), 'login-name');
    await page.keyboard.press('Tab');
    assert.equal(await focused(), 'login-password');
    await page.keyboard.press('Tab');
    assert.equal(await focused(), 'login-submit');
    await page.getByLabel('Name').fill(ADMIN()[0]);
    await page.getByLabel('Password').fill('definitely wrong');
    await page.keyboard.press('Enter');
    await page.locator('#login-error').filter({ hasText: 'wrong name or password' }).waitFor();
    await screenshot(page, '01a-login-refused');
    await page.getByLabel('Password').fill(ADMIN()[1]);
    await page.keyboard.press('Enter');
    await page.locator('#who').filter({ hasText: 'admin' }).waitFor();
    assert.equal(await page.locator('#login').isHidden(), true);
    // The session cookie is invisible to scripts (HttpOnly).
    assert.equal(await page.evaluate(() => document.cookie.includes('cartpulse_console')), false);
    await screenshot(page, '01b-logged-in');
    noProblems(page);
  } finally {
    await context.close();
  }
});

test('Live: KPI tiles change while a replay runs', async () => {
  const { context, page } = await newPage(browser);
  // Every WebSocket the console opens, with the first frame it sends: the
  // token goes in that frame, never in the URL (load balancer access logs
  // keep query strings).
  const sockets = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), first: null };
    sockets.push(s);
    ws.on('framesent', (f) => {
      if (s.first === null) s.first = String(f.payload);
    });
  });
  const feed = replay({ rate: 1500, rows: 600 });
  try {
    await login(page, ...ADMIN());
    // The stream must connect: if /v1/stream is missing this fails here, loudly.
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 15_000 }).catch(async () => {
      await screenshot(page, '02-live-FAILED');
      throw new Error(`the live stream did not connect: indicator says "${await page.locator('#conn-text').textContent()}"`);
    });
    const seen = new Set();
    const deadline = Date.now() + 40_000;
    while (Date.now() < deadline && seen.size < 3) {
      const v = await page.locator('#kpi-events_per_s').textContent();
      if (v !== '—' && Number(v.replace(/,/g, '')) > 0) seen.add(v);
      await page.waitForTimeout(500);
    }
    assert.ok(seen.size >= 3, `events/s tile showed ${[...seen].join(', ') || 'nothing'} (expected 3 different non-zero values)`);
    const updates = Number(await page.locator('section[data-updates]').getAttribute('data-updates'));
    assert.ok(updates >= 3, `only ${updates} kpis updates reached the page`);
    await screenshot(page, '02-live');
    const { code } = await feed.done;
    assert.equal(code, 0, 'the replay finished cleanly');
    const stats = await page.evaluate(() => window.__cartpulse.stream.stats);
    assert.equal(stats.dropped, 0, `dropped updates: ${JSON.stringify(stats)}`);
    const streams = sockets.filter((s) => new URL(s.url).pathname === '/v1/stream');
    assert.ok(streams.length >= 1, `no /v1/stream WebSocket seen: ${JSON.stringify(sockets.map((s) => s.url))}`);
    for (const s of streams) {
      assert.equal(new URL(s.url).search, '', `the stream URL carries a query string: ${s.url}`);
      assert.doesNotMatch(s.url, /token=/, `the stream URL carries the token: ${s.url}`);
      assert.ok(s.first, `nothing was sent on ${s.url}`);
      const first = JSON.parse(s.first);
      assert.equal(first.type, 'auth', `the first frame is the auth message: ${s.first}`);
      assert.ok(typeof first.token === 'string' && first.token.length > 0, 'the auth message carries the token');
    }
    noProblems(page);
  } finally {
    feed.kill();
    await context.close();
  }
});

test('Stream: a 4001 close gets a fresh token and reconnects; once the session is gone, the login screen', async () => {
  const { context, page } = await newPage(browser);
  // The console's WebSockets go through a route that forwards everything to
  // the real server, so the test can close the page's side with 4001 the way
  // the server does when the credential is revoked or the session ends.
  const routes = [];
  await page.routeWebSocket(/\/v1\/stream$/, (ws) => {
    routes.push({ ws, server: ws.connectToServer() });
  });
  let tokens = 0;
  page.on('request', (r) => {
    if (r.method() === 'POST' && new URL(r.url()).pathname === '/v1/stream/token') tokens += 1;
  });
  const close4001 = async ({ ws, server }) => {
    await ws.close({ code: 4001, reason: 'credential revoked' });
    await server.close().catch(() => {});
  };
  const updates = async () => Number(await page.locator('section[data-updates]').getAttribute('data-updates'));
  try {
    await login(page, ...ADMIN());
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 15_000 });
    await page.locator('section[data-updates]').waitFor({ timeout: 15_000 });
    assert.equal(routes.length, 1, 'one stream connection');
    assert.equal(tokens, 1, 'one token for it');

    // Revoked: a fresh token, a new connection, and live data again.
    await close4001(routes[0]);
    await page.waitForFunction(() => window.__cartpulse.stream.stats.reconnects >= 1, null, { timeout: 5_000 });
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 15_000 });
    assert.equal(routes.length, 2, 'reconnected once');
    assert.equal(tokens, 2, 'with a fresh token');
    const before = await updates();
    await page.waitForFunction(
      (n) => Number(document.querySelector('section[data-updates]')?.dataset.updates) > n,
      before,
      { timeout: 10_000 },
    );
    assert.equal(await page.locator('#login').isHidden(), true, 'still logged in');
    await screenshot(page, '02b-stream-reconnected');

    // The session ends (logged out elsewhere): the next 4001 leads to a token
    // request that answers 401, and so to the login screen, not a retry loop.
    const me = await context.request.get(env('E2E_BASE') + '/console/me');
    assert.equal(me.status(), 200);
    const out = await context.request.post(env('E2E_BASE') + '/console/logout', {
      headers: { 'X-CSRF-Token': (await me.json()).csrf_token },
    });
    assert.ok(out.ok(), `logout: ${out.status()}`);
    await close4001(routes[1]);
    await page.locator('#login').waitFor({ state: 'visible', timeout: 10_000 });
    await page.locator('#login-error').filter({ hasText: 'session ended' }).waitFor();
    assert.equal(tokens, 3, 'one token request, refused');
    await page.waitForTimeout(2_000);
    assert.equal(tokens, 3, 'no retries after the refusal');
    assert.equal(routes.length, 2, 'no new connection after the refusal');
    await screenshot(page, '02c-stream-session-ended');
    noProblems(page);
  } finally {
    await context.close();
  }
});

test('Customers: look up a replayed customer', async () => {
  const { context, page } = await newPage(browser);
  try {
    await login(page, ...ADMIN());
    await page.getByRole('link', { name: 'Customers' }).click();
    const id = firstCustomer();
    await page.getByLabel('Customer id').fill(id);
    await page.getByRole('button', { name: 'Look up' }).click();
    await page.locator('#customer-shown').filter({ hasText: id }).waitFor({ timeout: 10_000 });
    const text = await page.locator('#customer-view').textContent();
    assert.match(text, /Profile features/);
    assert.match(text, /Recent sessions/);
    // Its replayed session is listed (open or closed).
    assert.match(text, new RegExp(id.replace('-c', '-s')));
    // Live: an event for this customer reaches the open page through `customer:{id}`.
    const session = `e2e-live-${Date.now()}`;
    const r = await fetch(`${env('E2E_BASE')}/v1/events`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${env('E2E_INGEST_KEY')}`, 'Content-Type': 'application/json' },
      body: JSON.stringify([{ type: 'page_view', event_id: `${session}-1`, customer_id: id, session_id: session,
        time: new Date().toISOString(), page_kind: 'product', duration_s: 12, bounce_rate: 0.01, exit_rate: 0.02, page_value: 3 }]),
    });
    assert.equal(r.status, 200, `ingest: ${await r.text()}`);
    await page.locator('#customer-view').filter({ hasText: session }).waitFor({ timeout: 10_000 });
    assert.ok(Number(await page.locator('#customer-live').textContent()) >= 1, 'the update came over the stream');
    await screenshot(page, '03-customer');
    // An unknown id is reported, not shown as an empty page.
    await page.getByLabel('Customer id').fill('nobody-here');
    await page.getByRole('button', { name: 'Look up' }).click();
    await page.locator('#customer-status').filter({ hasText: 'No customer nobody-here' }).waitFor();
    noProblems(page);
  } finally {
    await context.close();
  }
});

test('Models: an admin promotes a model with an A/B share, after confirming', async () => {
  const { context, page } = await newPage(browser);
  try {
    await login(page, ...ADMIN());
    await page.getByRole('link', { name: 'Models' }).click();
    const version = env('E2E_MODEL_B');
    const promote = page.getByRole('button', { name: `Promote ${version}` });
    await promote.waitFor();
    await page.locator(`#traffic-${version}`).fill('30');
    await promote.click();
    // Cancelling changes nothing.
    await page.locator('#confirm').waitFor();
    await page.keyboard.press('Escape');
    await page.waitForTimeout(300);
    assert.equal(await page.locator('#models-status').textContent(), '');
    await promote.click();
    await screenshot(page, '04a-models-confirm');
    await page.locator('#confirm-ok').click();
    await page.locator('#models-status').filter({ hasText: `Promoted ${version}` }).waitFor();
    const row = page.locator('tr', { hasText: version });
    await row.filter({ hasText: '30 %' }).waitFor();
    assert.match(await row.textContent(), /active/);
    await screenshot(page, '04b-models-promoted');
    // Two versions active: the A/B analysis names both; the live section
    // shows the evaluation of the version that scored the replayed sessions,
    // with its charts, and the counts the API gives.
    const verdict = page.locator('#models-ab-verdict');
    await verdict.waitFor();
    const modelA = env('E2E_MODEL_A');
    const compare = await page.evaluate(async () => (await fetch('/v1/models/compare')).json());
    assert.equal(await verdict.textContent(), compare.verdict);
    assert.deepEqual([compare.a.version, compare.b.version].sort(), [modelA, version].sort());
    const evaluation = await page.evaluate(async (v) => (await fetch(`/v1/models/${v}/evaluation`)).json(), modelA);
    assert.ok(evaluation.overall.sessions > 0, 'the replayed sessions were scored at close by the first model');
    const figuresA = page.locator(`.live-version[data-version="${modelA}"] .figures-line`);
    assert.equal(await figuresA.getAttribute('data-sessions'), String(evaluation.overall.sessions));
    await page.locator(`.live-version[data-version="${modelA}"] canvas[aria-label="Reliability diagram of ${modelA}"]`).waitFor();
    await page.locator(`.live-version[data-version="${modelA}"] canvas[aria-label="AUC per day of ${modelA}"]`).waitFor();
    // Open-session scores by age: one row per age, its session count the evaluation's.
    const ageRows = page.locator(`.live-version[data-version="${modelA}"] table[id^="by-age-"] tbody tr`);
    assert.equal(await ageRows.count(), evaluation.by_age.length);
    assert.deepEqual(await ageRows.evaluateAll((rs) => rs.map((r) => Number(r.dataset.pages))), [1, 3, 5, 10]);
    const firstAgeSessions = await ageRows.first().locator('td').nth(1).textContent();
    assert.equal(firstAgeSessions, evaluation.by_age[0].sessions.toLocaleString('en-US'));
    await page.locator('#models-live').scrollIntoViewIfNeeded();
    await screenshot(page, '04d-models-live');
    // The report images published with the version are shown (same origin, alt text).
    await row.getByRole('button', { name: `Show the report images of ${version}` }).click();
    const report = page.locator(`details[data-version="${version}"]`);
    assert.equal(await report.getAttribute('open'), '', 'the button opens the report');
    const roc = report.getByRole('img', { name: `ROC curve of model ${version}` });
    await roc.scrollIntoViewIfNeeded();
    await page.waitForFunction(
      (v) => [...document.querySelectorAll(`details[data-version="${v}"] img`)].every((i) => i.complete && i.naturalWidth > 0),
      version,
      { timeout: 10_000 },
    );
    const imgs = await report.locator('img').evaluateAll((list) =>
      list.map((i) => ({ src: new URL(i.src).pathname, origin: new URL(i.src).origin, alt: i.alt, w: i.naturalWidth, h: i.naturalHeight })),
    );
    assert.deepEqual(imgs.map((i) => i.src).sort(), ['calibration', 'confusion', 'roc'].map((n) => `/v1/models/${version}/report/${n}.png`));
    for (const i of imgs) {
      assert.equal(i.origin, env('E2E_BASE'), 'same origin');
      assert.ok(i.alt.length > 10 && i.w > 100 && i.h > 100, `displayed with alt text: ${JSON.stringify(i)}`);
    }
    await screenshot(page, '04c-models-report');
    noProblems(page);
  } finally {
    await context.close();
  }
});

test('Models: a viewer sees the registry and is refused the same change', async () => {
  const { context, page } = await newPage(browser);
  try {
    await login(page, ...VIEWER());
    await page.getByRole('link', { name: 'Models' }).click();
    await page.locator('#models-readonly').waitFor();
    const version = env('E2E_MODEL_B');
    const promote = page.getByRole('button', { name: `Promote ${version}` });
    await promote.waitFor();
    assert.equal(await promote.isDisabled(), true, 'the button is disabled for viewers');
    // The server enforces it: the same request the admin's page sent, with the viewer's cookie and CSRF token.
    const refused = await page.evaluate(async (v) => {
      const me = await (await fetch('/console/me')).json();
      const r = await fetch(`/v1/models/${v}/promote`, {
        method: 'POST',
        headers: { 'X-CSRF-Token': me.csrf_token, 'Content-Type': 'application/json' },
        body: JSON.stringify({ traffic: 0.5 }),
      });
      const r2 = await fetch('/v1/models/rollback', { method: 'POST', headers: { 'X-CSRF-Token': me.csrf_token } });
      return [r.status, r2.status, (await r.json()).error];
    }, version);
    assert.equal(refused[0], 403, `promote as viewer: ${refused}`);
    assert.equal(refused[1], 403, `rollback as viewer: ${refused}`);
    await screenshot(page, '05-viewer-refused');
    noProblems(page);
  } finally {
    await context.close();
  }
});

test('System: the single replica (role all) and the database tile', async () => {
  const { context, page } = await newPage(browser);
  try {
    await login(page, ...VIEWER());
    await page.getByRole('link', { name: 'System' }).click();
    const replicas = page.getByRole('table', { name: /live replica/ });
    await replicas.locator('tbody tr').first().waitFor();
    const rows = await replicas.locator('tbody tr').all();
    assert.equal(rows.length, 1, 'one replica: this process');
    const cells = await rows[0].locator('th, td').allTextContents();
    assert.equal(cells[1], 'all', `role: ${cells}`);
    assert.match(cells[0], /this one/);
    assert.equal(cells[2], new URL(env('E2E_BASE')).host, `address: ${cells}`);
    await page.locator('#sys-database').filter({ hasText: /^ok$/ }).waitFor();
    assert.equal(await page.getByRole('status', { name: 'Database' }).textContent(), 'ok', 'the tile is named by its label');
    assert.equal(await page.locator('#sys-redis').textContent(), 'not used');
    assert.equal(await page.locator('#sys-store').textContent(), 'ok');
    assert.equal(await page.locator('#sys-ingest-mode').textContent(), 'direct');
    assert.equal(await page.locator('#sys-dead').textContent(), 'none');
    await page.locator('#metrics-table tbody tr').first().waitFor();
    // Keyboard: the replica table's scroll region is reachable with Tab.
    await page.locator('#sys-title').click();
    let reached = false;
    for (let i = 0; i < 40 && !reached; i++) {
      await page.keyboard.press('Tab');
      reached = await page.evaluate(() => document.activeElement?.id === 'sys-replicas');
    }
    assert.ok(reached, 'Tab reaches the replicas table');
    await screenshot(page, '06-system');
    noProblems(page);
  } finally {
    await context.close();
  }
});

test('Segments and System pages render; phone width has no sideways scroll', async () => {
  const { context, page } = await newPage(browser, { width: 390, height: 844 });
  try {
    await login(page, ...VIEWER());
    await page.getByRole('link', { name: 'System' }).click();
    await page.locator('#sys-ready').filter({ hasText: 'ready' }).waitFor();
    await page.locator('#sys-database').filter({ hasText: 'ok' }).waitFor();
    await page.locator('#replicas-table tbody tr').first().waitFor();
    await page.locator('#metrics-table tbody tr').first().waitFor();
    const sysOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(sysOverflow <= 1, `System page is ${sysOverflow}px wider than the phone screen`);
    await screenshot(page, '06a-system-phone');
    await page.getByRole('link', { name: 'Segments' }).click();
    await page.locator('#segments-list').locator('p, table').first().waitFor();
    await screenshot(page, '06b-segments-phone');
    await page.getByRole('link', { name: 'Live' }).click();
    await page.locator('#kpi-events_per_s').waitFor();
    await page.waitForTimeout(1500);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `page is ${overflow}px wider than the phone screen`);
    await screenshot(page, '06c-live-phone');
    noProblems(page);
  } finally {
    await context.close();
  }
});

test('API reference: the contract rendered by Swagger UI under the console CSP', async () => {
  const { context, page } = await newPage(browser);
  // Violations as the page sees them (console messages are checked too).
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective}: ${e.blockedURI}`));
  });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  try {
    await login(page, ...VIEWER());
    await page.getByRole('link', { name: 'API', exact: true }).click();
    await page.locator('#reference-title').waitFor();
    // Operations of the contract, listed with their method and path.
    const events = page.locator('#reference .opblock').filter({ has: page.locator('.opblock-summary-path', { hasText: /^\/v1\/events$/ }) });
    await events.first().waitFor({ timeout: 20_000 });
    assert.match(await events.first().locator('.opblock-summary-method').textContent(), /POST/);
    await page.locator('#reference .opblock-summary-path', { hasText: '/v1/customers/{id}' }).first().waitFor();
    // Opening one renders its responses (schemas included) under the same CSP.
    await events.first().locator('.opblock-summary').first().click();
    await events.first().locator('.responses-table').first().waitFor();
    assert.match(await events.first().textContent(), /415/);
    // Everything came from this server: no CDN, no validator badge.
    const origin = new URL(env('E2E_BASE')).origin;
    assert.deepEqual(requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:')), [], 'requests elsewhere');
    const csp = (await page.request.get(origin + '/')).headers()['content-security-policy'];
    assert.match(csp, /style-src 'self'/);
    assert.doesNotMatch(csp, /unsafe/);
    assert.deepEqual(await page.evaluate(() => window.__csp), [], 'CSP violations');
    await screenshot(page, '07-api-reference');
    noProblems(page);
  } finally {
    await context.close();
  }
});
