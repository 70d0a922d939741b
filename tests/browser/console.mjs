// The coordinators' console in a real browser, in two acts around a phone's enrollment (driven
// by tests/tests/console.rs):
//   invite: an admin imports an election definition (a file chosen in the form), creates two
//           invites for each of ten precincts from a pasted list, opens the cards (20), saves
//           each card's QR code as a PNG for ZBar and the cards as an A4 PDF.
//   revoke: the precinct the phone synced is covered on the dashboard and the public pages; the
//           invite list says
//           which device used its code; the admin revokes that device from its page.
//   refused: after the revoked phone tried again, its page lists the refusal by its code.
// Screenshots of every console page at 390 and 1280 px in Kazakh and Russian go to
// ARTIFACT_DIR/console/.
//   node console.mjs SERVER_URL ARTIFACT_DIR CONFIG_JSON
//   CONFIG_JSON: {"act", "password", "out", "definition"?, "list"?, "per"?, "precinct"?}
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { args, run, newContext, checkErrors, assert, assertEq } from './lib.mjs';

const { url, artifacts, rest } = args();
const config = JSON.parse(rest[0]);
const shots = join(artifacts, 'console');
mkdirSync(shots, { recursive: true });

/** The page in Kazakh and Russian at 390 and 1280 px; back to English after. */
async function screenshots(page, name) {
  const here = new URL(page.url());
  const path = here.pathname + here.search;
  for (const lang of ['kk', 'ru']) {
    await page.goto(`${url}/lang?to=${lang}&next=${encodeURIComponent(path)}`);
    assertEq(await page.getAttribute('html', 'lang'), lang, `${name} in ${lang}`);
    for (const width of [390, 1280]) {
      await page.setViewportSize({ width, height: 900 });
      const wide = await page.evaluate(() => document.documentElement.scrollWidth);
      assert(wide <= width, `${name} (${lang}, ${width} px) scrolls sideways: ${wide} px`);
      await page.screenshot({ path: join(shots, `${name}-${lang}-${width}.png`), fullPage: true });
    }
  }
  await page.goto(`${url}/lang?to=en&next=${encodeURIComponent(path)}`);
  await page.setViewportSize({ width: 1280, height: 900 });
}

async function login(browser) {
  const ctx = await newContext(browser, { locale: 'en-US', viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  await page.goto(`${url}/review/elections`);
  await page.fill('#username', 'root');
  await page.fill('#password', config.password);
  await Promise.all([page.waitForURL(`${url}/review/elections`), page.click('button[type=submit]')]);
  return { ctx, page };
}

await run(async (browser) => {
  const { ctx, page } = await login(browser);
  if (config.act === 'invite') {
    // The election, from a file chosen in the form.
    assert(await page.isVisible('#no-elections'), 'no election yet');
    await page.setInputFiles('#definition-file', config.definition);
    await Promise.all([page.waitForURL(/done=election/), page.click('#definition-submit')]);
    assert(await page.isVisible('#done'), 'imported');
    assertEq(await page.locator('#elections tr[data-election]').count(), 1, 'one election listed');
    await screenshots(page, 'elections');

    // Two invites for each of ten precincts, pasted as a list.
    await page.goto(`${url}/review/invites`);
    await page.fill('#i-list', config.list);
    await page.fill('#i-per', String(config.per));
    await Promise.all([page.waitForURL(/\/review\/invites\/cards\?batch=/), page.click('#invite-submit')]);
    const cards = page.locator('.invite-card');
    assertEq(await cards.count(), 20, 'twenty cards');
    const out = [];
    for (let i = 0; i < 20; i++) {
      const card = cards.nth(i);
      const qr = card.locator('svg.qr');
      const file = join(config.out, `qr-${String(i).padStart(2, '0')}.png`);
      await qr.screenshot({ path: file });
      out.push({
        file,
        code: await card.getAttribute('data-code'),
        uri: await card.locator('.qr-box').getAttribute('data-uri'),
        typed: (await card.locator('.typed code').textContent()).trim(),
        number: await card.getAttribute('data-number'),
      });
    }
    writeFileSync(join(config.out, 'cards.json'), JSON.stringify(out, null, 1));
    await page.emulateMedia({ media: 'print' });
    await page.pdf({ path: join(shots, 'cards.pdf'), format: 'A4', printBackground: true });
    await page.emulateMedia({ media: 'screen' });
    await screenshots(page, 'cards');
    await page.goto(`${url}/review/invites`);
    assertEq(await page.locator('tr[data-state="console-invite-unused"]').count(), 20, '20 unused');
    await screenshots(page, 'invites');
  } else if (config.act === 'revoke') {
    // The synced precinct is covered on the public pages.
    await page.goto(`${url}/elections/e2e/precincts/${config.precinct}`);
    assertEq(await page.locator('#no-photo').count(), 0, 'the precinct has its photo');
    assert(await page.locator('ul.photos li').count() >= 1, 'the photo is listed');
    // The dashboard: one station of twelve photographed, no longer among those without one.
    await page.goto(`${url}/review/dashboard`);
    assertEq((await page.textContent('#dash-photographed')).trim(), '1 / 12', 'one station covered');
    assertEq(await page.locator(`.dash-missing li[data-number="${config.number}"]`).count(), 0,
      'the covered station is not listed as missing');
    assertEq(await page.locator('.dash-missing li').count(), 11, 'eleven stations without a photo');
    assertEq(await page.locator('meta[http-equiv="refresh"]').count(), 0, 'no refresh unless asked');
    await screenshots(page, 'dashboard');
    await Promise.all([page.waitForURL(/auto=1/), page.click('#dash-auto')]);
    assertEq(await page.getAttribute('meta[http-equiv="refresh"]', 'content'), '30', 'refreshes itself');
    // The invite list names the device that used a code.
    await page.goto(`${url}/review/invites`);
    assertEq(await page.locator('tr[data-state="console-invite-used"]').count(), 1, 'one used');
    await page.goto(`${url}/review/devices`);
    const rows = page.locator('#devices tr[data-device]');
    assertEq(await rows.count(), 1, 'one device');
    await screenshots(page, 'devices');
    await Promise.all([page.waitForURL(/\/review\/devices\/[0-9a-f]{64}$/), rows.first().locator('a').click()]);
    assertEq((await page.textContent('#device-captures')).trim(), '1', 'its photo is counted');
    await page.fill('#revoke-reason', 'Phone lost on the way to the station');
    await Promise.all([page.waitForURL(/done=revoked/), page.click('#revoke-submit')]);
    assert((await page.textContent('#device-state')).includes('revoked'), 'revoked');
    assertEq(await page.locator('#revoke-form').count(), 0, 'no second revocation');
    await screenshots(page, 'device-revoked');
  } else if (config.act === 'refused') {
    // The revoked phone tried again: its page says so, by reason, and the list counts it.
    await page.goto(`${url}/review/devices`);
    const row = page.locator('#devices tr[data-device]').first();
    assertEq((await row.locator('td.refused').textContent()).trim(), '1', 'one refusal counted');
    await Promise.all([page.waitForURL(/\/review\/devices\/[0-9a-f]{64}$/), row.locator('a').click()]);
    const refusal = page.locator('#device-refusals tr[data-code="device_revoked"]');
    assertEq(await refusal.count(), 1, 'the refusal is listed by its code');
    assert((await refusal.textContent()).includes('revoked'), 'and says what it means');
    await screenshots(page, 'device-refused');
  }
  checkErrors(ctx);
});
