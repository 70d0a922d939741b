import { chromium } from 'playwright-core';
import { writeFileSync } from 'node:fs';
const [file, out, w, h, ...ys] = process.argv.slice(2);
writeFileSync('/tmp/ur/crop.html', `<html><body style="margin:0"><img src="file://${file}" style="display:block"></body></html>`);
const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--allow-file-access-from-files'] });
const p = await b.newPage({ viewport: { width: +w, height: +h } });
await p.goto('file:///tmp/ur/crop.html');
await p.waitForLoadState('load');
for (const [i, y] of ys.entries()) {
  await p.screenshot({ path: `${out}-${i}.png`, clip: { x: 0, y: +y, width: +w, height: +h }, fullPage: true });
}
await b.close();
