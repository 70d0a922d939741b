// The coordinators' review by keyboard alone (no mouse click anywhere), in a browser whose clock
// is five hours east of UTC: log in, a view of the queue, the photo viewer's keys without
// clicking the photo, accept (a), back (b), the entry form (e) with a hard-rule refusal corrected
// without a reason, reject (x), and the third person's choice per line. Each step lands on the
// next item of the view with a confirmation line. The pages are checked for horizontal overflow
// at 320 and 390 px in Kazakh and Russian, with screenshots.
// Arguments: SERVER_URL ARTIFACT_DIR CONFIG_JSON ({password, p1: [id, id], p2: id, p4: id}).
import { args, run, checkErrors, screenshots, assert, assertEq, DESKTOP } from './lib.mjs';

const { url, artifacts, rest } = args();
const config = JSON.parse(rest[0]);

// The protocol's lines in form order (an object's integer-like keys would come first).
const LINES = ['1', '2', '3', '4', '5', '6', '7.1', '7.2', '7.3', '8'];
const GOOD = { '1': 1000, '2': 900, '3': 700, '4': 200, '5': 690, '6': 10, '7.1': 400, '7.2': 200, '7.3': 50, '8': 30 };

async function context(browser) {
  const ctx = await browser.newContext({
    locale: 'en-US', viewport: DESKTOP, deviceScaleFactor: 1, timezoneId: 'Asia/Aqtobe',
  });
  ctx.errors = [];
  ctx.on('page', (page) => {
    page.on('console', (m) => { if (m.type() === 'error') ctx.errors.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => ctx.errors.push(`page error: ${e.message}`));
  });
  return ctx;
}

/** Presses a key that loads another page, and waits for it. */
async function go(page, key, urlPart) {
  await Promise.all([page.waitForURL((u) => u.href.includes(urlPart)), page.keyboard.press(key)]);
  await page.waitForLoadState('load');
}

/**
 * A key pressed with a Russian/Kazakh layout active: the typed character is Cyrillic, the
 * physical key (event.code) is the Latin one of the hint.
 */
async function pressCyrillic(page, key, code) {
  await page.evaluate(([key, code]) => {
    const target = document.activeElement || document.body;
    target.dispatchEvent(new KeyboardEvent('keydown', { key, code, bubbles: true, cancelable: true }));
  }, [key, code]);
}

/** As go(), with a Cyrillic layout. */
async function goCyrillic(page, key, code, urlPart) {
  await Promise.all([page.waitForURL((u) => u.href.includes(urlPart)), pressCyrillic(page, key, code)]);
  await page.waitForLoadState('load');
}

async function text(page, selector) {
  return (await page.textContent(selector)).replace(/\s+/g, ' ').trim();
}

async function focused(page) {
  return page.evaluate(() => document.activeElement && document.activeElement.id);
}

/** Types the numbers of a protocol, line after line with Tab, from the focused first line. */
async function typeProtocol(page, values) {
  const lines = LINES;
  for (const [i, line] of lines.entries()) {
    assertEq(await focused(page), `line-${line}`, `Tab reaches line ${line}`);
    await page.keyboard.type(String(values[line]));
    if (i + 1 < lines.length) await page.keyboard.press('Tab');
  }
}

/** Fails on horizontal overflow at 320 and 390 px, and keeps screenshots. */
async function fits(page, name) {
  const before = page.viewportSize();
  for (const width of [320, 390]) {
    await page.setViewportSize({ width, height: 800 });
    const wide = await page.evaluate(() => {
      const out = [];
      if (document.documentElement.scrollWidth > innerWidth) out.push(`page ${document.documentElement.scrollWidth}px`);
      for (const el of document.querySelectorAll('body *')) {
        const r = el.getBoundingClientRect();
        if (r.width > 0 && r.right > innerWidth + 1 && !el.closest('.viewer-stage')) {
          out.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}.${el.className} ends at ${Math.round(r.right)}px`);
        }
      }
      return out.slice(0, 5);
    });
    assertEq(wide.join('; '), '', `${name} fits ${width} px`);
  }
  await screenshots(page, artifacts, name);
  if (before) await page.setViewportSize(before);
}

async function inLanguages(page, name) {
  for (const lang of ['kk', 'ru']) {
    const here = new URL(page.url());
    await page.goto(`${url}/lang?to=${lang}&next=${encodeURIComponent(here.pathname + here.search)}`);
    assertEq(await page.getAttribute('html', 'lang'), lang, `${name} in ${lang}`);
    await fits(page, `${name}-${lang}`);
  }
  const here = new URL(page.url());
  await page.goto(`${url}/lang?to=en&next=${encodeURIComponent(here.pathname + here.search)}`);
}

await run(async (browser) => {
  const ctx = await context(browser);
  const page = await ctx.newPage();

  // Log in: the user name field has the focus.
  const login = `${url}/review/login?next=${encodeURIComponent('/review?view=mine')}`;
  await page.goto(login);
  await fits(page, 'review-keyboard-login');
  await inLanguages(page, 'review-keyboard-login');
  await page.goto(login);
  assertEq(await focused(page), 'username', 'the user name has the focus');
  await page.keyboard.type('alice');
  await page.keyboard.press('Tab');
  await page.keyboard.type(config.password);
  await go(page, 'Enter', 'view=mine');
  assert((await text(page, '#zone')).includes('UTC+05:00'), 'times in the browser\'s zone');
  assertEq(await text(page, '#view-mine'), 'Needs my entry 3', 'three captures need my entry');
  assertEq(await text(page, '#view-disputed'), 'Disputed: needs a third person 1', 'one dispute');

  // n opens the first of the view.
  await go(page, 'n', config.p1[0]);
  await page.waitForSelector('#photo');

  // The viewer's keys work without clicking the photo.
  const viewer = page.locator('.viewer');
  await page.keyboard.press('+');
  assertEq(await viewer.getAttribute('data-scale'), '1.25', '+ zooms from anywhere');
  await page.keyboard.press('r');
  assertEq(await viewer.getAttribute('data-rotation'), '90', 'r rotates');
  // With a Russian layout active (к is on the R key) it rotates too.
  await pressCyrillic(page, 'к', 'KeyR');
  assertEq(await viewer.getAttribute('data-rotation'), '180', 'r rotates with a Russian layout');
  await page.keyboard.press('0');
  assertEq(await viewer.getAttribute('data-scale'), '1.00', '0 resets');

  // a accepts; the next of the view opens, saying what was done.
  // With a Russian layout (ф is on the A key).
  await goCyrillic(page, 'ф', 'KeyA', config.p1[1]);
  assertEq(await text(page, '#done'), '✓ Accepted: precinct 1, page 1/2. Open it again b', 'confirmation');
  // b goes back to it; e goes to the entry form.
  await goCyrillic(page, 'и', 'KeyB', config.p1[0]);
  assertEq(await text(page, '#capture-state'), 'accepted', 'accepted');
  await page.keyboard.press('e');
  await typeProtocol(page, { ...GOOD, '2': 950 });
  await Promise.all([page.waitForLoadState('load'), page.waitForURL(/\/entry$/), page.keyboard.press('Enter')]);
  await page.waitForSelector('#entry-error');
  // Refused: the fields of the broken rule are marked, the first has the focus, nothing asks
  // for a reason.
  assertEq(await focused(page), 'line-2', 'the focus is on the first field of the broken rule');
  for (const line of ['2', '3', '4']) {
    assertEq(await page.getAttribute(`[id="line-${line}"]`, 'aria-invalid'), 'true', `line ${line} marked`);
  }
  assertEq(await page.getAttribute('[id="line-1"]', 'aria-invalid'), null, 'line 1 not marked');
  assertEq(await page.$eval('#entry-reason', (el) => el.required), false, 'the reason is not required');
  await fits(page, 'review-keyboard-hard-rule');
  assertEq(await focused(page), 'line-2', 'still there after the screenshots');
  // Corrected in place, saved without a reason.
  await page.keyboard.press('Control+A');
  await page.keyboard.type('900');
  await go(page, 'Enter', config.p2);
  assertEq(await text(page, '#done'),
    '✓ Entry saved: precinct 1, page 1/2. Waiting for a second entry. Open it again b', 'entry saved');
  await screenshots(page, artifacts, 'review-keyboard-next');

  // x goes to the reject reason; an arrow picks "unreadable"; Enter rejects.
  await page.keyboard.press('x');
  assertEq(await focused(page), 'reject-reason', 'x focuses the reason');
  // No reason is preselected: Enter alone rejects nothing.
  assertEq(await page.inputValue('#reject-reason'), '', 'no reason preselected');
  const before = page.url();
  await page.keyboard.press('Enter');
  assertEq(page.url(), before, 'no rejection without a reason');
  assertEq(await page.$eval('#reject-reason', (el) => el.validity.valueMissing), true, 'the reason is required');
  await page.keyboard.press('ArrowDown');
  assertEq(await page.inputValue('#reject-reason'), 'not_a_protocol', 'first reason');
  await page.keyboard.press('ArrowDown');
  assertEq(await page.inputValue('#reject-reason'), 'unreadable', 'reason picked');
  await go(page, 'Enter', 'done=rejected');
  assert((await text(page, '#done')).includes('Rejected: precinct 2, page 1/1. That was the last one in this view.'), 'last one');
  assertEq(await text(page, '#view-mine'), 'Needs my entry 0', 'nothing left for me');
  await fits(page, 'review-keyboard-queue');
  await inLanguages(page, 'review-keyboard-queue');

  // The third person: the dispute of p0004, picked per line.
  await page.goto(`${url}/review?view=disputed`);
  await go(page, 'n', config.p4);
  assertEq(await page.locator('#dispute fieldset.differs').count(), 2, 'two lines differ');
  await fits(page, 'review-keyboard-dispute');
  await inLanguages(page, 'review-keyboard-dispute');
  await page.waitForSelector('#dispute');
  await page.keyboard.press('e');
  const pick = (line, v) => page.isChecked(`input[name="pick:${line}"][value="${v}"]`);
  await page.keyboard.press('ArrowDown');
  assert(await pick('7.1', 'second'), 'the second entry\'s 7.1 picked');
  // Tab goes from line to line (the agreed 7.2 and 7.3 come picked).
  const focusedName = () => page.evaluate(() => document.activeElement.name);
  for (const line of ['7.2', '7.3', '8']) {
    await page.keyboard.press('Tab');
    assertEq(await focusedName(), `pick:${line}`, `Tab reaches line ${line}`);
  }
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowDown');
  assert(await pick('8', 'typed'), '"neither" picked for line 8');
  assertEq(await focused(page), 'line-8', 'picking "neither" goes to its number');
  await page.keyboard.type('20');
  await go(page, 'Enter', 'done=resolved');
  assert((await text(page, '#done')).includes('Resolution saved: precinct 4, page 1/1. Verified.'), 'resolved');
  await go(page, 'b', config.p4);
  assertEq(await text(page, '#transcription-status'), 'verified', 'verified');
  const verified = async (line) => text(page, `#transcription-values tr[data-line="${line}"] td.num`);
  assertEq(await verified('7.1'), '410', 'the second entry\'s 7.1');
  assertEq(await verified('8'), '20', 'the typed 8');
  assert((await text(page, '#audit')).includes('Alice Abenova resolved the differing entries; now verified.'), 'the audit trail as sentences');
  await fits(page, 'review-keyboard-verified');
  await inLanguages(page, 'review-keyboard-verified');

  // The refused entry answers 422, which the console reports; nothing else may show.
  checkErrors(ctx, ['status of 422']);
});
