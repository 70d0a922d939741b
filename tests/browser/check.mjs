// "Check this photo yourself" in a real browser, as a journalist would use it: from the station
// page to the check page, then the real photo (verified: the signed photo, in the public log),
// the same photo with one byte changed (refused), the photo's address pasted (verified), and an
// address of another site (refused without fetching it). Every request the page makes goes to
// this site only. Screenshots in Kazakh and Russian at phone and desktop sizes.
//
//   node check.mjs SERVER_URL ARTIFACT_DIR STATION_PATH
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { args, run, newContext, checkErrors, screenshots, assert, assertEq } from './lib.mjs';

const { url, artifacts, rest: [station] } = args();
const origin = new URL(url).origin;

async function outcome(page) {
  await page.waitForSelector('#check[data-outcome]');
  return page.getAttribute('#check', 'data-outcome');
}

await run(async (browser) => {
  const ctx = await newContext(browser, { locale: 'ru-RU' });
  const page = await ctx.newPage();
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));

  await page.goto(`${url}${station}`);
  const link = page.locator('a.check-link').first();
  const href = await link.getAttribute('href');
  await Promise.all([page.waitForURL(`${url}${href}`), link.click()]);
  assertEq(await page.isVisible('#photo-file'), true, 'the file picker is shown (the script ran)');
  assertEq(await page.isVisible('#no-script'), false, 'the no-script notice is hidden');
  const expected = (await page.textContent('#expected-hash')).trim();
  assert(/^[0-9a-f]{64}$/.test(expected), `the expected fingerprint is shown: ${expected}`);

  // The photo as a reader downloads it (the download link), and a copy with one byte changed.
  const photoUrl = await page.getAttribute('#download', 'href');
  const photo = Buffer.from(await (await fetch(`${url}${photoUrl}`)).arrayBuffer());
  const dir = mkdtempSync(join(tmpdir(), 'hattama-check-'));
  const good = join(dir, 'photo.jpg');
  const bad = join(dir, 'photo-changed.jpg');
  writeFileSync(good, photo);
  const changed = Buffer.from(photo);
  const at = Math.floor(changed.length / 2);
  changed[at] ^= 0x01;
  writeFileSync(bad, changed);

  await page.setInputFiles('#photo-file', good);
  assertEq(await outcome(page), 'result-same result-logged', 'the real photo is verified and logged');
  assertEq((await page.textContent('#computed-hash')).trim(), expected, 'the fingerprint computed in the browser');
  assert(await page.isVisible('[data-result="result-same"]'), 'says so in plain words');
  await screenshots(page, artifacts, 'check-verified-ru');

  await page.setInputFiles('#photo-file', bad);
  assertEq(await outcome(page), 'result-different', `one byte changed (at ${at}) is refused`);
  assert(await page.isVisible('[data-result="result-different"]'), 'the refusal is shown');
  assert(!(await page.isVisible('[data-result="result-same"]')), 'the earlier success is gone');
  await screenshots(page, artifacts, 'check-refused-ru');

  // The photo's address, pasted.
  await page.fill('#photo-address', `${url}${photoUrl}`);
  await page.click('#address-form button[type=submit]');
  assertEq(await outcome(page), 'result-same result-logged', 'the pasted address is verified');
  // Another site's address is refused before anything is fetched.
  await page.fill('#photo-address', 'https://example.org/photo.jpg');
  await page.click('#address-form button[type=submit]');
  assertEq(await outcome(page), 'result-not-this-site', 'another site is refused');

  // Kazakh.
  await ctx.addCookies([{ name: 'lang', value: 'kk', url }]);
  await page.reload();
  assertEq(await page.getAttribute('html', 'lang'), 'kk', 'Kazakh');
  await page.setInputFiles('#photo-file', good);
  assertEq(await outcome(page), 'result-same result-logged', 'verified in Kazakh too');
  await screenshots(page, artifacts, 'check-verified-kk');

  const elsewhere = requests.filter((r) => new URL(r).origin !== origin);
  assertEq(elsewhere.length, 0, `requests only to the site, not ${elsewhere.join(', ')}`);
  assert(requests.some((r) => r.includes('/api/v1/receipts/')), 'the log proof came from the site');
  console.log(`${requests.length} requests, all to ${origin}`);
  checkErrors(ctx);
});
