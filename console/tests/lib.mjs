// Shared by the end-to-end tests and the perf script: the environment that
// scripts/e2e.sh sets up, browser launch, login, replay.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through scripts/e2e.sh`);
  return v;
};

export const RESULTS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'test-results');
mkdirSync(RESULTS, { recursive: true });

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Root in CI has no user namespaces for the sandbox.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--enable-precise-memory-info'],
  });
}

/// A new page at 1280×800 (or `viewport`), collecting console errors and CSP violations.
export async function newPage(browser, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(m.text());
  });
  page.on('pageerror', (e) => page.problems.push(String(e)));
  return { context, page };
}

export async function login(page, name, password) {
  await page.goto(env('E2E_BASE') + '/');
  await page.getByLabel('Name').fill(name);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#who').filter({ hasText: name }).waitFor({ timeout: 10_000 });
}

export function screenshot(page, name) {
  return page.screenshot({ path: path.join(RESULTS, `${name}.png`), fullPage: false });
}

/// Starts `cartpulse replay` against the server; resolves its exit code via `.done`.
export function replay({ rate, rows, synthetic } = {}) {
  const args = ['replay', '--target', env('E2E_BASE'), '--quiet', '--batch-size', '200'];
  if (synthetic || !process.env.E2E_DATA) args.push('--synthetic', String(synthetic || rows || 500));
  else args.push('--format', 'shoppers', '--file', process.env.E2E_DATA);
  if (rate) args.push('--rate', String(rate));
  const child = spawn(env('E2E_BIN'), args, {
    env: { ...process.env, CARTPULSE_API_KEY: env('E2E_INGEST_KEY') },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.done = new Promise((resolve) => child.on('exit', (code) => resolve({ code, out })));
  return child;
}

/// The id of the first replayed customer.
export const firstCustomer = () => (process.env.E2E_DATA ? 'osi-c1' : 'syn-c1');
