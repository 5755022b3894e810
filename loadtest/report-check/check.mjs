// Opens a report of the load harness in headless Chromium and checks that
// every chart rendered with data: each <svg class="chart"> is screenshotted
// on its own, and its plot area must hold coloured pixels (the series;
// axes, grid and text are grey). Not a pixel comparison: a chart passes
// when what it draws is there, whatever the numbers.
//
//   node check.mjs REPORT.html SCREENSHOT.png [MIN_CHARTS]
//
// Also fails when the page asks the network for anything (the report must
// open offline) or logs an error. Chromium: /usr/bin/chromium or $CHROMIUM.
import { chromium } from 'playwright-core';
import path from 'node:path';

const [report, shot, minCharts = '1'] = process.argv.slice(2);
if (!report || !shot) {
  console.error('usage: node check.mjs REPORT.html SCREENSHOT.png [MIN_CHARTS]');
  process.exit(2);
}
// The plot area of every chart (report.rs: 760x300, margins 64/200/28/44).
const PLOT = { x0: 66, x1: 558, y0: 30, y1: 254 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
let failed = 0;
const fail = (msg) => { failed += 1; console.log(`FAIL  ${msg}`); };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on('request', (r) => { if (!r.url().startsWith('file:')) fail(`the report asked the network for ${r.url()}`); });
  page.on('console', (m) => { if (m.type() === 'error') fail(`console error: ${m.text()}`); });
  await page.goto('file://' + path.resolve(report));
  const charts = await page.$$('svg.chart');
  if (charts.length < Number(minCharts)) fail(`${charts.length} charts, expected at least ${minCharts}`);
  for (const [i, c] of charts.entries()) {
    const title = await c.getAttribute('aria-label');
    const points = Number(await c.getAttribute('data-points'));
    const png = (await c.screenshot()).toString('base64');
    const coloured = await page.evaluate(async ({ png, PLOT }) => {
      const img = new Image();
      img.src = `data:image/png;base64,${png}`;
      await img.decode();
      const cv = document.createElement('canvas');
      cv.width = img.width; cv.height = img.height;
      const cx = cv.getContext('2d');
      cx.drawImage(img, 0, 0);
      const d = cx.getImageData(PLOT.x0, PLOT.y0, PLOT.x1 - PLOT.x0, PLOT.y1 - PLOT.y0).data;
      let n = 0;
      for (let k = 0; k < d.length; k += 4) {
        const hi = Math.max(d[k], d[k + 1], d[k + 2]), lo = Math.min(d[k], d[k + 1], d[k + 2]);
        if (hi - lo > 60) n += 1;
      }
      return n;
    }, { png, PLOT });
    const ok = points > 0 && coloured >= 20;
    if (!ok) fail(`chart ${i + 1} "${title}": ${points} points, ${coloured} coloured pixels in its plot`);
    else console.log(`ok    chart ${i + 1} "${title}": ${points} points, ${coloured} coloured pixels in its plot`);
  }
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
} finally {
  await browser.close();
}
console.log(`report: ${failed === 0 ? 'passed' : 'FAILED'}`);
process.exit(failed === 0 ? 0 : 1);
