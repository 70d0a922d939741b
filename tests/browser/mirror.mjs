// A mirror made by `hattama mirror`, served by a plain static web server, walked in a real
// browser as a reader abroad would: the home page → the election → its region → its district →
// the station → the photo (medium rendition, then the full photo), and the switch to Russian.
// On every page visited, every link, image, stylesheet and script of the page answers 200 from
// the mirror, images are decoded, and no console error appears. Screenshots at phone and
// desktop sizes.
//
//   node mirror.mjs MIRROR_URL ARTIFACT_DIR ELECTION REGION DISTRICT PRECINCT
// (REGION and DISTRICT percent-encoded, as in the server's URLs)
import { args, run, newContext, checkErrors, screenshots, assert, assertEq } from './lib.mjs';

const { url, artifacts, rest: [election, region, district, precinct] } = args();
const origin = new URL(url).origin;

/** Every same-origin link and resource of the page answers 200, every image is decoded. */
async function checkLinks(page) {
  const targets = await page.evaluate(() => {
    const out = new Set();
    for (const a of document.querySelectorAll('a[href]')) out.add(a.href);
    for (const el of document.querySelectorAll('img[src], script[src]')) out.add(el.src);
    for (const l of document.querySelectorAll('link[href]')) out.add(l.href);
    for (const f of document.querySelectorAll('form[action]')) out.add(f.action);
    return [...out];
  });
  let checked = 0;
  for (const t of targets) {
    if (!/^https?:/.test(t)) continue;
    const u = new URL(t);
    if (u.origin !== origin) continue;
    u.hash = '';
    const r = await page.request.get(u.toString());
    assertEq(r.status(), 200, `${page.url()} links to ${u}`);
    checked += 1;
  }
  const undecoded = await page.evaluate(() => [...document.images]
    .filter((i) => i.loading !== 'lazy' || i.complete)
    .filter((i) => i.complete && i.naturalWidth === 0).map((i) => i.src));
  assertEq(undecoded.length, 0, `images not shown on ${page.url()}: ${undecoded.join(', ')}`);
  return checked;
}

async function follow(page, selector, expectedPath) {
  // The chart's links (inside its SVG) are drawn under its bars: the table's are clicked.
  const link = page.locator(`${selector}:not(svg *)`).first();
  assert(await link.count() > 0, `${page.url()} has a link ${selector}`);
  await Promise.all([page.waitForNavigation(), link.click()]);
  const path = new URL(page.url()).pathname;
  assert(path.endsWith(expectedPath), `${selector} led to ${path}, not …${expectedPath}`);
  return checkLinks(page);
}

await run(async (browser) => {
  const ctx = await newContext(browser, { locale: 'kk-KZ' });
  const page = await ctx.newPage();
  let checked = 0;

  await page.goto(`${url}/`);
  checked += await checkLinks(page);
  const note = await page.textContent('#mirror-note');
  assert(note && note.includes('UTC'), `every page says it is a copy, of when: ${note}`);
  await screenshots(page, artifacts, 'mirror-home');
  checked += await follow(page, `a[href$="elections/${election}.html"]`, `/elections/${election}.html`);
  await screenshots(page, artifacts, 'mirror-election');
  checked += await follow(page, `a[href$="regions/${region}.html"]`, `/regions/${region}.html`);
  checked += await follow(page, `a[href$="${region}/${district}.html"]`, `/${district}.html`);
  checked += await follow(page, `a[href$="precincts/${precinct}.html"]`, `/precincts/${precinct}.html`);
  await screenshots(page, artifacts, 'mirror-station');

  // The photo: the medium rendition, then the signed photo itself.
  const thumb = page.locator('a.thumb img').first();
  assert(await thumb.count() > 0, 'the station shows a photo');
  await thumb.scrollIntoViewIfNeeded();
  assert(await thumb.evaluate((i) => i.complete && i.naturalWidth > 0), 'the thumbnail is shown');
  const medium = await page.locator('a.thumb').first().getAttribute('href');
  assert(/photos\/[0-9a-f]{64}\.medium\.jpg$/.test(medium), `the medium rendition: ${medium}`);
  const full = await page.locator('a.open-full').first().getAttribute('href');
  assert(/photos\/[0-9a-f]{64}$/.test(full), `the signed photo: ${full}`);
  const station = page.url();
  await page.goto(new URL(medium, station).toString());
  const size = await page.evaluate(() => {
    const img = document.querySelector('img');
    return img ? [img.naturalWidth, img.naturalHeight] : [0, 0];
  });
  assert(size[0] > 0 && size[1] > 0, `the medium rendition is an image: ${size}`);
  await screenshots(page, artifacts, 'mirror-photo');
  const photo = await page.request.get(new URL(full, station).toString());
  assertEq(photo.status(), 200, 'the signed photo is served');
  const bytes = await photo.body();
  assert(bytes[0] === 0xff && bytes[1] === 0xd8, 'the signed photo is a JPEG');

  // The language switch leads to the same page in Russian, in the mirror.
  await page.goto(station);
  checked += await follow(page, 'a[hreflang="ru"]', `/precincts/${precinct}.html`);
  assert(new URL(page.url()).pathname.startsWith('/ru/'), `Russian pages under /ru/: ${page.url()}`);
  assertEq(await page.getAttribute('html', 'lang'), 'ru', 'the page is in Russian');
  assert((await page.textContent('#mirror-note')).includes('копия'), 'the notice in Russian');
  await screenshots(page, artifacts, 'mirror-station-ru');

  checkErrors(ctx);
  console.log(`mirror walked: ${checked} links and resources checked`);
});
