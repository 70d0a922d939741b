// Every public page and every review page, as their users see them: in Kazakh, Russian and
// English, at 320, 390 and 1280 px wide. Fails on a page wider than the window
// (document.documentElement.scrollWidth > innerWidth), on any element sticking out of it (a
// table scrolling sideways inside the page counts too), on a message id shown instead of its
// text, on any console error (a CSP violation, a failed asset), and on any axe-core violation of
// impact "serious" or "critical", and on a chart whose labels are too small to read or overlap.
// Screenshots of each page, language and width go to
// ARTIFACT_DIR/pages/.
//
//   node pages.mjs SERVER_URL ARTIFACT_DIR CONFIG_JSON
//   CONFIG_JSON: {"public": [{"name", "path", "status"?}], "review": {"username", "password",
//                 "pages": [{"name", "path"}]}, "console"?: {"username", "password", "pages"}}
import { readFileSync, readdirSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { args, run, newContext, assert } from './lib.mjs';

const { url, artifacts, rest } = args();
const config = JSON.parse(rest[0]);
const LANGS = ['kk', 'ru', 'en'];
const WIDTHS = [320, 390, 1280];
const shots = join(artifacts, 'pages');
mkdirSync(shots, { recursive: true });

// axe-core is evaluated in the page through the DevTools protocol: no script tag, so the
// page's CSP stays as strict as for any visitor.
const AXE = readFileSync(new URL('./node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');

// Every message id of the UI (English has them all; a unit test keeps the languages equal).
const locales = new URL('../../server/locales/en/', import.meta.url);
const MESSAGE_IDS = new Set();
for (const file of readdirSync(locales)) {
  for (const line of readFileSync(new URL(file, locales), 'utf8').split('\n')) {
    const m = /^([a-z][a-z0-9-]*)\s*=/.exec(line);
    if (m) MESSAGE_IDS.add(m[1]);
  }
}
assert(MESSAGE_IDS.size > 50, `read the message ids (${MESSAGE_IDS.size})`);

/** Horizontal overflow: the page, then every visible element that sticks out of the window. */
async function overflow(page) {
  return page.evaluate(() => {
    const vw = window.innerWidth;
    const out = [];
    const sw = document.documentElement.scrollWidth;
    if (sw > vw) out.push(`the page is ${sw} px wide in a ${vw} px window`);
    const describe = (el) => {
      let s = el.tagName.toLowerCase();
      if (el.id) s += `#${el.id}`;
      if (typeof el.className === 'string' && el.className.trim()) s += `.${el.className.trim().split(/\s+/).join('.')}`;
      const parent = el.parentElement;
      return parent && parent !== document.body ? `${describe(parent)} > ${s}` : s;
    };
    for (const el of document.body.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      if (r.left < -1 || r.right > vw + 1) {
        out.push(`${describe(el)} spans ${Math.round(r.left)}..${Math.round(r.right)} px`);
        if (out.length > 8) break;
      }
    }
    return out;
  });
}

/** Charts a reader cannot read: a label smaller than 13 CSS pixels, two labels of a row on top
 *  of each other, or a label running out of its chart. */
async function unreadableCharts(page) {
  return page.evaluate(() => {
    const out = [];
    for (const svg of document.querySelectorAll('svg.bars')) {
      const box = svg.getBoundingClientRect();
      const scale = box.width / svg.viewBox.baseVal.width;
      const texts = [...svg.querySelectorAll('text')];
      for (const t of texts) {
        const px = parseFloat(getComputedStyle(t).fontSize) * scale;
        const r = t.getBoundingClientRect();
        if (px < 13) out.push(`chart label "${t.textContent}" is ${px.toFixed(1)} px`);
        if (r.left < box.left - 1 || r.right > box.right + 1) out.push(`chart label "${t.textContent}" runs out of its chart`);
      }
      for (const a of texts) {
        for (const b of texts) {
          if (a === b || a.getAttribute('y') !== b.getAttribute('y')) continue;
          const [ra, rb] = [a.getBoundingClientRect(), b.getBoundingClientRect()];
          if (ra.right > rb.left && ra.left < rb.left) out.push(`chart labels "${a.textContent}" and "${b.textContent}" overlap`);
        }
      }
    }
    return out.slice(0, 8);
  });
}

/** Message ids shown instead of their text (in the text or in attributes people read). */
async function untranslated(page) {
  const texts = await page.evaluate(() => {
    const out = [document.title, document.body.innerText];
    for (const el of document.querySelectorAll('[alt], [title], [aria-label], [placeholder], [data-label], input[type=submit]')) {
      for (const a of ['alt', 'title', 'aria-label', 'placeholder', 'data-label', 'value']) {
        const v = el.getAttribute(a);
        if (v) out.push(v);
      }
    }
    return out;
  });
  const found = new Set();
  for (const t of texts) {
    for (const word of t.match(/[a-z][a-z0-9]*(?:-[a-z0-9]+)+/g) || []) {
      if (MESSAGE_IDS.has(word)) found.add(word);
    }
    if (/\{\s*\$/.test(t)) found.add(`unformatted argument in "${t.slice(0, 80)}"`);
  }
  return [...found];
}

async function axe(page) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ')})`);
}

/** Visits one page in every width; returns the problems found. */
async function check(ctx, page, { name, path, status = 200 }, lang) {
  const problems = [];
  const before = ctx.errors.length;
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 844 });
    const response = await page.goto(`${url}${path}`, { waitUntil: 'load' });
    if (response.status() !== status) problems.push(`status ${response.status()}, expected ${status}`);
    const lang_ = await page.getAttribute('html', 'lang');
    if (lang_ !== lang) problems.push(`<html lang="${lang_}">, expected ${lang}`);
    // Evidence blocks open, as a reader opens them: hashes must wrap inside their card, not
    // run off it or stand one character per line.
    const squeezed = await page.evaluate(() => {
      for (const d of document.querySelectorAll('details')) d.open = true;
      return [...document.querySelectorAll('details code')]
        .filter((c) => {
          const style = getComputedStyle(c);
          const lh = parseFloat(style.lineHeight);
          const line = Number.isFinite(lh) ? lh : 1.4 * parseFloat(style.fontSize);
          return c.getBoundingClientRect().height > 16 * line;
        })
        .map((c) => `a hash squeezed into ${Math.round(c.getBoundingClientRect().width)} px`);
    });
    for (const p of squeezed) problems.push(`${width} px: ${p}`);
    for (const p of await overflow(page)) problems.push(`${width} px: ${p}`);
    for (const p of await unreadableCharts(page)) problems.push(`${width} px: ${p}`);
    await page.screenshot({ path: join(shots, `${name}-${lang}-${width}.png`), fullPage: true });
    if (width === 390) {
      for (const p of await untranslated(page)) problems.push(`untranslated: ${p}`);
      for (const p of await axe(page)) problems.push(`axe: ${p}`);
    }
  }
  // The main document of an error page is itself a failed load; nothing else may fail.
  const errors = ctx.errors.splice(before).filter((e) => !(status >= 400 && e.includes(`status of ${status}`)));
  for (const e of errors) problems.push(e);
  return problems.map((p) => `${name} [${lang}] ${path}: ${p}`);
}

await run(async (browser) => {
  const problems = [];
  let visited = 0;
  for (const lang of LANGS) {
    const ctx = await newContext(browser, { locale: 'en-GB' });
    await ctx.addCookies([{ name: 'lang', value: lang, url }]);
    const page = await ctx.newPage();
    for (const p of config.public) {
      problems.push(...await check(ctx, page, p, lang));
      visited += 1;
    }
    // The review: its login page, then signed in.
    const r = config.review;
    problems.push(...await check(ctx, page, { name: 'review-login', path: '/review/login' }, lang));
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${url}/review/login`);
    await page.fill('#username', r.username);
    await page.fill('#password', r.password);
    await Promise.all([page.waitForURL(`${url}/review`), page.click('button[type=submit]')]);
    for (const p of r.pages) {
      problems.push(...await check(ctx, page, p, lang));
      visited += 1;
    }
    await ctx.close();
    // The console, signed in as its admin.
    if (config.console) {
      const c = config.console;
      const ctx2 = await newContext(browser, { locale: 'en-GB' });
      await ctx2.addCookies([{ name: 'lang', value: lang, url }]);
      const page2 = await ctx2.newPage();
      await page2.setViewportSize({ width: 390, height: 844 });
      await page2.goto(`${url}/review/login`);
      await page2.fill('#username', c.username);
      await page2.fill('#password', c.password);
      await Promise.all([page2.waitForURL(`${url}/review`), page2.click('button[type=submit]')]);
      for (const p of c.pages) {
        problems.push(...await check(ctx2, page2, p, lang));
        visited += 1;
      }
      await ctx2.close();
    }
  }
  console.log(`visited ${visited} pages (${LANGS.length} languages, widths ${WIDTHS.join(', ')} px)`);
  if (problems.length) throw new Error(`${problems.length} problems:\n${problems.join('\n')}`);
});
