// The web foundation in a real browser: the language is negotiated from the browser's language,
// the switcher works without JavaScript and sticks (cookie), the page follows the CSP (no
// console errors), the style sheet applies, and the error page is laid out on a phone and a
// desktop.
import { args, run, newContext, checkErrors, screenshots, assert, assertEq } from './lib.mjs';

const { url, artifacts } = args();

await run(async (browser) => {
  const ctx = await newContext(browser, { locale: 'ru-RU' });
  const page = await ctx.newPage();
  const res = await page.goto(`${url}/no-such-page`);
  assertEq(res.status(), 404, 'status of an unknown page');
  assertEq(await page.getAttribute('html', 'lang'), 'ru', 'language from Accept-Language');
  assertEq(await page.textContent('h1'), 'Ошибка 404', 'Russian heading');
  const headerBg = await page.$eval('header.site', (e) => getComputedStyle(e).backgroundColor);
  assert(headerBg !== 'rgba(0, 0, 0, 0)', `the style sheet applies (header background ${headerBg})`);

  await page.click('nav.langs a[hreflang="en"]');
  await page.waitForURL(`${url}/no-such-page`);
  assertEq(await page.getAttribute('html', 'lang'), 'en', 'language after switching');
  assertEq(await page.textContent('h1'), 'Error 404', 'English heading');
  await page.reload();
  assertEq(await page.getAttribute('html', 'lang'), 'en', 'the choice sticks over Accept-Language');
  await screenshots(page, artifacts, 'foundation-404-en');

  await page.click('nav.langs a[hreflang="kk"]');
  assertEq(await page.getAttribute('html', 'lang'), 'kk', 'Kazakh');
  assertEq(await page.textContent('h1'), 'Қате 404', 'Kazakh heading');
  await screenshots(page, artifacts, 'foundation-404-kk');
  // Console errors about the 404 itself are expected: that is the page under test.
  checkErrors(ctx, ['404']);
});
