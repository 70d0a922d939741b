// The coordinators' review in a real browser: log in, the queue, a precinct's capture with the
// photo viewer (buttons and keyboard), a decision, double entry by two coordinators with a
// mismatch resolved by a third, a hard-rule violation that needs a reason, next/previous by
// keyboard, and switching language. Screenshots at phone and desktop sizes.
// Arguments: SERVER_URL ARTIFACT_DIR CONFIG_JSON ({password, p1: [id, id], p2: id}).
import { args, run, newContext, checkErrors, screenshots, assert, assertEq, PHONE, DESKTOP } from './lib.mjs';

const { url, artifacts, rest } = args();
const config = JSON.parse(rest[0]);

const GOOD = { '1': 1000, '2': 900, '3': 700, '4': 200, '5': 690, '6': 10, '7.1': 400, '7.2': 200, '7.3': 50, '8': 30 };

async function login(browser, username, { viewport = PHONE, locale = 'en-US' } = {}) {
  const ctx = await newContext(browser, { viewport, locale });
  const page = await ctx.newPage();
  await page.goto(`${url}/review`);
  assert(page.url().includes('/review/login'), `redirected to the login page, at ${page.url()}`);
  await page.fill('#username', username);
  await page.fill('#password', config.password);
  await Promise.all([page.waitForURL(`${url}/review`), page.click('button[type=submit]')]);
  return { ctx, page };
}

async function fillEntry(page, values) {
  for (const [line, v] of Object.entries(values)) {
    await page.fill(`[id="line-${line}"]`, String(v));
  }
}

async function submitEntry(page) {
  await Promise.all([page.waitForLoadState('load'), page.click('#entry-submit')]);
  await page.waitForSelector('#transcription-status');
}

async function status(page) {
  return (await page.textContent('#transcription-status')).trim();
}

await run(async (browser) => {
  // Alice on a phone: the queue, then page 1 of precinct p0001.
  const alice = await login(browser, 'alice');
  let page = alice.page;
  assertEq(await page.getAttribute('html', 'lang'), 'en', 'language from the browser');
  assert((await page.textContent('#queue-total')).includes('4 captures'), 'queue total');
  assertEq(await page.locator('li[data-precinct="p0001"] .captures li').count(), 2, 'both pages of p0001 grouped');
  await screenshots(page, artifacts, 'review-queue');
  await page.click(`a[href^="/review/captures/${config.p1[0]}"]`);
  await page.waitForSelector('#photo');
  const natural = await page.$eval('#photo', (img) => img.complete && img.naturalWidth);
  assert(natural > 0, 'the photo loads');

  // The viewer: buttons appear with JavaScript; zoom, rotate, keyboard, reset.
  const viewer = page.locator('.viewer');
  assert(await page.isVisible('.viewer-tools'), 'viewer tools shown');
  await page.click('button[data-action="zoom-in"]');
  assertEq(await viewer.getAttribute('data-scale'), '1.25', 'zoomed in');
  await page.click('button[data-action="rotate-right"]');
  assertEq(await viewer.getAttribute('data-rotation'), '90', 'rotated');
  await page.focus('.viewer-stage');
  await page.keyboard.press('+');
  assertEq(await viewer.getAttribute('data-scale'), '1.56', 'zoomed by keyboard');
  await page.keyboard.press('ArrowLeft');
  await page.keyboard.press('r');
  assertEq(await viewer.getAttribute('data-rotation'), '180', 'rotated by keyboard');
  await screenshots(page, artifacts, 'review-viewer-zoomed');
  await page.keyboard.press('0');
  assertEq(await viewer.getAttribute('data-scale'), '1.00', 'reset');

  // A decision: the next capture opens, saying what was done, with a link back.
  await Promise.all([page.waitForURL(new RegExp(config.p1[1])), page.click('#accept')]);
  assert((await page.textContent('#done')).includes('Accepted: precinct 1, page 1/2.'), 'confirmation line');
  await Promise.all([page.waitForURL(new RegExp(config.p1[0])), page.click('#done-again')]);
  assertEq((await page.textContent('#capture-state')).trim(), 'accepted', 'accepted');

  // First blind entry (then the next capture, page 2 of the same precinct, opens).
  await fillEntry(page, GOOD);
  await submitEntry(page);
  assert((await page.textContent('#done')).includes('Waiting for a second entry'), 'entry confirmed');
  assertEq(await status(page), 'waiting for a second entry', 'after the first entry');
  assert(await page.isVisible('#entry-waiting'), 'waiting notice');
  await screenshots(page, artifacts, 'review-capture-entered');
  await Promise.all([page.waitForURL(new RegExp(config.p1[0])), page.click('#done-again')]);

  // Next capture by keyboard (n), and back (p), without losing place.
  await page.locator('body').press('n');
  await page.waitForURL(new RegExp(config.p1[1]));
  await page.locator('body').press('p');
  await page.waitForURL(new RegExp(config.p1[0]));

  // Bob on a desktop: blind second entry that differs.
  const bob = await login(browser, 'bob', { viewport: DESKTOP });
  await bob.page.goto(`${url}/review/captures/${config.p1[0]}`);
  assert(await bob.page.isVisible('#entry-form'), 'Bob gets the form');
  assertEq(await bob.page.locator('#dispute').count(), 0, 'Bob does not see Alice\'s numbers');
  await fillEntry(bob.page, { ...GOOD, '7.1': 410, '8': 20 });
  await submitEntry(bob.page);
  assertEq(await status(bob.page), 'entries differ: needs a third person', 'disputed');

  // Carol resolves: she sees both entries with the differences marked.
  const carol = await login(browser, 'carol');
  page = carol.page;
  await page.goto(`${url}/review/captures/${config.p1[0]}`);
  assert(await page.isVisible('#dispute'), 'both entries shown');
  assertEq(await page.locator('#dispute fieldset.differs').count(), 2, 'two lines differ');
  await screenshots(page, artifacts, 'review-dispute');
  // She picks Alice's value on both differing lines (the agreed ones come picked).
  assertEq(await page.isVisible('[id="line-7.1"]'), false, '"other number" shown only once picked');
  await page.check('input[name="pick:7.1"][value="first"]');
  await page.check('input[name="pick:8"][value="first"]');
  await submitEntry(page);
  assertEq(await status(page), 'verified', 'resolved');
  assert(await page.isVisible('#transcription-values'), 'verified values shown');
  await screenshots(page, artifacts, 'review-verified');

  // A hard-rule violation on p0002: refused until the reason is given.
  await page.goto(`${url}/review/captures/${config.p2}`);
  await fillEntry(page, { ...GOOD, '2': 950 });
  await page.click('#entry-submit');
  await page.waitForSelector('#entry-error');
  assert((await page.textContent('#violations')).includes('Received = issued + cancelled'), 'the broken rule named');
  assertEq(await page.inputValue('[id="line-2"]'), '950', 'typed values kept');
  assert(await page.isVisible('#entry-reason'), 'reason field open');
  await screenshots(page, artifacts, 'review-hard-rule');
  await page.fill('#entry-reason', 'The protocol itself says 950 received; the stamp is clear.');
  // p0002 is the last of the queue: back to the queue, which says so.
  await Promise.all([page.waitForURL(/\/review\?/), page.click('#entry-submit')]);
  assert((await page.textContent('#done')).includes('Waiting for a second entry'), 'accepted with a reason');
  await page.goto(`${url}/review/captures/${config.p2}`);
  assertEq(await status(page), 'waiting for a second entry', 'waiting');

  // Switching language on the capture page, without JavaScript's help (plain links).
  await page.click('nav.langs a[hreflang="ru"]');
  await page.waitForSelector('#transcription-status');
  assertEq(await page.getAttribute('html', 'lang'), 'ru', 'Russian');
  assertEq(await status(page), 'ждёт второго ввода', 'Russian status');
  await screenshots(page, artifacts, 'review-capture-ru');
  await page.click('nav.langs a[hreflang="kk"]');
  await page.waitForSelector('#transcription-status');
  assertEq(await page.getAttribute('html', 'lang'), 'kk', 'Kazakh');
  assertEq(await status(page), 'екінші енгізуді күтуде', 'Kazakh status');
  await screenshots(page, artifacts, 'review-capture-kk');

  checkErrors(alice.ctx);
  checkErrors(bob.ctx);
  // The refused entry is answered 422, which the console reports; nothing else may show.
  checkErrors(carol.ctx, ['status of 422']);
});
