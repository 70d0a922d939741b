// Shared helpers of the browser tests: launch Debian's chromium headless through playwright-core,
// take screenshots at a phone and a desktop size, fail on console errors (a CSP violation shows
// up there), and small assertions. Each test script is run by a Rust test (tests/src/browser.rs)
// as `node tests/browser/<script>.mjs SERVER_URL ARTIFACT_DIR [ARGS...]` and exits non-zero on
// failure.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1366, height: 900 };

/** The arguments: { url, artifacts, rest }. */
export function args() {
  const [url, artifacts, ...rest] = process.argv.slice(2);
  if (!url || !artifacts) {
    console.error('usage: node SCRIPT.mjs SERVER_URL ARTIFACT_DIR [ARGS...]');
    process.exit(2);
  }
  mkdirSync(artifacts, { recursive: true });
  return { url: url.replace(/\/$/, ''), artifacts, rest };
}

/** Launches chromium (Debian's /usr/bin/chromium unless HATTAMA_CHROMIUM says otherwise). */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.HATTAMA_CHROMIUM || '/usr/bin/chromium',
    // Without the background-networking flags Chromium stalls on a closed network.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A new browser context (its own cookies) at phone size, with `locale` as the browser's
 * language (sent as Accept-Language). Console errors and page errors are collected in
 * `ctx.errors`; `checkErrors(ctx)` fails on any.
 */
export async function newContext(browser, { locale = 'kk-KZ', viewport = PHONE } = {}) {
  const ctx = await browser.newContext({ locale, viewport, deviceScaleFactor: 1 });
  ctx.errors = [];
  ctx.on('page', (page) => watch(ctx, page));
  return ctx;
}

function watch(ctx, page) {
  page.on('console', (m) => { if (m.type() === 'error') ctx.errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => ctx.errors.push(`page error: ${e.message}`));
}

/** Fails if a page of the context logged an error (a CSP violation, a script error, a 404 asset). */
export function checkErrors(ctx, allowed = []) {
  const errors = ctx.errors.filter((e) => !allowed.some((a) => e.includes(a)));
  if (errors.length) throw new Error(`errors in the browser:\n${errors.join('\n')}`);
}

/** Screenshots of the page at the phone size and at the desktop size: NAME-phone.png, NAME-desktop.png. */
export async function screenshots(page, artifacts, name) {
  const before = page.viewportSize();
  for (const [label, size] of [['phone', PHONE], ['desktop', DESKTOP]]) {
    await page.setViewportSize(size);
    await page.screenshot({ path: join(artifacts, `${name}-${label}.png`), fullPage: true });
  }
  if (before) await page.setViewportSize(before);
}

export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

export function assertEq(actual, expected, message) {
  if (actual !== expected) {
    throw new Error(`assertion failed: ${message}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

/** Runs `body(browser)`, closes the browser, exits 1 with the error on failure. */
export async function run(body) {
  const browser = await launch();
  try {
    await body(browser);
    console.log('ok');
  } catch (e) {
    console.error(e && e.stack ? e.stack : String(e));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
