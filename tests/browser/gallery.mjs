// The public gallery in a real browser, on a phone: from the home page to the election, a
// search by station number, the precinct page (address shown as text even when it holds
// markup), the language switcher, and the full photo opened from its thumbnail. Every page must
// follow the CSP (no console error). Screenshots at phone and desktop sizes.
//
//   node gallery.mjs SERVER_URL ARTIFACT_DIR ELECTION PHOTO_SHA256
import { args, run, newContext, checkErrors, screenshots, assert, assertEq } from './lib.mjs';

const { url, artifacts, rest: [election, photo] } = args();

await run(async (browser) => {
  const ctx = await newContext(browser, { locale: 'en-GB' });
  const page = await ctx.newPage();

  await page.goto(`${url}/`);
  assertEq(await page.getAttribute('html', 'lang'), 'en', 'language from Accept-Language');
  await page.click(`a[href="/elections/${election}"]`);
  await page.waitForURL(`${url}/elections/${election}`);
  assert(await page.isVisible('svg.bars'), 'the coverage chart is drawn');
  await screenshots(page, artifacts, 'gallery-election');

  // Search by the station's number, as a voter would.
  await page.fill('#q', '1');
  await page.click('form.search button[type=submit]');
  await page.waitForURL(/\/search\?q=1$/);
  await page.click('ul.precincts li:first-child a');
  await page.waitForURL(`${url}/elections/${election}/precincts/p0001`);
  const h1 = await page.textContent('h1');
  assertEq(h1, 'Polling station No. 1', 'precinct heading');
  // The address holds markup: it must show as text, and no script may have run.
  const addr = await page.textContent('p.addr');
  assert(addr.includes("<script>alert('addr')</script>"), `address shown as text: ${addr}`);
  assert(addr.includes('<b>Co</b>'), 'markup shown literally');
  assertEq(await page.locator('main script').count(), 0, 'no script element in the page body');
  const note = await page.textContent('p.note');
  assert(note.includes('<img src=x onerror=alert(1)>'), `note shown as text: ${note}`);
  assertEq(await page.locator('main img[src="x"]').count(), 0, 'no injected image');
  // The page's full address, with a copy button that works under the CSP.
  const permalink = await page.textContent('#permalink');
  assertEq(permalink, `${url}/elections/${election}/precincts/p0001`, 'the full address');
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });
  await page.click('button[data-copy="permalink"]');
  await page.waitForFunction(() => document.querySelector('button[data-copy]').textContent === 'Copied');
  assertEq(await page.evaluate(() => navigator.clipboard.readText()), permalink, 'copied');
  // Differences with the official figures are highlighted.
  assert(await page.locator('table.figures').isVisible(), 'figures table');
  await screenshots(page, artifacts, 'gallery-precinct-en');

  // Thumbnails first; they loaded.
  const thumbs = page.locator('ul.photos img');
  assertEq(await thumbs.count(), 2, 'two photos');
  await page.waitForFunction(() => [...document.querySelectorAll('ul.photos img')]
    .every((i) => i.complete && i.naturalWidth > 0));

  // Switch language: Russian, then it sticks.
  await page.click('nav.langs a[hreflang="ru"]');
  await page.waitForURL(`${url}/elections/${election}/precincts/p0001`);
  assertEq(await page.getAttribute('html', 'lang'), 'ru', 'Russian after switching');
  assertEq(await page.textContent('h1'), 'Участок № 1', 'Russian heading');
  await screenshots(page, artifacts, 'gallery-precinct-ru');

  // The full photo on demand: the link opens the photo itself.
  const [response] = await Promise.all([
    page.waitForNavigation(),
    page.click(`a.open-full[href="/photos/${photo}"]`),
  ]);
  assertEq(response.status(), 200, 'full photo');
  assertEq(response.headers()['content-type'], 'image/jpeg', 'a JPEG');
  const width = await page.evaluate(() => document.querySelector('img').naturalWidth);
  assert(width >= 300, `the full photo is shown (${width} px wide)`);

  await page.goto(`${url}/elections/${election}/comparison`);
  assert(await page.isVisible('#totals'), 'comparison totals');
  await screenshots(page, artifacts, 'gallery-comparison-ru');
  checkErrors(ctx);
});
