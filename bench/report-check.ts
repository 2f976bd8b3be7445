/**
 * Checks that a search report renders offline: loads `report.html` in headless Chromium with
 * every network request logged (Chromium's net log) and blocked (a dead proxy, no name
 * resolution), then asserts that the page asked for nothing beyond its own file and that its
 * plot rendered: an <svg> in the DOM, and the front's line colours in a screenshot.
 *
 *   npm run build:ts && node dist/bench/report-check.js [REPORT.html]
 *
 * Without a file it runs `mpq demo --out TMP` first and checks that report. Needs a chromium
 * binary (`apt-get install chromium`, or CHROMIUM=/path/to/chrome).
 */
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { loadImages } from '../src/data/images';

/** The chromium binary: $CHROMIUM, or the first of the usual names on PATH (null when none). */
export function findChromium(): string | null {
  const names = process.env.CHROMIUM ? [process.env.CHROMIUM] : ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'];
  for (const n of names) {
    const r = spawnSync(n, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return n;
  }
  return null;
}

export interface ReportCheck {
  /** URLs the page asked for beyond its own file (each was blocked). */
  requests: string[];
  /** References in the HTML text to anything but the page itself (`#...`) or `data:` URLs. */
  externalRefs: string[];
  /** `<svg>` elements in the DOM after loading. */
  svgs: number;
  /** Screenshot pixels in each of the front's two line colours. */
  plotPixels: { sqnr: number; efficiency: number };
}

/** URLs and references in `html` that point outside the page (attributes, CSS url(), @import). */
export function externalReferences(html: string): string[] {
  const refs = new Set<string>();
  const ok = (u: string) => u.startsWith('#') || u.startsWith('data:') || u === '';
  for (const m of html.matchAll(/\b(?:src|href|xlink:href|action|poster|srcset|data)\s*=\s*["']?([^"'\s>]*)/gi)) if (!ok(m[1])) refs.add(m[1]);
  for (const m of html.matchAll(/url\(\s*["']?([^"')]*)/gi)) if (!ok(m[1])) refs.add(m[1]);
  for (const m of html.matchAll(/@import\s+["']([^"']+)/gi)) refs.add(m[1]);
  return [...refs];
}

/** The URLs that the page itself requested (the browser's own background requests are left out). */
function pageRequests(netLog: string): string[] {
  const log = JSON.parse(netLog) as { constants: { logEventTypes: Record<string, number> }; events: { type: number; params?: Record<string, string> }[] };
  const start = log.constants.logEventTypes.URL_REQUEST_START_JOB;
  const urls = new Set<string>();
  for (const e of log.events) {
    const p = e.params;
    if (e.type !== start || !p?.url) continue;
    // requests of the page's frame carry its site (file://) in their isolation key
    if (!`${p.network_isolation_key ?? ''} ${p.site_for_cookies ?? ''}`.includes('file://')) continue;
    if (!p.url.startsWith('file:') && !p.url.startsWith('data:')) urls.add(p.url);
  }
  return [...urls];
}

/** Loads `file` in headless Chromium with requests logged and blocked; see {@link ReportCheck}. */
export async function checkReport(file: string, chromium: string): Promise<ReportCheck> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-report-check-'));
  try {
    const netLog = path.join(tmp, 'net.json'), shot = path.join(tmp, 'shot.png');
    const flags = [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--user-data-dir=${path.join(tmp, 'profile')}`,
      // nothing can leave: a proxy that does not listen, and no name resolves
      '--proxy-server=http://127.0.0.1:9', '--host-resolver-rules=MAP * ~NOTFOUND',
      `--log-net-log=${netLog}`, '--window-size=1200,2400',
    ];
    const url = pathToFileURL(path.resolve(file)).href;
    const dom = execFileSync(chromium, [...flags, '--dump-dom', url], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 120_000 });
    const requests = pageRequests(fs.readFileSync(netLog, 'utf8'));
    execFileSync(chromium, [...flags, `--screenshot=${shot}`, url], { stdio: 'ignore', timeout: 120_000 });
    for (const u of pageRequests(fs.readFileSync(netLog, 'utf8'))) if (!requests.includes(u)) requests.push(u);
    const img = await loadImages([shot], { layout: 'nhwc' });
    const near = (r: number, g: number, b: number) => {
      let n = 0;
      const d = img.data;
      for (let i = 0; i + 2 < d.length; i += 3) if (Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 30) n++;
      return n;
    };
    return {
      requests,
      externalRefs: externalReferences(fs.readFileSync(file, 'utf8')),
      svgs: (dom.match(/<svg[\s>]/g) ?? []).length,
      // the front's colours in html.ts: SQNR order #1f77b4, efficiency order #ff7f0e
      plotPixels: { sqnr: near(0x1f, 0x77, 0xb4), efficiency: near(0xff, 0x7f, 0x0e) },
    };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Runs `mpq demo --out DIR` (the CLI as built in dist/) and returns its report's path. */
export function demoReport(dir: string): string {
  const cli = path.resolve(__dirname, '..', '..', 'bin', 'mpq.js');
  const r = spawnSync(process.execPath, [cli, 'demo', '--out', dir, '--quiet'], { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`mpq demo failed (${r.status}): ${r.stderr}`);
  return path.join(dir, 'report.html');
}

async function main(): Promise<void> {
  const chromium = findChromium();
  if (!chromium) {
    console.error('report-check: no chromium binary found (apt-get install chromium, or set CHROMIUM)');
    process.exit(2);
  }
  let file = process.argv[2];
  let dir: string | undefined;
  if (!file) {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-demo-'));
    console.log(`running mpq demo --out ${dir}`);
    file = demoReport(dir);
  }
  const r = await checkReport(file, chromium);
  console.log(JSON.stringify({ file, chromium: execFileSync(chromium, ['--version'], { encoding: 'utf8' }).trim(), ...r }, null, 2));
  const ok = r.requests.length === 0 && r.externalRefs.length === 0 && r.svgs > 0 && r.plotPixels.sqnr > 0 && r.plotPixels.efficiency > 0;
  console.log(ok ? 'report-check: OK (renders offline, SVG plot drawn, no request left the file)' : 'report-check: FAILED');
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  process.exit(ok ? 0 : 1);
}

if (require.main === module) void main();
