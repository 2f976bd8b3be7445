/**
 * The demo's report.html in headless Chromium: an SVG plot is drawn and no request leaves
 * the file (requests are logged through Chromium's net log and blocked). Skips, saying so,
 * where no chromium binary is installed.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { checkReport, demoReport, externalReferences, findChromium } from '../bench/report-check';

const chromium = findChromium();
const t2 = chromium ? test.serial : test.skip;
if (!chromium) {
  test('report in headless Chromium', (t) => {
    t.log('no chromium binary (apt-get install chromium, or set CHROMIUM): skipping the report rendering tests');
    t.pass();
  });
}

t2('the check sees a request that leaves the file, and a reference in the HTML', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-rc-'));
  const f = path.join(dir, 'r.html');
  fs.writeFileSync(f, '<!doctype html><html><body><svg width="100" height="50"><rect width="80" height="40" fill="#1f77b4"/></svg><img src="http://example.invalid/x.png"></body></html>');
  const r = await checkReport(f, chromium!);
  t.deepEqual(r.requests, ['http://example.invalid/x.png']);
  t.deepEqual(r.externalRefs, ['http://example.invalid/x.png']);
  t.is(r.svgs, 1);
  t.true(r.plotPixels.sqnr > 1000 && r.plotPixels.efficiency === 0, JSON.stringify(r.plotPixels));
  t.deepEqual(externalReferences('<a href="#x"></a><style>b{background:url(https://x.test/a.png)}</style><img src="data:image/png;base64,AA">'), ['https://x.test/a.png']);
  fs.rmSync(dir, { recursive: true, force: true });
});

t2('the demo report renders offline: SVG plot drawn, nothing requested beyond the file', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-demo-'));
  const r = await checkReport(demoReport(dir), chromium!);
  t.log(JSON.stringify(r));
  t.deepEqual(r.requests, []);
  t.deepEqual(r.externalRefs, []);
  t.true(r.svgs >= 1);
  t.true(r.plotPixels.sqnr > 0 && r.plotPixels.efficiency > 0, JSON.stringify(r.plotPixels));
  fs.rmSync(dir, { recursive: true, force: true });
});
