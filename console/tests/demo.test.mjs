// The living demo in real headless Chromium: `cartpulse demo` started by
// scripts/demo-e2e.sh feeds itself history, fits and activates a
// segmentation, then live traffic. About a minute after start the Live
// page's tiles are non-zero and changing, high-intent sessions come up, and
// the Segments and Models pages have content. A screenshot of every page
// goes to console/test-results/demo-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { env, launch, newPage, login, screenshot } from './lib.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const number = (text) => Number(String(text).replace(/[^0-9.\-]/g, ''));

test('the demo is alive: moving KPIs, high-intent sessions, segments and a model', async () => {
  const { context, page } = await newPage(browser);
  try {
    await login(page, 'admin', env('E2E_ADMIN_PASSWORD'));
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 15_000 });

    // Live: the tiles move with the demo's own traffic, orders included.
    const events = new Set();
    let orders = 0;
    let active = 0;
    let intent = NaN;
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline && (events.size < 3 || !(orders > 0) || !(active > 0) || Number.isNaN(intent))) {
      const v = number(await page.locator('#kpi-events_per_s').textContent());
      if (v > 0) events.add(v);
      orders = Math.max(orders, number(await page.locator('#kpi-orders_per_min').textContent()) || 0);
      active = number(await page.locator('#kpi-active_sessions').textContent()) || 0;
      const i = (await page.locator('#kpi-mean_intent').textContent()).trim();
      intent = i === '—' ? NaN : Number(i);
      await page.waitForTimeout(1000);
    }
    await screenshot(page, 'demo-live');
    assert.ok(events.size >= 3, `events/s showed ${[...events].join(', ') || 'nothing'} (expected 3 different non-zero values)`);
    assert.ok(orders > 0, 'orders per minute stayed 0: the retail orders never arrived');
    assert.ok(active > 0, 'no active session: the live visits never started');
    assert.ok(!Number.isNaN(intent), 'mean intent stayed empty: no open session was scored');
    await page.locator('#scores-feed li').first().waitFor({ timeout: 60_000 });
    await screenshot(page, 'demo-live-feed');

    // Segments: the demo's segmentation is active, with named segments
    // (it is fitted once the history is in: look again until it is there).
    const until = Date.now() + 120_000;
    for (;;) {
      await page.getByRole('link', { name: 'Segments' }).click();
      const active = page.locator('#segments-list td').filter({ hasText: /^yes$/ });
      if (await active.first().waitFor({ timeout: 3_000 }).then(() => true, () => false)) break;
      assert.ok(Date.now() < until, `no active segmentation after 2 minutes: ${await page.locator('#segments-list').textContent()}`);
      await page.getByRole('link', { name: 'Live' }).click();
      await page.waitForTimeout(2_000);
    }
    await page.locator('#segments-list button.link').first().click();
    await page.locator('#segment-detail h2').filter({ hasText: '(active)' }).waitFor({ timeout: 10_000 });
    assert.ok((await page.locator('#segment-detail tbody tr').count()) >= 2, 'at least two segments');
    await screenshot(page, 'demo-segments');

    // Models: the demo's model is active.
    await page.getByRole('link', { name: 'Models' }).click();
    await page.locator('#models-list table').first().waitFor({ timeout: 15_000 });
    assert.match(await page.locator('#models-list').textContent(), /active/i);
    await screenshot(page, 'demo-models');

    // Customers and System render with the demo's data.
    await page.getByRole('link', { name: 'Customers' }).click();
    await page.getByLabel('Customer id').fill(env('E2E_CUSTOMER'));
    await page.getByRole('button', { name: 'Look up' }).click();
    await page.locator('#customer-shown').filter({ hasText: env('E2E_CUSTOMER') }).waitFor({ timeout: 15_000 });
    await screenshot(page, 'demo-customers');
    await page.getByRole('link', { name: 'System' }).click();
    await page.locator('#metrics-table tbody tr').first().waitFor({ timeout: 15_000 });
    await screenshot(page, 'demo-system');
  } finally {
    await context.close();
  }
});
