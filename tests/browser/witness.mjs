// A station's public page on a server with witnesses, read on a phone in Kazakh, Russian and
// English: each photo's evidence says whether it is witnessed, by which witnesses and when, and
// that their number is the quorum. No sideways scrolling at 390 px, no console error.
// Screenshots: witness-<lang>-phone.png and -desktop.png.
//
//   node witness.mjs SERVER_URL ARTIFACT_DIR ELECTION PRECINCT MIN_COSIGNATURES
import { args, run, newContext, checkErrors, screenshots, assert } from './lib.mjs';

const { url, artifacts, rest: [election, precinct, min] } = args();

const WORDS = { kk: 'Куәландырылды', ru: 'Заверено', en: 'Witnessed' };

await run(async (browser) => {
  for (const [lang, locale] of [['kk', 'kk-KZ'], ['ru', 'ru-RU'], ['en', 'en-US']]) {
    const ctx = await newContext(browser, { locale });
    const page = await ctx.newPage();
    await page.goto(`${url}/elections/${election}/precincts/${precinct}`);
    const photos = page.locator('li.photo');
    assert(await photos.count() > 0, `${lang}: the station shows its photos`);
    for (let i = 0; i < await photos.count(); i += 1) {
      const photo = photos.nth(i);
      await photo.locator('details.evidence summary').click();
      const text = await photo.locator('dd.witnessed strong').textContent();
      assert(text && text.includes(WORDS[lang]), `${lang}: photo ${i} is witnessed: ${text}`);
      const signers = await photo.locator('dd.witnessed ul.cosigned li').allTextContents();
      assert(signers.length >= Number(min), `${lang}: photo ${i} names its witnesses: ${signers}`);
      for (const s of signers) {
        assert(/witness\.test\/d[123]/.test(s) && /20\d\d/.test(s), `${lang}: who and when: ${s}`);
      }
    }
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `${lang}: the page scrolls sideways by ${overflow} px at 390 px`);
    const raw = await page.content();
    assert(!/g-witness/.test(raw), `${lang}: an untranslated message id`);
    checkErrors(ctx);
    await screenshots(page, artifacts, `witness-${lang}`);
    await ctx.close();
  }
});
